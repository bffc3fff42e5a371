// Tasks: the live table and a task's page (timeline, input, result, streamed output, actions).

import { api, ApiError } from "./api.js";
import { append, clear, field, flash, h, json, statusBadge, when } from "./dom.js";
import { live } from "./live.js";

const STATUSES = ["", "scheduled", "queued", "assigned", "running", "done", "failed", "canceled"];
const TERMINAL = new Set(["done", "failed", "canceled"]);
const PAGE_SIZE = 20;
let retryTemplate = null; // the task "Retry as a new task" was pressed on

function errorText(err) {
  if (err instanceof ApiError) {
    const where = err.body.details && err.body.details.field ? ` (${err.body.details.field})` : "";
    return `${err.message}${where}`;
  }
  return String(err.message || err);
}

export function tasksPage(root, params) {
  const state = {
    status: params.get("status") || "",
    type: params.get("type") || "",
    agentId: params.get("agentId") || "",
    page: Number(params.get("page") || "1") || 1,
  };
  const rows = new Map();
  const message = h("div");
  const tbody = h("tbody");
  const pager = h("p", { className: "pager" });
  const statusSelect = h("select", { name: "status" }, STATUSES.map((s) => h("option", { value: s, text: s || "any" })));
  statusSelect.value = state.status;
  const typeInput = h("input", { name: "type", value: state.type, maxlength: 128, placeholder: "e.g. llm.chat" });
  const agentInput = h("input", { name: "agentId", value: state.agentId, maxlength: 64 });
  const filters = h(
    "form",
    { className: "filters", "aria-label": "Filter tasks", onsubmit: (e) => { e.preventDefault(); go(1); } },
    field("Status", statusSelect),
    field("Type", typeInput),
    field("Agent", agentInput),
    h("button", { type: "submit", text: "Filter" }),
  );
  statusSelect.addEventListener("change", () => go(1));

  function go(page) {
    const q = new URLSearchParams();
    if (statusSelect.value) q.set("status", statusSelect.value);
    if (typeInput.value.trim()) q.set("type", typeInput.value.trim());
    if (agentInput.value.trim()) q.set("agentId", agentInput.value.trim());
    if (page > 1) q.set("page", String(page));
    location.hash = `#/tasks${q.toString() ? "?" + q : ""}`;
  }

  function row(task) {
    const tr = h(
      "tr",
      { "data-task-id": task.id },
      h("td", {}, h("a", { href: `#/task/${encodeURIComponent(task.id)}`, text: task.id })),
      h("td", { text: task.type }),
      h("td", { className: "status-cell" }, statusBadge(task.status)),
      h("td", { text: task.priority }),
      h("td", { className: "agent-cell", text: task.agentId || "" }),
      h("td", { className: "attempt-cell", text: task.attempt }),
      h("td", { text: when(task.createdAt) }),
    );
    rows.set(task.id, tr);
    return tr;
  }

  let reloadTimer = null;
  async function load() {
    const q = new URLSearchParams({ page: String(state.page), pageSize: String(PAGE_SIZE) });
    if (state.status) q.set("status", state.status);
    if (state.type) q.set("type", state.type);
    if (state.agentId) q.set("agentId", state.agentId);
    try {
      const data = await api("GET", `/api/tasks?${q}`);
      rows.clear();
      clear(tbody);
      if (!data.items.length) tbody.append(h("tr", {}, h("td", { colspan: 7, text: "No tasks." })));
      for (const task of data.items) tbody.append(row(task));
      const last = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      clear(pager);
      append(pager, [
        h("button", { type: "button", disabled: state.page <= 1, onclick: () => go(state.page - 1), text: "Previous" }),
        h("span", { text: ` Page ${state.page} of ${last} (${data.total} tasks) ` }),
        h("button", { type: "button", disabled: state.page >= last, onclick: () => go(state.page + 1), text: "Next" }),
      ]);
      flash(message, "");
    } catch (err) {
      flash(message, errorText(err));
    }
  }

  // A status change of a row we show is applied in place; anything else (a new task, a task leaving the
  // filter) reloads the page once, debounced, so a burst of events costs one request.
  const off = live.on((frame) => {
    if (frame.type !== "task/status") return;
    const p = frame.payload;
    const tr = rows.get(p.taskId);
    const fits = !state.status || state.status === p.status;
    if (tr && fits) {
      clear(tr.querySelector(".status-cell")).append(statusBadge(p.status));
      tr.querySelector(".attempt-cell").textContent = p.attempt;
      if (p.agentId) tr.querySelector(".agent-cell").textContent = p.agentId;
      return;
    }
    if (tr || (state.page === 1 && fits)) {
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(load, 300);
    }
  });
  live.subscribeAll();

  append(root, [
    h("div", { className: "heading" }, h("h1", { text: "Tasks" }), h("a", { className: "button", href: "#/submit", text: "Submit a task" })),
    filters,
    message,
    h(
      "table",
      { className: "grid", "aria-label": "Tasks" },
      h("thead", {}, h("tr", {}, ["Id", "Type", "Status", "Priority", "Agent", "Attempt", "Created"].map((t) => h("th", { scope: "col", text: t })))),
      tbody,
    ),
    pager,
  ]);
  load();
  return () => {
    off();
    clearTimeout(reloadTimer);
  };
}

