"""Harness for the /ws tests: a real uvicorn server in a thread, real Redis and database, a websockets peer.

The app runs on the server thread's loop (as in production); the test's loop holds its own Redis and
database clients, drives the scheduler in burst mode (`run_until_idle`) and speaks the wire protocol
through the `websockets` client. No test here asserts a timing: every wait is a condition with a bound.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
import redis.asyncio
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.http.joined_writes import JoinedHeadHttpProtocol
from api.ws.direct import DirectWebSocketProtocol
from protocol.envelope import Frame, decode_frame, encode_frame
from protocol.limits import MAX_AGENT_FRAME_BYTES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from api.auth.identity import CurrentUser
    from api.settings import ApiSettings
    from protocol.messages import Message

WAIT_S = 10.0
"""Bound on every wait (a liveness bound, never a timing assertion)."""
PASSWORD = "correct horse battery staple"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerThread:
    """uvicorn serving `create_app(settings)` on a free port, on its own thread and loop."""

    settings: ApiSettings
    port: int = field(default_factory=_free_port)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from api.app import create_app

        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,  # as `taskyard api`: the app's access log is the only one
            # The agent frame limit; the handler checks the smaller client limit itself.
            ws_max_size=MAX_AGENT_FRAME_BYTES,
            ws=DirectWebSocketProtocol,  # as `taskyard api`
            http=JoinedHeadHttpProtocol,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the API server thread exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start within 30 s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)


@dataclass
class Person:
    id: str
    email: str
    token: str
    user: CurrentUser


class Peer:
    """A websockets client connection speaking taskyard frames."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.seen: list[Frame] = []

    async def send(self, message: Message, *, frame_id: str | None = None) -> str:
        frame_id = frame_id or str(uuid.uuid4())
        await self.conn.send(encode_frame(message, frame_id=frame_id).decode())
        return frame_id

    async def send_raw(self, data: str | bytes) -> None:
        await self.conn.send(data)

    async def recv(self, timeout_s: float = WAIT_S) -> Frame:
        raw = await asyncio.wait_for(self.conn.recv(), timeout_s)
        frame = decode_frame(raw, max_bytes=16 * MAX_AGENT_FRAME_BYTES)
        self.seen.append(frame)
        return frame

    async def recv_type(self, *types: str, timeout_s: float = WAIT_S) -> Frame:
        """The next frame of one of `types`, skipping others (heartbeats, ...)."""
        deadline = time.monotonic() + timeout_s
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame.type in types:
                return frame

    async def recv_until(self, done: Callable[[Frame], bool], timeout_s: float = WAIT_S) -> list[Frame]:
        """Frames up to and including the first for which `done` is true (heartbeats dropped)."""
        deadline = time.monotonic() + timeout_s
        frames: list[Frame] = []
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame.type != "heartbeat":
                frames.append(frame)
            if done(frame):
                return frames

    async def closed_with(self, timeout_s: float = WAIT_S) -> int | None:
        """Read until the server closes; the close code it sent."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    await self.conn.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None

    async def close(self) -> None:
        await self.conn.close()


@dataclass
class Stack:
    """The running server plus the test-side clients of the same Redis and database."""

    server: ServerThread
    settings: ApiSettings
    redis: redis.asyncio.Redis
    scheduler: Any
    scheduler_service: Any
    db: Any
    peers: list[Peer] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.server.http_url.replace("http://", "ws://") + "/ws"

    # --- people, agents, tasks ----------------------------------------------------------------

    async def person(self, *, admin: bool = False) -> Person:
        from api.auth.identity import CurrentUser
        from taskyard.chores import ensure_admin

        email = f"{'admin' if admin else 'user'}-{secrets.token_hex(4)}@example.com"
        async with httpx.AsyncClient(base_url=self.server.http_url, timeout=WAIT_S) as http:
            if admin:
                await ensure_admin(self.settings, email=email, password=PASSWORD, name="Admin")
            else:
                reply = await http.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "U"})
                assert reply.status_code == 201, reply.text
            login = await http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            token = login.json()["accessToken"]
            me = await http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200, me.text
        user_id = me.json()["id"]
        user = CurrentUser(
            id=user_id, email=email, name="U", role="admin" if admin else "user", jti="test", token_exp=2**31
        )
        return Person(id=user_id, email=email, token=token, user=user)

    async def agent(
        self, owner: Person, *, concurrency: int = 4, capabilities: tuple[str, ...] = ()
    ) -> tuple[str, str]:
        """A new agent owned by `owner`; returns (agent id, token)."""
        from taskyard.chores import create_agent

        return await create_agent(
            self.settings,
            name=f"agent-{secrets.token_hex(3)}",
            owner_email=owner.email,
            capabilities=capabilities,
            concurrency=concurrency,
            is_public=True,  # users may pin tasks only to public agents (or be admins)
        )

    async def rotate_agent_token(self, admin: Person, agent_id: str) -> str:
        """What `POST /api/agents/{id}/rotate-token` does: new token committed, then revoke."""
        from api.agents.service import AgentService

        async with self.db() as session:
            service = AgentService(session, self.scheduler)
            _, created = await service.rotate_token(admin.user, agent_id, None)
            await session.commit()
            await service.revoke(agent_id)
        return str(created.token)

    async def delete_agent(self, admin: Person, agent_id: str) -> None:
        from api.agents.service import AgentService

        async with self.db() as session:
            service = AgentService(session, self.scheduler)
            await service.delete(admin.user, agent_id)
            await session.commit()
            await service.revoke(agent_id)

    async def submit(self, owner: Person, *, agent_id: str | None = None, task_input: Any = None) -> str:
        from api.tasks.schemas import TaskCreate
        from api.tasks.service import TaskService

        async with self.db() as session:
            view, created = await TaskService(session, self.scheduler).submit(
                owner.user,
                TaskCreate(type="test.echo", input=task_input or {"n": 1}, agent_id=agent_id),
                None,
            )
        assert created
        return str(view.id)

    async def dispatch(self) -> int:
        return int(await self.scheduler_service.run_until_idle())

    async def task_row(self, task_id: str) -> Any:
        from api.db.models.tasks import Task

        async with self.db() as session:
            return await session.get(Task, task_id)

    # --- sockets --------------------------------------------------------------------------------

    async def open(self, query: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Peer:
        conn = await connect(
            f"{self.ws_url}?{query}",
            additional_headers=headers or {},
            max_size=16 * MAX_AGENT_FRAME_BYTES,
            open_timeout=WAIT_S,
            **kwargs,
        )
        peer = Peer(conn)
        self.peers.append(peer)
        return peer

    async def agent_peer(self, agent_id: str, token: str) -> Peer:
        """An authenticated agent socket, past `auth/ok` and the first server heartbeat."""
        peer = await self.open(f"role=agent&agent_id={agent_id}", {"Authorization": f"Bearer {token}"})
        first = await peer.recv()
        assert first.type == "auth/ok", first
        await peer.recv_type("heartbeat")
        return peer

    async def running_task(self, owner: Person) -> tuple[Peer, str, str, int]:
        """An agent of `owner`'s connected, one task pinned to it dispatched and accepted.

        Returns (agent socket, agent id, task id, attempt).
        """
        from protocol.messages import TaskAccept

        agent_id, token = await self.agent(owner)
        agent = await self.agent_peer(agent_id, token)
        task_id = await self.submit(owner, agent_id=agent_id)
        await self.dispatch()
        attempt = int(payload(await agent.recv_type("task/submit"))["attempt"])
        await agent.send(TaskAccept(task_id=task_id, attempt=attempt))
        await agent.recv_type("ack")
        return agent, agent_id, task_id, attempt

    async def client_peer(self, person: Person) -> Peer:
        peer = await self.open("role=client", {"Authorization": f"Bearer {person.token}"})
        first = await peer.recv()
        assert first.type == "auth/ok", first
        return peer


def ws_settings(make_settings: Callable[..., ApiSettings], **overrides: object) -> ApiSettings:
    """The test profile with cheap argon2 (hashing is not under test here) and a small send backlog."""
    env: dict[str, object] = {
        "TASKYARD_API_ARGON2_TIME_COST": 1,
        "TASKYARD_API_ARGON2_MEMORY_COST_KIB": 1024,
        "TASKYARD_API_ARGON2_PARALLELISM": 1,
        "TASKYARD_API_SEND_BACKLOG": 50,
        "TASKYARD_API_CORS_ORIGINS": "https://app.example.com",
    }
    env.update(overrides)
    return make_settings(**env)


async def open_stack(settings: ApiSettings) -> AsyncIterator[Stack]:
    from api.db.session import create_engine, create_sessionmaker
    from scheduler.client import SchedulerClient
    from scheduler.service import SchedulerService
    from scheduler.settings import SchedulerSettings

    assert settings.redis.url is not None
    server = ServerThread(settings)
    await asyncio.to_thread(server.start)
    client = redis.asyncio.Redis.from_url(
        settings.redis.url.reveal(), protocol=3, legacy_responses=True, socket_timeout=5, decode_responses=False
    )
    engine = create_engine(settings.database)
    prefix = settings.redis.prefix
    stack = Stack(
        server=server,
        settings=settings,
        redis=client,
        scheduler=SchedulerClient(client, prefix=prefix),
        scheduler_service=SchedulerService(client, SchedulerSettings(prefix=prefix)),
        db=create_sessionmaker(engine),
    )
    try:
        yield stack
    finally:
        for peer in stack.peers:
            await peer.close()
        await asyncio.to_thread(server.stop)
        await client.aclose()
        await engine.dispose()


@pytest.fixture
async def stack(make_settings: Callable[..., ApiSettings]) -> AsyncIterator[Stack]:
    async for running in open_stack(ws_settings(make_settings)):
        yield running


def payload(frame: Frame) -> dict[str, Any]:
    """A frame's payload as wire JSON (camelCase), for assertions."""
    result: dict[str, Any] = msgspec.to_builtins(frame.payload)
    return result
