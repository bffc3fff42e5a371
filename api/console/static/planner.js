// The planner (/api/planner): paste text to get a plan, talk in a task's or the global session with the
// reply streaming in over /ws (subscribe to the session before posting), edit the LLM settings.

import { api, ApiError } from "./api.js";
import { append, clear, field, flash, h, when } from "./dom.js";
import { live } from "./live.js";

function errorText(err) {
  if (err instanceof ApiError && err.status === 504) return "The agent is still working; the answer will be stored when it ends. Reload later.";
  return err.message || String(err);
}

export function plannerPage(root, parts) {
  if (parts[0] === "task" && parts[1]) return taskView(root, parts[1]);
  if (parts[0] === "global") return sessionView(root, null);
  if (parts[0] === "settings") return settingsView(root);
  return overview(root);
}

function subnav() {
  return h("nav", { className: "actions", "aria-label": "Planner" },
    h("a", { href: "#/planner", text: "Plans" }), h("a", { href: "#/planner/global", text: "Global session" }),
    h("a", { href: "#/planner/settings", text: "LLM settings" }));
}

function stepsList(steps) {
  return h("ol", { className: "steps" }, steps.map((s) =>
    h("li", {}, h("strong", { text: s.title }), " ", h("span", { className: `badge status-${s.status}`, text: s.status }),
      s.estimateMinutes ? h("span", { className: "muted", text: ` ~${s.estimateMinutes} min` }) : null,
      s.detail ? h("div", { className: "muted", text: s.detail }) : null)));
}

function overview(root) {
  const message = h("div");
  const list = h("tbody");
  const raw = h("textarea", { name: "rawText", rows: 6, minlength: 4, maxlength: 20000, required: true, placeholder: "Write the paper: read the literature, then outline, then draft" });
  const button = h("button", { type: "submit", text: "Make a plan" });
  const form = h("form", { className: "stack", "aria-label": "Plan from text" }, field("Text to plan", raw), button);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    button.disabled = true;
    flash(message, "The agent is writing the plan...", "ok");
    try {
      const out = await api("POST", "/api/planner/tasks/from-text", { rawText: raw.value });
      location.hash = `#/planner/task/${out.task.id}`;
    } catch (err) {
      flash(message, errorText(err));
    } finally {
      button.disabled = false;
    }
  });
  async function load() {
    try {
      const data = await api("GET", "/api/planner/tasks?limit=50");
      clear(list);
      for (const t of data.tasks) {
        list.append(h("tr", {}, h("td", {}, h("a", { href: `#/planner/task/${t.id}`, text: t.title })),
          h("td", { text: t.status }), h("td", { text: t.priority }), h("td", { text: when(t.dueAt) || "-" })));
      }
      if (!data.tasks.length) list.append(h("tr", {}, h("td", { colspan: 4, text: "No plans yet." })));
    } catch (err) {
      flash(message, errorText(err));
    }
  }
  append(root, [h("h1", { text: "Planner" }), subnav(), message, form,
    h("h2", { text: "Your plans" }),
    h("table", { className: "grid", "aria-label": "Plans" },
      h("thead", {}, h("tr", {}, ["Title", "Status", "Priority", "Due"].map((t) => h("th", { scope: "col", text: t })))), list)]);
  load();
  return () => {};
}

function taskView(root, id) {
  const message = h("div");
  const head = h("div");
  const steps = h("div");
  const chat = h("div");
  let teardown = () => {};
  async function load() {
    const out = await api("GET", `/api/planner/tasks/${encodeURIComponent(id)}`);
    clear(head).append(h("h1", { text: out.task.title }), h("p", { className: "muted", text: `${out.task.status}, ${out.task.priority} priority${out.task.dueAt ? `, due ${when(out.task.dueAt)}` : ""}` }));
    if (out.task.description) head.append(h("p", { text: out.task.description }));
    clear(steps).append(h("h2", { text: "Steps" }), stepsList(out.task.steps || []));
    return out.session;
  }
  load()
    .then((session) => { teardown = chatBox(chat, session.id, () => load().catch(() => {})); })
    .catch((err) => flash(message, err instanceof ApiError && err.status === 404 ? "No such plan." : errorText(err)));
  append(root, [subnav(), message, head, h("div", { className: "columns" }, steps, chat)]);
  return () => teardown();
}

function sessionView(root) {
  const message = h("div");
  const chat = h("div");
  let teardown = () => {};
  api("GET", "/api/planner/sessions/global")
    .then((out) => { teardown = chatBox(chat, out.session.id, () => {}); })
    .catch((err) => flash(message, errorText(err)));
  append(root, [h("h1", { text: "Global session" }), subnav(), message, chat]);
  return () => teardown();
}