export function submitPage(root, params) {
  const message = h("div");
  const from = params.get("retry") ? retryTemplate : null;
  const type = h("input", { name: "type", required: true, maxlength: 128, value: (from && from.type) || "echo" });
  const input = h("textarea", { name: "input", rows: 8, maxlength: 262144 });
  input.value = from ? json(from.input) : '{"text": "hello"}';
  const priority = h("input", { name: "priority", type: "number", min: 0, max: 9, value: from ? from.priority : 5 });
  const caps = h("input", { name: "capabilities", maxlength: 2000, value: from ? from.capabilities.join(", ") : "", placeholder: "llm, gpu" });
  const timeout = h("input", { name: "timeoutSeconds", type: "number", min: 1, max: 604800, value: from ? from.timeoutSeconds : 900 });
  const form = h(
    "form",
    { className: "stack", "aria-label": "Submit a task" },
    field("Type", type),
    field("Input (JSON)", input),
    field("Priority (0-9, higher first)", priority),
    field("Capabilities (comma separated)", caps),
    field("Timeout (seconds)", timeout),
    h("button", { type: "submit", text: "Submit" }),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let value;
    try {
      value = input.value.trim() ? JSON.parse(input.value) : {};
    } catch (err) {
      flash(message, `Input is not valid JSON: ${err.message}`);
      return;
    }
    const body = {
      type: type.value.trim(),
      input: value,
      priority: Number(priority.value),
      capabilities: caps.value.split(",").map((c) => c.trim()).filter(Boolean),
      timeoutSeconds: Number(timeout.value),
    };
    try {
      const task = await api("POST", "/api/tasks", body);
      location.hash = `#/task/${encodeURIComponent(task.id)}`;
    } catch (err) {
      flash(message, errorText(err));
    }
  });
  append(root, [h("h1", { text: from ? "Retry a task" : "Submit a task" }), message, form]);
  return () => {};
}

