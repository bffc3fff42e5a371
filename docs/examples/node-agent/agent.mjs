// A taskyard agent in Node.js (20+), written from docs/protocol.md alone, with no dependency:
// the built-in WebSocket (Node 20: `node --experimental-websocket agent.mjs`; Node 22+: `node agent.mjs`).
//
//   TASKYARD_URL=ws://127.0.0.1:8000/ws AGENT_ID=... AGENT_TOKEN=... node --experimental-websocket agent.mjs
//
// It runs one task type, `example.shout`: input {"text": "..."} -> output {"text": "...!"} (upper case),
// streaming the answer word by word as `task/stream` pieces. It reconnects, resends unacknowledged results,
// fences every frame with the attempt, and ignores repeated submits.
// (The browser-style WebSocket cannot set headers, so the token travels in the query string.)

import { randomUUID } from "node:crypto";

const url = process.env.TASKYARD_URL ?? "ws://127.0.0.1:8000/ws";
const agentId = process.env.AGENT_ID;
const agentToken = process.env.AGENT_TOKEN;
const concurrency = Number(process.env.CONCURRENCY ?? 4);
if (!agentId || !agentToken) {
  console.error("set AGENT_ID and AGENT_TOKEN");
  process.exit(2);
}

const running = new Map(); // "taskId/attempt" -> {taskId, attempt, canceled}
const seen = new Set(); // attempts already taken (repeated submits are not new tasks)
const unacked = new Map(); // frame id -> encoded task/result or task/error, until its ack
let socket = null;
let heartbeatTimer = null;

function frame(type, payload, id = randomUUID()) {
  return { id, text: JSON.stringify({ id, type, ts: Math.floor(Date.now() / 1000), payload }) };
}

function send(type, payload) {
  const f = frame(type, payload);
  if (socket?.readyState === WebSocket.OPEN) socket.send(f.text);
  return f;
}

function sendTracked(type, payload) {
  const f = frame(type, payload);
  unacked.set(f.id, f.text); // kept until the server's ack names it in `ref`
  if (socket?.readyState === WebSocket.OPEN) socket.send(f.text);
}

function heartbeat() {
  const tasks = [...running.values()].map(({ taskId, attempt }) => ({ taskId, attempt }));
  send("heartbeat", { running: tasks.length, capacity: Math.max(concurrency - tasks.length, 0), runningTasks: tasks });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(job, input) {
  const words = String(input?.text ?? "").toUpperCase().split(/(?<=\s)/);
  let offset = 0; // UTF-8 bytes of this attempt's stream before the next piece
  for (const word of words) {
    if (job.canceled) return;
    if (word) {
      send("task/stream", { taskId: job.taskId, attempt: job.attempt, offset, delta: word });
      offset += Buffer.byteLength(word, "utf8");
    }
    await sleep(20);
  }
  if (job.canceled) return;
  sendTracked("task/result", { taskId: job.taskId, attempt: job.attempt, output: { text: words.join("") + "!" } });
}

function onSubmit(p) {
  const key = `${p.taskId}/${p.attempt}`;
  if (seen.has(key)) return; // at-least-once delivery: deduplicate by (taskId, attempt)
  seen.add(key);
  const job = { taskId: p.taskId, attempt: p.attempt, canceled: false };
  running.set(key, job);
  sendTracked("task/accept", { taskId: p.taskId, attempt: p.attempt });
  const work =
    p.type === "example.shout"
      ? run(job, p.input)
      : Promise.resolve(
          sendTracked("task/error", {
            taskId: p.taskId,
            attempt: p.attempt,
            error: "unsupported_type",
            message: `this agent does not run ${p.type}`,
          }),
        );
  work
    .catch((err) => {
      sendTracked("task/error", { taskId: p.taskId, attempt: p.attempt, error: "handler_error", message: String(err).slice(0, 2000) });
    })
    .finally(() => {
      running.delete(key);
      heartbeat();
    });
}

function onMessage(event) {
  const { type, payload } = JSON.parse(event.data);
  if (type === "auth/ok") {
    for (const text of unacked.values()) socket.send(text); // resend what the server never acknowledged
  } else if (type === "heartbeat" && payload.interval) {
    clearInterval(heartbeatTimer);
    heartbeatTimer = setInterval(heartbeat, payload.interval * 1000);
    heartbeat();
  } else if (type === "task/submit") {
    onSubmit(payload);
  } else if (type === "task/cancel") {
    const job = running.get(`${payload.taskId}/${payload.attempt}`);
    if (job) job.canceled = true;
  } else if (type === "ack") {
    unacked.delete(payload.ref);
  } else if (type === "error") {
    // A refused outcome is final unless the server asks to resend later.
    if (payload.ref && payload.error !== "service_unavailable") unacked.delete(payload.ref);
    console.error(`server refused a frame: ${payload.error}: ${payload.message}`);
  }
}

function connect(backoffMs = 500) {
  const query = new URLSearchParams({ role: "agent", agent_id: agentId, agent_token: agentToken });
  socket = new WebSocket(`${url}?${query}`);
  socket.addEventListener("open", () => {
    backoffMs = 500;
    console.log("connected");
  });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", (event) => {
    clearInterval(heartbeatTimer);
    if (event.code === 1008) console.error(`closed by the server: ${event.reason}`);
    setTimeout(() => connect(Math.min(backoffMs * 2, 10_000)), backoffMs);
  });
  socket.addEventListener("error", () => {}); // the close event follows and reconnects
}

process.on("SIGTERM", () => process.exit(0));
connect();
