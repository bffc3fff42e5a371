"""The in-process index of open /ws sessions: who is connected, who watches what.

Fan-out asks it which sessions want an event; the control channel asks it which sockets to close.
It holds references only; sessions add and remove themselves and own their own lifecycles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.ws.events import AgentStatusEvent, WatchEvent

__all__ = ("Closable", "Refreshable", "SessionRegistry", "Watcher")


class Closable(Protocol):
    """A session that can be asked to close (the close happens on its own task)."""

    def request_close(self, code: int, reason: str) -> None: ...


class Refreshable(Closable, Protocol):
    """An agent session that can be asked to reload its agent's settings (capabilities, concurrency)."""

    def request_refresh(self) -> None: ...


class Watcher(Closable, Protocol):
    """A client session that takes task events."""

    def deliver(self, event: WatchEvent) -> None: ...

    def deliver_agent_status(self, event: AgentStatusEvent) -> None: ...


_K = TypeVar("_K")
_V = TypeVar("_V")


def _add(index: dict[_K, set[_V]], key: _K, value: _V) -> None:
    index.setdefault(key, set()).add(value)


def _discard(index: dict[_K, set[_V]], key: _K, value: _V) -> None:
    members = index.get(key)
    if members is None:
        return
    members.discard(value)
    if not members:
        del index[key]


class SessionRegistry:
    """Indexes of live sessions; every method is synchronous and O(matching sessions)."""

    def __init__(self) -> None:
        self._agents: dict[str, set[Refreshable]] = {}
        self._agents_by_owner: dict[str, set[Closable]] = {}
        self._clients_by_user: dict[str, set[Closable]] = {}
        self._clients_by_jti: dict[str, set[Closable]] = {}
        self._watch_task: dict[str, set[Watcher]] = {}
        self._watch_owner: dict[str, set[Watcher]] = {}
        self._watch_everything: set[Watcher] = set()
        self.on_watch: Callable[[], None] | None = None
        """Called on every new subscription (the fan-out makes sure events are being published)."""

    # --- connections ------------------------------------------------------------------------

    def add_agent(self, agent_id: str, owner_id: str, session: Refreshable) -> None:
        _add(self._agents, agent_id, session)
        _add(self._agents_by_owner, owner_id, session)

    def remove_agent(self, agent_id: str, owner_id: str, session: Refreshable) -> None:
        _discard(self._agents, agent_id, session)
        _discard(self._agents_by_owner, owner_id, session)

    def add_client(self, user_id: str, jti: str | None, session: Closable) -> None:
        _add(self._clients_by_user, user_id, session)
        if jti:
            _add(self._clients_by_jti, jti, session)

    def remove_client(self, user_id: str, jti: str | None, session: Closable) -> None:
        """Forget a client connection; its subscriptions are dropped by the session itself (it knows them)."""
        _discard(self._clients_by_user, user_id, session)
        if jti:
            _discard(self._clients_by_jti, jti, session)

    def refresh_agent(self, agent_id: str) -> int:
        """Ask the agent's local sessions to reload its settings; returns how many were asked."""
        sessions = self._agents.get(agent_id, set())
        for session in sessions:
            session.request_refresh()
        return len(sessions)

    def agent_sessions(self, agent_id: str) -> int:
        return len(self._agents.get(agent_id, ()))

    def counts(self) -> tuple[int, int]:
        """(agent sessions, client sessions) open in this process."""
        return (
            sum(len(s) for s in self._agents.values()),
            sum(len(s) for s in self._clients_by_user.values()),
        )

    # --- subscriptions ----------------------------------------------------------------------

    def _watched(self) -> None:
        if self.on_watch is not None:
            self.on_watch()

    def watch_task(self, task_id: str, session: Watcher) -> None:
        _add(self._watch_task, task_id, session)
        self._watched()

    def unwatch_task(self, task_id: str, session: Watcher) -> None:
        _discard(self._watch_task, task_id, session)

    def watch_owner(self, owner_id: str, session: Watcher) -> None:
        _add(self._watch_owner, owner_id, session)
        self._watched()

    def unwatch_owner(self, owner_id: str, session: Watcher) -> None:
        _discard(self._watch_owner, owner_id, session)

    def watch_everything(self, session: Watcher) -> None:
        self._watch_everything.add(session)
        self._watched()

    def unwatch_everything(self, session: Watcher) -> None:
        self._watch_everything.discard(session)

    def targets(self, owner_id: str, task_id: str | None) -> set[Watcher]:
        """Sessions that want an event of `task_id` owned by `owner_id` (each dedupes by seq itself);
        with `task_id` None, those that want every event of that owner."""
        found: set[Watcher] = set()
        by_task = None if task_id is None else self._watch_task.get(task_id)
        for members in (by_task, self._watch_owner.get(owner_id), self._watch_everything):
            if members:
                found |= members
        return found

    def wants(self, owner_id: str, task_id: str) -> bool:
        """Whether any session here may want an event of `task_id` owned by `owner_id` (cheaper than `targets`)."""
        return bool(self._watch_everything) or task_id in self._watch_task or owner_id in self._watch_owner

    def task_watched(self, task_id: str) -> bool:
        """Whether some session watches this one task by its id."""
        return task_id in self._watch_task

    def has_watchers(self) -> bool:
        return bool(self._watch_task or self._watch_owner or self._watch_everything)

    def agent_watchers(self) -> set[Watcher]:
        """Sessions subscribed with `all: true` (admins to everything, users to their own): they get `agent/status`."""
        found: set[Watcher] = set(self._watch_everything)
        for members in self._watch_owner.values():
            found |= members
        return found

    def all_watchers(self) -> set[Watcher]:
        found: set[Watcher] = set(self._watch_everything)
        for index in (self._watch_task, self._watch_owner):
            for members in index.values():
                found |= members
        return found

    # --- closing (control channel) ----------------------------------------------------------

    def close_agent(self, agent_id: str, code: int, reason: str) -> int:
        sessions = list(self._agents.get(agent_id, ()))
        for session in sessions:
            session.request_close(code, reason)
        return len(sessions)

    def close_token(self, jti: str, code: int, reason: str) -> int:
        sessions = list(self._clients_by_jti.get(jti, ()))
        for session in sessions:
            session.request_close(code, reason)
        return len(sessions)

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        """Close a user's client sockets and the sockets of agents they own."""
        sessions = list(self._clients_by_user.get(user_id, ())) + list(self._agents_by_owner.get(user_id, ()))
        for session in sessions:
            session.request_close(code, reason)
        return len(sessions)

    def close_everything(self, code: int, reason: str) -> None:
        sessions: list[Closable] = [s for members in self._agents.values() for s in members]
        sessions += [s for members in self._clients_by_user.values() for s in members]
        for session in sessions:
            session.request_close(code, reason)