// A session's messages and a box to post one; the reply's tokens appear as `task/stream` frames arrive.
function chatBox(root, sessionId, onChanged) {
  const message = h("div");
  const log = h("div", { className: "chat", "aria-live": "polite", "aria-label": "Conversation" });
  const input = h("textarea", { name: "content", rows: 3, maxlength: 8000, required: true });
  const button = h("button", { type: "submit", text: "Send" });
  const form = h("form", { className: "stack", "aria-label": "Talk to the agent" }, field("Message", input), button);
  const pending = new Map(); // reply task id -> its bubble
  let waiting = false;

  function bubble(role, who, text) {
    const label = h("span", { className: "role", text: who });
    const body = h("span", { className: "text", text });
    log.append(h("div", { className: `msg ${role}` }, label, body));
    log.scrollTop = log.scrollHeight;
    return { label, body };
  }

  const off = live.on((frame) => {
    const p = frame.payload || {};
    if (!waiting || !p.taskId) return;
    if (!pending.has(p.taskId)) pending.set(p.taskId, { ...bubble("assistant", "agent", ""), seq: 0 });
    const reply = pending.get(p.taskId);
    if (typeof p.seq === "number") {
      if (p.seq <= reply.seq) return; // the same event through an `all` subscription too
      reply.seq = p.seq;
    }
    if (frame.type === "task/stream") {
      reply.label.textContent = "agent (writing...)";
      reply.body.textContent += p.delta;
      log.scrollTop = log.scrollHeight;
    } else if (frame.type === "task/status") {
      reply.label.textContent = `agent (${p.status})`;
    }
  });
  live.subscribeSession(sessionId);

  async function load() {
    const data = await api("GET", `/api/planner/sessions/${sessionId}/messages?limit=100`);
    clear(log);
    for (const m of data.messages) bubble(m.role, m.role === "user" ? "you" : m.agentName || m.role, m.content);
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const content = input.value.trim();
    if (!content) return;
    button.disabled = true;
    waiting = true;
    bubble("user", "you", content);
    input.value = "";
    try {
      const out = await api("POST", `/api/planner/sessions/${sessionId}/messages`, { content });
      const rejected = out.rejectedPatches || [];
      flash(message, rejected.length ? `${rejected.length} change(s) could not be applied: ${rejected.map((r) => r.reason).join(", ")}` : "", "error");
      await load();
      onChanged();
    } catch (err) {
      flash(message, errorText(err));
    } finally {
      waiting = false;
      pending.clear();
      button.disabled = false;
    }
  });
  load().catch((err) => flash(message, errorText(err)));
  append(root, [h("h2", { text: "Conversation" }), message, log, form]);
  return () => { off(); live.unsubscribeSession(sessionId); };
}

function settingsView(root) {
  const message = h("div");
  const state = h("p", { className: "muted" });
  const baseUrl = h("input", { name: "baseUrl", type: "url", maxlength: 2048, placeholder: "https://api.example.com/v1" });
  const model = h("input", { name: "model", maxlength: 200 });
  // Write-only: the API never returns the key, so the field starts empty and is sent only when filled.
  const apiKey = h("input", { name: "apiKey", type: "password", autocomplete: "off", maxlength: 4096 });
  const form = h("form", { className: "stack", "aria-label": "LLM settings" },
    field("Base URL", baseUrl), field("Model", model), field("API key (write-only; leave empty to keep the stored one)", apiKey),
    h("div", { className: "actions" }, h("button", { type: "submit", text: "Save" }),
      h("button", { type: "button", className: "danger", onclick: remove, text: "Delete settings" })));
  function show(s) {
    baseUrl.value = (s && s.baseUrl) || "";
    model.value = (s && s.model) || "";
    apiKey.value = "";
    state.textContent = !s ? "No settings: the server's default provider is used." : s.hasApiKey ? "An API key is stored." : "No API key stored.";
  }
  async function remove() {
    try {
      await api("DELETE", "/api/planner/llm-settings/me");
      show(null);
      flash(message, "Deleted.", "ok");
    } catch (err) {
      flash(message, errorText(err));
    }
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {};
    if (baseUrl.value.trim()) body.baseUrl = baseUrl.value.trim();
    if (model.value.trim()) body.model = model.value.trim();
    if (apiKey.value) body.apiKey = apiKey.value;
    try {
      show((await api("PUT", "/api/planner/llm-settings/me", body)).llmSettings);
      flash(message, "Saved.", "ok");
    } catch (err) {
      flash(message, errorText(err));
    }
  });
  api("GET", "/api/planner/llm-settings/me").then((out) => show(out.llmSettings)).catch((err) => flash(message, errorText(err)));
  append(root, [h("h1", { text: "LLM settings" }), subnav(), message, state, form]);
  return () => {};
}
