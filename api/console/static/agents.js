// Agents: online state, load against concurrency, capabilities, live from `agent/status` frames; admins
// create (token shown once), rotate a token, delete.

import { api, ApiError, isAdmin } from "./api.js";
import { append, clear, field, flash, h, when } from "./dom.js";
import { live } from "./live.js";

function errorText(err) {
  return err instanceof ApiError ? err.message : String(err.message || err);
}

export function agentsPage(root) {
  const message = h("div");
  const secret = h("div", { "aria-live": "polite" });
  const tbody = h("tbody");
  const agents = new Map(); // id -> {agent, tr}
  let reloadTimer = null;

  function onlineCell(a) {
    return h("span", { className: `badge ${a.online ? "online" : "offline"}`, text: a.online ? "online" : "offline" });
  }

  function loadCell(a) {
    return h("span", {}, h("meter", { min: 0, max: a.concurrency, value: a.running, "aria-label": `load of ${a.name}` }), ` ${a.running} / ${a.concurrency}`);
  }

  function render(entry) {
    const a = entry.agent;
    const cells = [
      h("td", {}, h("strong", { text: a.name }), h("br"), h("code", { className: "muted", text: a.id })),
      h("td", { className: "online-cell" }, onlineCell(a)),
      h("td", { className: "load-cell" }, loadCell(a)),
      h("td", { text: a.capabilities.join(", ") || "-" }),
      h("td", { text: a.isPublic ? "public" : "private" }),
      h("td", { className: "seen-cell", text: a.online && a.lastHeartbeatAt ? when(a.lastHeartbeatAt) : "-" }),
    ];
    if (isAdmin()) {
      cells.push(
        h("td", {},
          h("button", { type: "button", onclick: () => rotate(a), text: "Rotate token", "aria-label": `Rotate token of ${a.name}` }),
          " ",
          h("button", { type: "button", className: "danger", onclick: () => remove(a), text: "Delete", "aria-label": `Delete ${a.name}` }),
        ),
      );
    }
    const tr = h("tr", { "data-agent-id": a.id, "data-online": String(a.online) }, cells);
    if (entry.tr) entry.tr.replaceWith(tr);
    entry.tr = tr;
    return tr;
  }

  function showToken(agent, verb) {
    clear(secret).append(
      h("div", { className: "flash notice", role: "status" },
        h("p", { text: `Agent ${agent.name} ${verb}. Its token is shown this once; store it now:` }),
        h("p", {}, h("code", { className: "token", text: agent.token })),
        h("p", {}, h("code", { text: `TASKYARD_WORKER_AGENT_ID=${agent.id}` })),
        h("button", { type: "button", onclick: () => clear(secret), text: "I stored it" }),
      ),
    );
  }

  async function rotate(a) {
    if (!confirm(`Rotate the token of ${a.name}? Its connected worker is disconnected.`)) return;
    try {
      showToken(await api("POST", `/api/agents/${encodeURIComponent(a.id)}/rotate-token`), "has a new token");
    } catch (err) {
      flash(message, errorText(err));
    }
  }

  async function remove(a) {
    if (!confirm(`Delete ${a.name}? Tasks pinned to it are canceled.`)) return;
    try {
      await api("DELETE", `/api/agents/${encodeURIComponent(a.id)}`);
      const entry = agents.get(a.id);
      if (entry) entry.tr.remove();
      agents.delete(a.id);
    } catch (err) {
      flash(message, errorText(err));
    }
  }

  async function load() {
    try {
      const data = await api("GET", "/api/agents?pageSize=200");
      clear(tbody);
      for (const a of data.items) {
        const entry = { agent: a, tr: null };
        agents.set(a.id, entry);
        tbody.append(render(entry));
      }
      if (!data.items.length) tbody.append(h("tr", {}, h("td", { colspan: 7, text: "No agents." })));
    } catch (err) {
      flash(message, errorText(err));
    }
  }

  const off = live.on((frame) => {
    if (frame.type !== "agent/status") return;
    const p = frame.payload;
    const entry = agents.get(p.agentId);
    if (!entry) {
      // An agent this page does not list yet (created elsewhere): one reload for a burst of them.
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(load, 300);
      return;
    }
    // A status frame is news from the agent's presence: it was alive (or was last alive) just now.
    Object.assign(entry.agent, { online: p.online, running: p.running, concurrency: p.concurrency });
    if (p.online) entry.agent.lastHeartbeatAt = new Date().toISOString();
    render(entry);
  });
  live.subscribeAll();

  const parts = [h("h1", { text: "Agents" }), message, secret];
  if (isAdmin()) parts.push(createForm(load, showToken, message));
  parts.push(
    h("table", { className: "grid", "aria-label": "Agents" },
      h("thead", {}, h("tr", {}, ["Agent", "State", "Load", "Capabilities", "Visibility", "Last heartbeat", ...(isAdmin() ? ["Actions"] : [])].map((t) => h("th", { scope: "col", text: t })))),
      tbody,
    ),
    h("p", { className: "muted", text: "State and load follow the agents' presence live. The last heartbeat is as of the page load or the agent's last change of state or load." }),
  );
  append(root, parts);
  load();
  return () => {
    off();
    clearTimeout(reloadTimer);
  };
}

function createForm(reload, showToken, message) {
  const name = h("input", { name: "name", required: true, maxlength: 200 });
  const caps = h("input", { name: "capabilities", maxlength: 2000, placeholder: "llm, gpu" });
  const concurrency = h("input", { name: "concurrency", type: "number", min: 1, max: 10000, value: 4 });
  const isPublic = h("input", { name: "isPublic", type: "checkbox", checked: true });
  const form = h("form", { className: "inline-form", "aria-label": "Create an agent" },
    field("Name", name), field("Capabilities", caps), field("Concurrency", concurrency), field("Public", isPublic),
    h("button", { type: "submit", text: "Create agent" }),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const created = await api("POST", "/api/agents", {
        name: name.value.trim(),
        capabilities: caps.value.split(",").map((c) => c.trim()).filter(Boolean),
        concurrency: Number(concurrency.value),
        isPublic: isPublic.checked,
      });
      form.reset();
      showToken(created, "was created");
      reload();
    } catch (err) {
      flash(message, errorText(err));
    }
  });
  return h("details", {}, h("summary", { text: "Create an agent" }), form);
}