export function taskPage(root, taskId) {
  const message = h("div");
  const header = h("div", { className: "heading" });
  const facts = h("dl", { className: "facts" });
  const progress = h("div", { className: "progress", "aria-live": "polite" });
  const output = h("pre", { className: "stream", "aria-live": "polite", "aria-label": "Streamed output" });
  const timeline = h("ol", { className: "timeline" });
  const inputPre = h("pre", { className: "json" });
  const resultPre = h("pre", { className: "json result" });
  const actions = h("div", { className: "actions" });
  let task = null;
  const streams = new Map(); // attempt -> text so far (an attempt's pieces are appended at their offset)
  let shownAttempt = 0;
  let refetch = null;
  let subscribed = false;

  function renderHeader() {
    clear(header).append(h("h1", {}, "Task ", h("code", { text: task.id })), statusBadge(task.status));
    header.dataset.status = task.status;
    clear(facts);
    const rowsOf = [
      ["Type", task.type],
      ["Priority", task.priority],
      ["Attempt", `${task.attempt} of ${task.maxAttempts}`],
      ["Agent", task.agentId || "-"],
      ["Capabilities", task.capabilities.join(", ") || "-"],
      ["Created", when(task.createdAt)],
      ["Finished", when(task.finishedAt) || "-"],
    ];
    for (const [k, v] of rowsOf) append(facts, [h("dt", { text: k }), h("dd", { text: v })]);
    if (task.error) append(facts, [h("dt", { text: "Error" }), h("dd", { className: "error-text", text: `${task.error.error}: ${task.error.message}` })]);
    clear(actions);
    if (!TERMINAL.has(task.status)) actions.append(h("button", { type: "button", className: "danger", onclick: cancel, text: "Cancel" }));
    const template = { type: task.type, input: task.input, priority: task.priority, capabilities: task.capabilities, timeoutSeconds: task.timeoutSeconds };
    const retry = () => {
      retryTemplate = template; // kept in memory, not in the URL: inputs may be large or private
      location.hash = "#/submit?retry=1";
    };
    actions.append(h("button", { type: "button", onclick: retry, text: "Retry as a new task" }));
    inputPre.textContent = json(task.input);
    resultPre.textContent = task.result === undefined ? "(no result yet)" : json(task.result);
  }

  function addEvent(e) {
    const detail =
      e.type === "task/status"
        ? [statusBadge(e.status), e.agentId ? ` on ${e.agentId}` : "", e.reason ? ` (${e.reason})` : ""]
        : e.type === "task/progress"
          ? ["progress ", e.message || "", e.data !== undefined ? ` ${JSON.stringify(e.data)}` : ""]
          : null;
    if (detail) {
      timeline.append(h("li", { "data-seq": e.seq }, h("span", { className: "when", text: `#${e.seq} ${when(e.at)} ` }), `attempt ${e.attempt}: `, detail));
    }
    if (e.type === "task/progress") showProgress(e);
    if (e.type === "task/stream") addPiece(e.attempt, e.offset, e.delta);
  }

  function showProgress(e) {
    clear(progress);
    const d = e.data || {};
    const done = d.done ?? d.elapsedS ?? d.current;
    const total = d.total ?? d.totalS;
    if (typeof done === "number" && typeof total === "number" && total > 0) {
      progress.append(h("progress", { max: total, value: Math.min(done, total), "aria-label": "Progress" }), ` ${Math.round((100 * Math.min(done, total)) / total)} %`);
    }
    if (e.message) progress.append(h("span", { text: ` ${e.message}` }));
  }

  function addPiece(attempt, offset, delta) {
    const text = streams.get(attempt) || "";
    const bytes = new TextEncoder().encode(text);
    // Offsets count UTF-8 bytes: keep what comes before the offset, then append the piece.
    const kept = offset >= bytes.length ? text : new TextDecoder().decode(bytes.slice(0, offset));
    streams.set(attempt, kept + delta);
    if (attempt >= shownAttempt) {
      shownAttempt = attempt;
      output.textContent = streams.get(attempt);
      output.scrollTop = output.scrollHeight;
    }
  }

  async function cancel() {
    try {
      task = await api("POST", `/api/tasks/${encodeURIComponent(taskId)}/cancel`);
      renderHeader();
    } catch (err) {
      flash(message, errorText(err));
    }
  }

  async function reload() {
    task = await api("GET", `/api/tasks/${encodeURIComponent(taskId)}`);
    renderHeader();
  }

  const off = live.on((frame) => {
    const p = frame.payload || {};
    // Until the task is loaded and subscribed with lastSeq, its events come again in the replay.
    if (p.taskId !== taskId || !subscribed) return;
    if (frame.type === "task/status") {
      addEvent({ ...p, type: "task/status" });
      task.status = p.status;
      task.attempt = p.attempt;
      if (p.agentId) task.agentId = p.agentId;
      renderHeader();
      // The result and error live in the row, not the event: fetch them once the task has ended.
      if (TERMINAL.has(p.status)) {
        clearTimeout(refetch);
        refetch = setTimeout(() => reload().catch(() => {}), 200);
      }
    } else if (frame.type === "task/progress") {
      addEvent({ type: "task/progress", seq: p.seq, attempt: p.attempt, at: new Date().toISOString(), data: p.data, message: p.message });
    } else if (frame.type === "task/stream") {
      addPiece(p.attempt, p.offset, p.delta);
    }
  });

  (async () => {
    try {
      await reload();
      let lastSeq = 0;
      for (const e of task.events || []) {
        const flat = { ...e, ...(e.type === "task/status" ? { reason: e.data && e.data.reason } : e.data || {}) };
        addEvent(flat);
        lastSeq = Math.max(lastSeq, e.seq);
      }
      subscribed = true;
      live.subscribeTask(taskId, lastSeq);
    } catch (err) {
      flash(message, err instanceof ApiError && err.status === 404 ? "No such task." : errorText(err));
    }
  })();

  append(root, [
    h("p", {}, h("a", { href: "#/tasks", text: "All tasks" })),
    header,
    message,
    actions,
    h("div", { className: "columns" },
      h("section", { "aria-labelledby": "facts-h" }, h("h2", { id: "facts-h", text: "Details" }), facts, progress),
      h("section", { "aria-labelledby": "out-h" }, h("h2", { id: "out-h", text: "Output" }), output),
    ),
    h("div", { className: "columns" },
      h("section", { "aria-labelledby": "in-h" }, h("h2", { id: "in-h", text: "Input" }), inputPre),
      h("section", { "aria-labelledby": "res-h" }, h("h2", { id: "res-h", text: "Result" }), resultPre),
    ),
    h("section", { "aria-labelledby": "tl-h" }, h("h2", { id: "tl-h", text: "Timeline" }), timeline),
  ]);
  return () => {
    off();
    clearTimeout(refetch);
    live.unsubscribeTask(taskId);
  };
}
