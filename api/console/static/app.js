// The console's entry point: login, the hash router, the connection indicator.

import { api, isAdmin, login, logout, me, session, setLoggedOutHandler } from "./api.js";
import { agentsPage } from "./agents.js";
import { clear, field, flash, h } from "./dom.js";
import { live } from "./live.js";
import { plannerPage } from "./planner.js";
import { queuesPage } from "./queues.js";
import { submitPage, taskPage, tasksPage } from "./tasks.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const conn = document.getElementById("conn");
let teardown = () => {};

live.onState((state) => {
  conn.textContent = state === "live" ? "live" : state;
  conn.className = `badge conn-${state}`;
});

function loginPage() {
  const message = h("div");
  const email = h("input", { name: "email", type: "email", required: true, autocomplete: "username", maxlength: 254 });
  const password = h("input", { name: "password", type: "password", required: true, autocomplete: "current-password", maxlength: 128 });
  const form = h("form", { className: "stack login", "aria-label": "Log in" },
    h("h1", { text: "Log in to taskyard" }), message, field("Email", email), field("Password", password),
    h("button", { type: "submit", text: "Log in" }),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await login(email.value.trim(), password.value);
      password.value = "";
      start();
      if (!location.hash || location.hash === "#/login") location.hash = "#/tasks";
      else route();
    } catch (err) {
      flash(message, err.status === 401 ? "Wrong email or password." : err.message);
    }
  });
  clear(main).append(form);
  email.focus();
}

function renderChrome() {
  clear(nav);
  const links = [["#/tasks", "Tasks"], ["#/agents", "Agents"], ["#/planner", "Planner"]];
  if (isAdmin()) links.splice(2, 0, ["#/queues", "Queues"]);
  for (const [href, text] of links) nav.append(h("a", { href, text }));
  const user = me();
  clear(who);
  if (user) {
    who.append(h("span", { text: `${user.email}${isAdmin() ? " (admin)" : ""} ` }),
      h("button", { type: "button", onclick: async () => { await logout(); stop(); }, text: "Log out" }));
  }
}

function start() {
  renderChrome();
  live.start();
}

function stop() {
  teardown();
  teardown = () => {};
  live.stop();
  renderChrome();
  loginPage();
}

function route() {
  teardown();
  teardown = () => {};
  if (!session.load()) {
    loginPage();
    return;
  }
  const [path, query] = (location.hash.slice(1) || "/tasks").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === `#/${parts[0]}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  clear(main);
  const pages = {
    tasks: () => tasksPage(main, params),
    task: () => taskPage(main, decodeURIComponent(parts[1] || "")),
    submit: () => submitPage(main, params),
    agents: () => agentsPage(main),
    queues: () => queuesPage(main),
    planner: () => plannerPage(main, parts.slice(1), params),
  };
  teardown = (pages[parts[0]] || pages.tasks)() || (() => {});
  main.focus({ preventScroll: true });
}

setLoggedOutHandler(() => stop());
window.addEventListener("hashchange", route);
if (session.load()) {
  // A reload keeps the tab's session; check it is still good before going live.
  api("GET", "/api/auth/me")
    .then((user) => {
      session.save({ ...session.load(), me: user });
      start();
      route();
    })
    .catch(() => stop());
} else {
  renderChrome();
  route();
}
