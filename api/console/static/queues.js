// Queues (admins): depth per priority and route, the oldest waiting task, throughput per minute. The
// numbers come from GET /api/admin/queues; a task status event on /ws (no polling) triggers a reload, at
// most one per second.

import { api, ApiError } from "./api.js";
import { append, clear, flash, h } from "./dom.js";
import { live } from "./live.js";

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function queuesPage(root) {
  const message = h("div");
  const summary = h("p", { className: "summary", "aria-live": "polite" });
  const prioBody = h("tbody");
  const routeBody = h("tbody");
  const tputBody = h("tbody");

  async function load() {
    try {
      const q = await api("GET", "/api/admin/queues?minutes=15");
      summary.textContent = `${q.depth} queued, ${q.scheduled} scheduled (waiting for a run time or a retry). As of ${new Date(q.at).toLocaleTimeString()}.`;
      clear(prioBody).append(
        h("tr", {}, Object.keys(q.byPriority).sort((a, b) => b - a).map((p) => h("td", { "data-priority": p, text: q.byPriority[p] }))),
      );
      clear(routeBody);
      for (const r of q.routes) {
        const target = r.pinnedAgentId ? `agent ${r.pinnedAgentId}` : r.capabilities.length ? r.capabilities.join(", ") : "(any agent)";
        const prios = Object.entries(r.byPriority).sort((a, b) => b[0] - a[0]).map(([p, n]) => `p${p}: ${n}`).join("  ");
        const ageCell = h("td", { className: "age", text: age(r.oldestAgeS) });
        if (r.oldestAgeS !== null && r.oldestAgeS !== undefined) ageCell.dataset.age = r.oldestAgeS;
        routeBody.append(h("tr", {}, h("td", { text: target }), h("td", { text: r.depth }), h("td", { text: prios }), ageCell));
      }
      if (!q.routes.length) routeBody.append(h("tr", {}, h("td", { colspan: 4, text: "Nothing queued." })));
      if (q.routesTruncated) routeBody.append(h("tr", {}, h("td", { colspan: 4, text: "More routes than shown." })));
      clear(tputBody);
      const peak = Math.max(1, ...q.throughput.map((m) => m.done + m.failed + m.canceled));
      for (const m of q.throughput) {
        const total = m.done + m.failed + m.canceled;
        tputBody.append(
          h("tr", {},
            h("td", { text: new Date(m.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) }),
            h("td", { text: m.done }), h("td", { text: m.failed }), h("td", { text: m.canceled }),
            h("td", {}, h("meter", { min: 0, max: peak, value: total, "aria-label": `${total} tasks ended` })),
          ),
        );
      }
      fetchedAt = Date.now();
      flash(message, "");
    } catch (err) {
      flash(message, err instanceof ApiError && err.status === 403 ? "Queues are for admins." : err.message);
    }
  }

  let timer = null;
  let last = 0;
  let fetchedAt = Date.now();
  // Waiting times grow between reloads: advance them on the local clock (no request).
  const ticker = setInterval(() => {
    const elapsed = (Date.now() - fetchedAt) / 1000;
    for (const cell of routeBody.querySelectorAll("td[data-age]")) cell.textContent = age(Number(cell.dataset.age) + elapsed);
  }, 1000);
  const off = live.on((frame) => {
    if (frame.type !== "task/status") return;
    clearTimeout(timer);
    timer = setTimeout(() => { last = Date.now(); load(); }, Math.max(0, 1000 - (Date.now() - last)));
  });
  live.subscribeAll();

  append(root, [
    h("div", { className: "heading" }, h("h1", { text: "Queues" }), h("button", { type: "button", onclick: load, text: "Reload" })),
    message,
    summary,
    h("h2", { text: "Queued by priority" }),
    h("table", { className: "grid", "aria-label": "Queued tasks by priority" },
      h("thead", {}, h("tr", {}, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0].map((p) => h("th", { scope: "col", text: `p${p}` })))), prioBody),
    h("h2", { text: "Routes" }),
    h("table", { className: "grid", "aria-label": "Queued tasks by route" },
      h("thead", {}, h("tr", {}, ["Runs on", "Depth", "By priority", "Oldest waiting"].map((t) => h("th", { scope: "col", text: t })))), routeBody),
    h("h2", { text: "Throughput (tasks ended per minute, last 15 minutes)" }),
    h("table", { className: "grid", "aria-label": "Throughput" },
      h("thead", {}, h("tr", {}, ["Minute", "Done", "Failed", "Canceled", ""].map((t) => h("th", { scope: "col", text: t })))), tputBody),
  ]);
  load();
  return () => { off(); clearTimeout(timer); clearInterval(ticker); };
}
