"""A response's head and body in one write (api/http/joined_writes.py), through a real uvicorn server.

The joining itself is checked on a recording transport; the server tests pin the uvicorn attributes the
protocol relies on and show that what must not wait does not: a streamed response's head goes out before
its body exists, and `100 Continue` before the request body is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import uvicorn

from api.http.joined_writes import HeadJoiningTransport, JoinedHeadHttpProtocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

_HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class _Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0


async def test_a_head_and_its_body_go_out_in_one_write() -> None:
    real = _Recording()
    joining = HeadJoiningTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joining.write(_HEAD)
    joining.write(b"{}")
    assert real.writes == [_HEAD + b"{}"]
    await asyncio.sleep(0)  # the step's flush finds nothing held
    assert real.writes == [_HEAD + b"{}"]
    assert joining.get_write_buffer_size() == 0  # anything else is the real transport's


async def test_a_head_alone_goes_out_on_the_next_step_and_before_a_close() -> None:
    real = _Recording()
    joining = HeadJoiningTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joining.write(_HEAD)
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [_HEAD]
    joining.write(_HEAD)
    joining.close()
    assert real.writes == [_HEAD, _HEAD]
    assert real.closed


async def test_interim_heads_and_body_chunks_are_not_held() -> None:
    real = _Recording()
    joining = HeadJoiningTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joining.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    joining.write(b"5\r\nhello\r\n")
    assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"5\r\nhello\r\n"]


class _Server:
    """uvicorn with `JoinedHeadHttpProtocol` serving `app` on a free port, on its own thread."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, lifespan="off", log_config=None, http=JoinedHeadHttpProtocol
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)

    @contextlib.contextmanager
    def connect(self) -> Iterator[socket.socket]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            yield sock


def _read_head(sock: socket.socket) -> bytes:
    """What the socket holds up to the end of a response head (with whatever came after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    return data


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response with a content-length: (head, body)."""
    head, _, body = _read_head(sock).partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


async def _echo(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = b"path=" + scope["path"].encode() + b" body=" + body
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})


def test_responses_on_a_kept_connection_go_through_the_joining_transport() -> None:
    with _Server(_echo) as server, server.connect() as sock:
        for n in range(3):
            sock.sendall(b"POST /n%d HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi" % n)
            head, body = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200")
            assert body == b"path=/n%d body=hi" % n
        (protocol,) = server.server.server_state.connections  # uvicorn internals this module relies on
        assert isinstance(protocol, JoinedHeadHttpProtocol)
        assert isinstance(protocol.cycle.transport, HeadJoiningTransport)
        assert protocol.transport is not protocol.cycle.transport  # the connection keeps the real one


def test_a_streamed_head_is_not_held_waiting_for_its_body() -> None:
    body_may_go = threading.Event()

    async def streaming(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        while not body_may_go.is_set():  # the client must see the head before this body exists
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    with _Server(streaming) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        data = _read_head(sock)
        assert data.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in data
        body_may_go.set()
        while not data.endswith(b"0\r\n\r\n"):
            data += sock.recv(65536)
        assert b"4\r\nlate\r\n" in data


def test_100_continue_goes_out_before_the_request_body() -> None:
    with _Server(_echo) as server, server.connect() as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
        interim = _read_head(sock)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"ok")
        head, body = _read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b"path=/c body=ok"
