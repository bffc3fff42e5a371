// The /ws client (role=client). One socket per tab: `all: true` for the task table and agents, single-task
// subscriptions (with lastSeq) for a task's page, session subscriptions for the planner. Reconnects with
// backoff and resubscribes; per task, events whose seq was already seen are dropped (replays repeat them).

import { accessToken, endSession, refreshSession } from "./api.js";

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

class Live {
  constructor() {
    this.ws = null;
    this.listeners = new Set();
    this.stateListeners = new Set();
    this.tasks = new Map(); // taskId -> last seq processed (for lastSeq on resubscribe and dedupe)
    this.watchAll = false;
    this.sessions = new Set();
    this.state = "offline";
    this.backoff = 500;
    this.heartbeat = null;
    this.stopped = true;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.tasks.clear();
    this.sessions.clear();
    this.watchAll = false;
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.setState("offline");
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onState(fn) {
    this.stateListeners.add(fn);
    fn(this.state);
    return () => this.stateListeners.delete(fn);
  }

  setState(state) {
    this.state = state;
    for (const fn of this.stateListeners) fn(state);
  }

  connect() {
    const token = accessToken();
    if (!token || this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // Browsers cannot set headers on a WebSocket: the token goes in the query string (the API's access
    // log leaves query strings out).
    const url = `${scheme}//${location.host}/ws?role=client&token=${encodeURIComponent(token)}`;
    this.setState("connecting");
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (msg) => this.receive(msg.data);
    ws.onclose = (event) => this.closed(ws, event);
  }

  async closed(ws, event) {
    if (this.ws !== ws) return;
    clearInterval(this.heartbeat);
    this.ws = null;
    if (this.stopped) return;
    this.setState("reconnecting");
    // 1008: the token expired or was revoked. Try a fresh one; if there is none, the session is over.
    if (event.code === 1008 && !(await refreshSession())) {
      endSession();
      return;
    }
    setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10000);
  }

  send(type, payload) {
    const id = uuid();
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ id, type, ts: Math.floor(Date.now() / 1000), payload }));
    }
    return id;
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "auth/ok") {
      this.backoff = 500;
      this.setState("live");
      const every = Math.max(5, (frame.payload.heartbeatIntervalS || 30)) * 1000;
      this.heartbeat = setInterval(() => this.send("heartbeat", {}), every);
      if (this.watchAll) this.send("subscribe", { all: true });
      for (const [taskId, lastSeq] of this.tasks) this.send("subscribe", { taskId, lastSeq });
      for (const sessionId of this.sessions) this.send("subscribe", { sessionId });
      return;
    }
    const p = frame.payload || {};
    if (p.taskId && typeof p.seq === "number" && this.tasks.has(p.taskId)) {
      if (p.seq <= this.tasks.get(p.taskId)) return;
      this.tasks.set(p.taskId, p.seq);
    }
    for (const fn of this.listeners) fn(frame);
  }

  subscribeAll() {
    if (this.watchAll) return; // once per socket: it covers every page (and is renewed on reconnect)
    this.watchAll = true;
    this.send("subscribe", { all: true });
  }

  subscribeTask(taskId, lastSeq) {
    this.tasks.set(taskId, lastSeq);
    this.send("subscribe", { taskId, lastSeq });
  }

  unsubscribeTask(taskId) {
    if (!this.tasks.delete(taskId)) return;
    this.send("unsubscribe", { taskId });
  }

  subscribeSession(sessionId) {
    this.sessions.add(sessionId);
    this.send("subscribe", { sessionId });
  }

  unsubscribeSession(sessionId) {
    if (!this.sessions.delete(sessionId)) return;
    this.send("unsubscribe", { sessionId });
  }
}

export const live = new Live();
