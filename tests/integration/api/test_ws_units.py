"""The pure parts of /ws: the Origin rule, the bad-frame budget, progress coalescing, the session registry,
and the control-message decoder. No network, no services.
"""

from __future__ import annotations

from api.ws.control import apply_control
from api.ws.endpoint import origin_allowed
from api.ws.framing import ViolationBudget
from api.ws.progress_gate import ProgressGate
from api.ws.registry import SessionRegistry
from protocol.messages import TaskProgress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Session:
    def __init__(self) -> None:
        self.closed: list[tuple[int, str]] = []

    def request_close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    def deliver(self, event: object) -> None:
        raise AssertionError("not used here")


def test_origin_allow_list_same_host_and_wildcard() -> None:
    allowed = ("https://app.example.com",)
    assert origin_allowed("https://app.example.com", allowed, "api.example.com")
    assert origin_allowed("HTTPS://APP.EXAMPLE.COM/", allowed, None)
    assert origin_allowed("http://api.example.com:8000", allowed, "api.example.com:8000")
    assert not origin_allowed("https://evil.example.net", allowed, "api.example.com")
    assert not origin_allowed("null", allowed, "api.example.com")
    assert origin_allowed("https://anything.example", ("*",), None)


def test_violation_budget_allows_ten_per_window_and_forgets_old_ones() -> None:
    clock = _Clock()
    budget = ViolationBudget(10, 60.0, clock)
    assert not any(budget.spend() for _ in range(10))
    assert budget.spend()  # the 11th within 60 s
    clock.now = 61.0
    assert not budget.spend()


def test_progress_gate_coalesces_to_the_latest_frame() -> None:
    gate = ProgressGate(10.0)  # one every 0.1 s, and a new attempt's first second's worth at once
    frames = [TaskProgress(task_id="t", attempt=1, data=i) for i in range(15)]
    assert all(gate.admit(f, 0.001 * i) for i, f in enumerate(frames[:10]))
    assert not any(gate.admit(f, 0.001 * i) for i, f in enumerate(frames[10:], start=10))
    assert gate.holding
    assert gate.due(0.05) == []
    assert gate.due(0.2) == [frames[14]]  # only the latest survives
    assert not gate.holding
    assert gate.admit(TaskProgress(task_id="t", attempt=2, data="other attempt"), 0.2)


def test_progress_gate_holds_nothing_of_a_jittery_stream_at_the_rate() -> None:
    """A stream sending exactly at the rate, each frame a few ms late or early: a bucket that started with one
    token had none to spare, so an early frame after a late one waited a whole interval; a full one absorbs it."""
    gate = ProgressGate(20.0)
    times = [i * 0.05 + (0.004 if i % 2 else -0.004) for i in range(1, 200)]
    assert all(gate.admit(TaskProgress(task_id="t", attempt=1, data=i), t) for i, t in enumerate(times))
    assert not gate.holding


def test_progress_gate_hands_over_the_held_frame_before_an_outcome() -> None:
    gate = ProgressGate(1.0)
    assert gate.admit(TaskProgress(task_id="t", attempt=1, data=1), 0.0)
    held = TaskProgress(task_id="t", attempt=1, data=2)
    assert not gate.admit(held, 0.1)
    assert gate.take("t", 1) == held
    assert gate.take("t", 1) is None


def test_progress_gate_rate_zero_admits_every_frame() -> None:
    gate = ProgressGate(0.0)
    assert all(gate.admit(TaskProgress(task_id="t", attempt=1, data=i), 0.0) for i in range(5))
    assert not gate.holding


def test_registry_agent_watchers_are_the_all_subscribers() -> None:
    registry = SessionRegistry()
    task_watcher, owner_watcher, admin_watcher = _Session(), _Session(), _Session()
    registry.watch_task("t1", task_watcher)  # type: ignore[arg-type]
    registry.watch_owner("alice", owner_watcher)  # type: ignore[arg-type]
    registry.watch_everything(admin_watcher)  # type: ignore[arg-type]
    assert registry.agent_watchers() == {owner_watcher, admin_watcher}
    registry.unwatch_owner("alice", owner_watcher)  # type: ignore[arg-type]
    registry.unwatch_everything(admin_watcher)  # type: ignore[arg-type]
    assert registry.agent_watchers() == set()


def test_registry_targets_and_closing() -> None:
    registry = SessionRegistry()
    task_watcher, owner_watcher, admin_watcher, other = _Session(), _Session(), _Session(), _Session()
    registry.watch_task("t1", task_watcher)  # type: ignore[arg-type]
    registry.watch_owner("alice", owner_watcher)  # type: ignore[arg-type]
    registry.watch_everything(admin_watcher)  # type: ignore[arg-type]
    registry.watch_owner("bob", other)  # type: ignore[arg-type]
    assert registry.targets("alice", "t1") == {task_watcher, owner_watcher, admin_watcher}
    assert registry.targets("bob", "t9") == {other, admin_watcher}
    registry.unwatch_task("t1", task_watcher)  # type: ignore[arg-type]
    assert task_watcher not in registry.targets("alice", "t1")

    agent, client = _Session(), _Session()
    registry.add_agent("a1", "alice", agent)
    registry.add_client("alice", "jti-1", client)
    assert apply_control(registry, b'{"kind": "token_revoked", "id": "jti-1"}') == 1
    assert client.closed == [(1008, "session revoked")]
    assert apply_control(registry, b'{"kind": "user_disabled", "id": "alice"}') == 2
    assert agent.closed == [(1008, "user disabled")]
    assert apply_control(registry, b'{"kind": "nonsense", "id": "x"}') == 0
    assert apply_control(registry, b"not json") == 0
    registry.remove_agent("a1", "alice", agent)
    assert registry.close_agent("a1", 1008, "gone") == 0


def test_progress_gate_lets_a_jittery_stream_under_the_rate_through() -> None:
    gate = ProgressGate(10.0)  # a token every 0.1 s, at most 10 saved up
    # ~8/s on average, some frames closer than 0.1 s apart (a strict one-per-interval gate would hold them).
    times = [0.0, 0.13, 0.24, 0.38, 0.48, 0.63, 0.72, 0.88, 0.96, 0.97]
    assert all(gate.admit(TaskProgress(task_id="t", attempt=1, data=i), t) for i, t in enumerate(times))
    assert not gate.holding


def test_progress_gate_saves_tokens_while_quiet_but_no_more_than_a_second() -> None:
    gate = ProgressGate(4.0)
    assert gate.admit(TaskProgress(task_id="t", attempt=1, data=0), 0.0)
    burst = [gate.admit(TaskProgress(task_id="t", attempt=1, data=i), 10.0) for i in range(1, 7)]
    assert burst == [True, True, True, True, False, False]  # 4 saved (one second), then held
    assert gate.due(10.1) == []
    assert [p.data for p in gate.due(10.3)] == [6]  # only the latest held one, once a token is back
