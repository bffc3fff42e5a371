"""The bench's lean HTTP client against a real local socket server scripted per request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bench.ty.lean_http import LeanClient, LeanHttpError, parse_head

Reply = Callable[[bytes, bytes], bytes | None]
"""(request head, request body) -> raw bytes to answer, or None to close the connection unanswered."""


def ok(body: bytes, *, status: str = "201 Created", extra: str = "") -> Reply:
    return lambda _head, _body: (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


class Server:
    """Answers each request with the next scripted reply; records what it received and its connections."""

    def __init__(self, replies: list[Reply], *, close_after_each: bool = False) -> None:
        self.replies = replies
        self.close_after_each = close_after_each
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                answer = self.replies.pop(0)(head, body)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_each:
                    return
        finally:
            writer.close()

    def drop_idle(self) -> None:
        """What a server's keep-alive timeout does: close every connection it holds."""
        for writer in self.writers:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(replies: list[Reply], **kwargs: bool) -> Server:
        server = Server(replies, **kwargs)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(listener)
        server.port = listener.sockets[0].getsockname()[1]
        return server

    yield start
    for listener in servers:
        listener.close()


async def test_post_sends_fixed_headers_and_body_and_reads_the_answer(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve([ok(b'{"id":"t-1"}'), ok(b'{"id":"t-2"}')])
    client = LeanClient(f"http://127.0.0.1:{server.port}", {"Authorization": "Bearer tok"})
    first = await client.post("/api/tasks", b'{"type":"noop"}')
    second = await client.post("/api/tasks", b"{}")
    await client.aclose()
    assert (first.status, first.body, second.body) == (201, b'{"id":"t-1"}', b'{"id":"t-2"}')
    assert first.headers["content-type"] == "application/json"
    head, body = server.requests[0]
    assert head.startswith(b"POST /api/tasks HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer tok\r\n" in head
    assert b"\r\nContent-Length: 15\r\n" in head
    assert b"\r\nHost: 127.0.0.1:" in head
    assert body == b'{"type":"noop"}'
    assert server.requests[1][1] == b"{}"
    assert (server.connections, client.connections_opened) == (1, 1)  # kept alive


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    server = await serve([ok(b"1"), ok(b"2")])
    client = LeanClient(f"http://127.0.0.1:{server.port}")
    assert (await client.post("/x", b"")).body == b"1"
    server.drop_idle()
    await asyncio.sleep(0.05)  # the FIN reaches the client's reader
    assert (await client.post("/x", b"")).body == b"2"
    await client.aclose()
    assert client.connections_opened == 2


async def test_connections_idle_past_the_expiry_are_replaced(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve([ok(b"1"), ok(b"2")])
    client = LeanClient(f"http://127.0.0.1:{server.port}", keepalive_expiry_s=0.0)
    await client.post("/x", b"")
    await asyncio.sleep(0.01)
    await client.post("/x", b"")
    await client.aclose()
    assert client.connections_opened == 2


async def test_connection_close_answer_is_honoured(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve([ok(b"1", extra="connection: close\r\n"), ok(b"2")], close_after_each=True)
    client = LeanClient(f"http://127.0.0.1:{server.port}")
    await client.post("/x", b"")
    assert (await client.post("/x", b"")).body == b"2"
    await client.aclose()
    assert client.connections_opened == 2


async def test_refusals_come_back_as_their_status(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve([ok(b'{"error":"rate_limited"}', status="429 Too Many Requests")])
    client = LeanClient(f"http://127.0.0.1:{server.port}")
    answer = await client.post("/api/tasks", b"{}")
    await client.aclose()
    assert (answer.status, answer.body) == (429, b'{"error":"rate_limited"}')


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            lambda _h, _b: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "Transfer-Encoding",
        ),
        (lambda _h, _b: b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nabc", "without Content-Length"),
        (lambda _h, _b: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", "inside a response body"),
        (lambda _h, _b: b"SPDY 200 OK\r\ncontent-length: 0\r\n\r\n", "malformed status line"),
        (lambda _h, _b: None, "closed the connection"),
    ],
)
async def test_unexpected_answers_raise_a_clear_error(
    serve: Callable[..., Awaitable[Server]], reply: Reply, message: str
) -> None:
    server = await serve([reply], close_after_each=True)  # a short body then EOF, not a hang
    client = LeanClient(f"http://127.0.0.1:{server.port}")
    with pytest.raises(LeanHttpError, match=message):
        await client.post("/x", b"{}")
    await client.aclose()


def test_parse_head_lowercases_names_and_rejects_broken_lines() -> None:
    status, headers = parse_head(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nX-Request-Id: abc\r\n\r\n")
    assert (status, headers) == (202, {"content-length": "2", "x-request-id": "abc"})
    with pytest.raises(LeanHttpError, match="malformed header"):
        parse_head(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n")
