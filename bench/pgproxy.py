"""A counting PostgreSQL proxy: forwards bytes both ways and counts the statements clients execute.

PostgreSQL 15 here has no pg_stat_statements, so the `sql` mode points taskyard's DATABASE_URL at this
proxy (with `sslmode=disable`, so the wire is readable) and reads the frontend messages: a simple
query (`Q`) is one statement; in the extended protocol a statement is counted at each `Execute`
(`E`), named by the text of the `Parse` (`P`) its portal was bound (`B`) to. Both directions are
forwarded untouched; only the client->server side is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from collections import Counter

PROTOCOL_3 = 196608
_FIRST_WORD = re.compile(r"^\s*(\w+)", re.S)
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+\"?(\w+)\"?", re.I)


def statement_kind(sql: str) -> str:
    """`SELECT tasks`, `INSERT task_events`, `COMMIT`: the verb and the first table named."""
    word = _FIRST_WORD.match(sql)
    if word is None:
        return "(empty: ping)" if not sql.strip(" ;\n") else "?"  # SQLAlchemy's pool_pre_ping sends `;`
    verb = word.group(1).upper()
    table = _TABLE.search(sql)
    return f"{verb} {table.group(1)}" if table and verb not in ("BEGIN", "COMMIT", "ROLLBACK") else verb


def _cstring(data: bytes, start: int) -> tuple[str, int]:
    end = data.index(b"\0", start)
    return data[start:end].decode(errors="replace"), end + 1


class _Session:
    """One client connection's parse state: named statements and portals."""

    def __init__(self, counts: Counter[str]) -> None:
        self._counts = counts
        self._buffer = b""
        self._started = False
        self._statements: dict[str, str] = {}
        self._portals: dict[str, str] = {}

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if not self._started:
                if len(self._buffer) < 8:
                    return
                length, code = struct.unpack("!II", self._buffer[:8])
                if len(self._buffer) < length:
                    return
                self._buffer = self._buffer[length:]
                self._started = code == PROTOCOL_3  # an SSL/GSS request comes before the startup
                continue
            if len(self._buffer) < 5:
                return
            kind = self._buffer[:1]
            (length,) = struct.unpack("!I", self._buffer[1:5])
            if len(self._buffer) < length + 1:
                return
            body, self._buffer = self._buffer[5 : length + 1], self._buffer[length + 1 :]
            self._message(kind, body)

    def _message(self, kind: bytes, body: bytes) -> None:
        if kind == b"Q":
            self._counts[statement_kind(_cstring(body, 0)[0])] += 1
        elif kind == b"P":
            name, at = _cstring(body, 0)
            self._statements[name] = _cstring(body, at)[0]
        elif kind == b"B":
            portal, at = _cstring(body, 0)
            self._portals[portal] = self._statements.get(_cstring(body, at)[0], "?")
        elif kind == b"E":
            self._counts[statement_kind(self._portals.get(_cstring(body, 0)[0], "?"))] += 1


class CountingProxy:
    """Listens on 127.0.0.1:`port` and forwards to the PostgreSQL at `upstream`; `counts` per statement kind."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.counts: Counter[str] = Counter()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        session = _Session(self.counts)
        pipes = [
            asyncio.create_task(self._pump(reader, up_writer, session)),
            asyncio.create_task(self._pump(up_reader, writer, None)),
        ]
        self._pipes.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
            self._pipes.discard(pipe)
        for w in (writer, up_writer):
            w.close()

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, session: _Session | None) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                if session is not None:
                    session.feed(data)
                dst.write(data)
                await dst.drain()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
