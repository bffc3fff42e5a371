"""A lean HTTP/1.1 keep-alive client for the bench's load generators (what wrk or a Go client would cost).

httpx spends several times the API's own CPU per small request (its pool, h11, anyio), so on a 2-core box
the load generator starved the server it measured. This client does the least a keep-alive client must:
the request head is built once per client (only Content-Length and the body vary), one socket write per
request, and the answer is parsed as far as the bench needs (status line, headers up to the blank line, a
Content-Length body). Anything else (a chunked or length-less body, a malformed head) raises
`LeanHttpError` rather than guessing. Not for the product packages: the bench only.

Connections: a pool of up to `max_connections`, newest-idle first. An idle connection is dropped when the
server closed it (EOF seen on the socket) or when it sat unused longer than `keepalive_expiry_s`, so it is
never reused just as the server's keep-alive timeout (uvicorn: 5 s) closes it; a request never retries on
its own (a POST is not idempotent), a failure is the caller's to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
"""Longest response head accepted (status line and headers; the API's are a few hundred bytes), and the
send buffer past which a request waits for the socket to drain."""


class LeanHttpError(RuntimeError):
    """The server answered something this client does not handle, or the connection broke mid-exchange."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str]
    """Header names lower-cased; a repeated header keeps its last value."""


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.writer.close()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, lower-cased headers) of a response head ending in CRLFCRLF; LeanHttpError when malformed."""
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
        raise LeanHttpError(f"malformed status line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise LeanHttpError(f"malformed header line {line[:100]!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return int(status_line[1]), headers


class LeanClient:
    """Requests to one `http://host:port` with fixed extra headers, over kept-alive connections."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        *,
        max_connections: int = 1,
        keepalive_expiry_s: float = 2.0,
        timeout_s: float = 60.0,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"only http://host[:port] base URLs are supported, not {base_url!r}")
        self._host = url.hostname
        self._port = url.port or 80
        self._prefix = url.path.rstrip("/")
        fixed = {"Host": url.netloc, "Connection": "keep-alive", **(headers or {})}
        self._fixed_headers = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._keepalive_expiry_s = keepalive_expiry_s
        self._timeout_s = timeout_s
        self.connections_opened = 0

    def _head(self, method: str, path: str, content_type: str | None, length: int) -> bytes:
        start = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1")
        typed = f"Content-Type: {content_type}\r\n".encode("latin-1") if content_type else b""
        return b"%s%s%sContent-Length: %d\r\n\r\n" % (start, self._fixed_headers, typed, length)

    async def _checkout(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reader.at_eof() or now - conn.idle_since > self._keepalive_expiry_s:
                conn.close()  # closed by the server, or about to be: never sent on
                continue
            return conn
        reader, writer = await asyncio.open_connection(self._host, self._port, limit=MAX_HEAD_BYTES)
        self.connections_opened += 1
        return _Connection(reader, writer)

    async def request(
        self, method: str, path: str, body: bytes = b"", *, content_type: str | None = "application/json"
    ) -> Response:
        """One request and its whole answer; LeanHttpError (or OSError from connect) on failure."""
        async with self._slots:
            conn = await self._checkout()
            try:
                async with asyncio.timeout(self._timeout_s):
                    response, keep = await self._exchange(conn, self._head(method, path, content_type, len(body)), body)
            except BaseException:
                conn.close()
                raise
            if keep:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return response

    async def post(self, path: str, body: bytes, *, content_type: str = "application/json") -> Response:
        return await self.request("POST", path, body, content_type=content_type)

    async def _exchange(self, conn: _Connection, head: bytes, body: bytes) -> tuple[Response, bool]:
        conn.writer.write(head + body)  # one send: the bench's bodies are small
        if conn.writer.transport.get_write_buffer_size() > MAX_HEAD_BYTES:
            await conn.writer.drain()
        try:
            raw_head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            what = "closed the connection" if not exc.partial else "closed the connection inside a response head"
            raise LeanHttpError(f"the server {what}") from None
        except asyncio.LimitOverrunError:
            raise LeanHttpError("response head longer than the reader's limit") from None
        except ConnectionError as exc:
            raise LeanHttpError(f"connection broke: {exc!r}") from exc
        status, headers = parse_head(raw_head)
        if "transfer-encoding" in headers:
            raise LeanHttpError(f"unsupported Transfer-Encoding {headers['transfer-encoding']!r} (status {status})")
        length = headers.get("content-length")
        if length is None:
            if status in (204, 304) or 100 <= status < 200:
                return Response(status, b"", headers), headers.get("connection", "").lower() != "close"
            raise LeanHttpError(f"response without Content-Length (status {status})")
        if not length.isdigit():
            raise LeanHttpError(f"bad Content-Length {length!r}")
        try:
            payload = await conn.reader.readexactly(int(length))
        except asyncio.IncompleteReadError:
            raise LeanHttpError("the server closed the connection inside a response body") from None
        except ConnectionError as exc:
            raise LeanHttpError(f"connection broke: {exc!r}") from exc
        keep = headers.get("connection", "").lower() != "close"
        return Response(status, payload, headers), keep

    async def aclose(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            conn.close()
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()
