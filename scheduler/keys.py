"""The one place Redis key names are built. Never touches Redis itself.

Key map. `P` is the prefix (`TASKYARD_REDIS_PREFIX`, default `taskyard`; put a hash tag in it,
e.g. `taskyard:{s1}`, to run one shard per slot on Redis Cluster, see docs/sharding.md).

Each entry: key, Redis type; contents; bound or TTL; written by -> read by.

`P:task:{id}` HASH
    owner, type, input, prio, pin, caps, route, ord, timeout, maxatt, status, attempt, seq,
    agent (assigned), fin (`attempt:agent:kind` of the frame that finished it), runat, error, message,
    slen (bytes of the current attempt's `task/stream` text; dispatch resets it), hx (set once the task
    has a history stream), `e{seq}` per status event: its payload (the replay history of statuses,
    written in the same HSET as the status change; a few per attempt),
    losses (attempts lost with their agent: not counted against maxatt, bounded by `max_losses`),
    avoid (the agent it last timed out on; dispatch prefers any other with room),
    ea (the current attempt's `assigned` event again, which complete hands to the result writer),
    qat (when a fresh task was queued, ms; enqueue sets it, its first dispatch streams and clears it).
    No TTL while active; `task_ttl_s` once terminal.
    Written by every script -> read by every script, `history()` and `known_task_ids`.
`P:out:{id}` STRING
    The output of the result that made the task `done`, until the database has it (a result whose commit
    died with its API replica is filled in from here). TTL `output_keep_s`. complete -> the reconciler.
`P:hist:{id}` STREAM
    The task's progress and stream events; entry id `0-{seq}`, so "after seq" is one XRANGE (`history()`
    merges the status events from the task hash). Only exists once the task reported progress or text.
    MAXLEN ~ `history_maxlen`; no TTL while active; `task_ttl_s` once terminal.
    progress, stream -> `history()` (watcher replay).
`P:events` STREAM (group `recorder`)
    Every event of every task but a fresh task's first status (its row has it) and progress between marks.
    MAXLEN ~ `events_maxlen`; no TTL (bounded).
    Every event-producing script -> `read_events()` (the API's recorder).
`P:q:{route}` ZSET
    Queued task ids of one routing class; score `(9 - priority) * 1e14 + ord` (higher priority
    first, FIFO by `ord`). Holds active tasks only; deleted when empty.
    enqueue, release_due, agent_offline, reap_agents, timeouts (add); dispatch, cancel (remove)
    -> dispatch, `queue_depths()`.
`P:queues` ZSET
    Registry of non-empty queues: member route id, score its head's score. One member per
    non-empty queue; no TTL. Same writers as `P:q:*` -> the dispatch loop.
`P:routes` HASH
    Route id -> JSON `{"pin": agent id or "", "caps": [...]}`. One field per non-empty queue;
    no TTL. Same writers as `P:q:*` -> dispatch (candidate checks), the dispatch loop.
`P:ord` STRING
    Counter giving each task its FIFO position (global, so heads compare across queues).
    One integer; no TTL. enqueue -> enqueue.
`P:delayed` ZSET
    `scheduled` task ids; score = due time (ms). Active tasks only; no TTL.
    enqueue, fail, timeouts -> release_due.
`P:deadlines` ZSET
    `assigned`/`running` task ids; score = assign-ack or run deadline (ms). Active tasks only;
    no TTL. dispatch, accept -> timeouts.
`P:agents` ZSET
    Agents with a lease; score = lease end (ms). One member per agent until reaped or offline.
    heartbeat -> dispatch, reap_agents, `online_agents()`, `is_online()`.
`P:agent:{id}` HASH
    owner, caps (JSON), conc, accepting, sess (latest session id: only its close starts a reconnect
    grace). TTL lease + `agent_keep_s`, refreshed per heartbeat (the reaper deletes it first).
    heartbeat -> dispatch, `online_agents()`, agent_offline.
`P:agent:{id}:tasks` SET
    Task ids holding a slot on the agent; its size is the slots in use (SCARD). Same TTL as the agent hash
    (set by the heartbeat; a set created by a dispatch gets it at the next heartbeat).
    dispatch (add); complete, fail, cancel, timeouts, reconcile_agent (remove) -> reap_agents, agent_offline,
    reconcile_agent.
`P:agent:{id}:inbox` STREAM (group `deliver`)
    `submit` / `cancel` entries for the agent. MAXLEN ~ `inbox_maxlen`; TTL `inbox_ttl_s`,
    refreshed per heartbeat and cancel entry. dispatch, cancel, timeouts, reap_agents -> `read_inbox()`.
`P:wake` LIST
    A nudge for dispatch loops (work or capacity appeared). At most 1 element (pushed only when empty);
    no TTL. enqueue, release_due, heartbeat, complete, fail, cancel, reaps -> the dispatch loop (BLPOP).
`P:presence` STRING
    Counter bumped when an agent comes online or changes concurrency/accepting: dispatch loops keep presence
    in memory and read it again when this changes. TTL 1 day, refreshed on change. heartbeat -> dispatch loop.
`P:watching` ZSET
    API processes that have client sockets or watchers: member process id, score expiry (ms). Scripts
    publish on `P:watch:{owner}` only while some entry is live. TTL the longest entry's, refreshed by
    `mark_watching()`. API fan-out -> every event-producing script.
`P:counts` HASH
    Finished tasks per terminal status (`done`, `failed`, `canceled`), and `_seeded` once the API seeded it
    from the database. No TTL. complete, fail, cancel, timeouts, reaps (add, `flush_counts`); the retention
    purge (subtract); the API's seeding -> `/metrics` (scheduler/counts.py).
`P:epoch` STRING
    Set once the queues were rebuilt from the database. One key; no TTL.
    `mark_epoch()` -> `epoch_present()` (the API's reconciler).
`P:scheduler:{instance}` STRING
    Liveness of one scheduler process. TTL `3 * sweep_interval_s` (min 5 s).
    The sweep loop -> `python -m scheduler --check`.
`P:watch:{owner}` Pub/Sub channel
    Every event of the owner's tasks as JSON, while anyone watches (`P:watching`). Every event-producing
    script -> API fan-out.
`P:ops:paused_types` SET, `P:ops:paused_routes` SET, `P:ops:drained` SET
    Operator holds: task types and route ids not dispatched, agent ids given no new task. One
    member per hold; no TTL. The API's admin routes -> dispatch.lua (types), the dispatch loop
    (routes, agents).
`P:control` Pub/Sub channel
    `{"kind": ..., "id": ...}` for API replicas. `publish_control()` -> API replicas.

Exception to "every key in KEYS": a script builds a key from the prefix in ARGV when the key
depends on state it reads (the task hash and history of a popped task, the queue of a task's
route, the assigned agent's keys, the owner's watch channel), when a call handles many tasks (the
task hashes of a batched enqueue or complete), and for `P:watching`, `P:presence` and `P:counts`.
`lua/_lib.lua` mirrors the builders below; keep both in step. With one hash tag per prefix every
such key is on the script's slot.

Clock skew: leases are `heartbeat timeout` long (30 s in production, 2 s in tests); scheduler
nodes may disagree on `now` by far less than that (NTP keeps them within milliseconds). A skew of
`s` only shifts lease and deadline expiry by `s`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ("INBOX_GROUP", "RECORDER_GROUP", "Keys", "route_id")

INBOX_GROUP = "deliver"
"""Consumer group of every agent inbox (the API replicas read it)."""
RECORDER_GROUP = "recorder"
"""Consumer group of the global events stream."""


def route_id(pinned_agent_id: str | None, capabilities: tuple[str, ...]) -> str:
    """The routing class of a task: its pinned agent, or its sorted capability set.

    Capability sets are hashed so any characters they hold stay out of key names.
    """
    if pinned_agent_id:
        return "a:" + pinned_agent_id
    joined = "\n".join(sorted(set(capabilities)))
    return "c:" + hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every key under one prefix."""

    prefix: str

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def pending_output(self, task_id: str) -> str:
        return f"{self.prefix}:out:{task_id}"

    def history(self, task_id: str) -> str:
        return f"{self.prefix}:hist:{task_id}"

    def events(self) -> str:
        return f"{self.prefix}:events"

    def queue(self, route: str) -> str:
        return f"{self.prefix}:q:{route}"

    def queues(self) -> str:
        return f"{self.prefix}:queues"

    def routes(self) -> str:
        return f"{self.prefix}:routes"

    def ord_counter(self) -> str:
        return f"{self.prefix}:ord"

    def delayed(self) -> str:
        return f"{self.prefix}:delayed"

    def deadlines(self) -> str:
        return f"{self.prefix}:deadlines"

    def agents(self) -> str:
        return f"{self.prefix}:agents"

    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}:agent:{agent_id}"

    def agent_tasks(self, agent_id: str) -> str:
        return f"{self.prefix}:agent:{agent_id}:tasks"

    def inbox(self, agent_id: str) -> str:
        return f"{self.prefix}:agent:{agent_id}:inbox"

    def presence_version(self) -> str:
        return f"{self.prefix}:presence"

    def watching(self) -> str:
        return f"{self.prefix}:watching"

    def wake(self) -> str:
        return f"{self.prefix}:wake"

    def task_counts(self) -> str:
        return f"{self.prefix}:counts"

    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    def scheduler_heartbeat(self, instance: str) -> str:
        return f"{self.prefix}:scheduler:{instance}"

    def watch_channel(self, owner_id: str) -> str:
        return f"{self.prefix}:watch:{owner_id}"

    def watch_pattern(self) -> str:
        return f"{self.prefix}:watch:*"

    def control_channel(self) -> str:
        return f"{self.prefix}:control"

    def paused_types(self) -> str:
        return f"{self.prefix}:ops:paused_types"

    def paused_routes(self) -> str:
        return f"{self.prefix}:ops:paused_routes"

    def drained_agents(self) -> str:
        return f"{self.prefix}:ops:drained"

    def pattern(self) -> str:
        """Every key under the prefix (for tests and operators; never used on a hot path)."""
        return f"{self.prefix}:*"
