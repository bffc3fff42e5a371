"""The fake OpenAI-compatible server: plain asyncio HTTP/1.1 (keep-alive, chunked SSE), so a cut is a real cut."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ("FakeLlmServer", "Step")

_BENCH_MODEL = re.compile(r"^stream-(\d+)x(\d+)ms$")
_WORDS = re.compile(r"\S+\s*|\s+")


@dataclass
class Step:
    """One scripted answer (see the package docstring)."""

    text: str | None = None
    tokens: list[str] | None = None
    """The text as it is streamed (default: word by word)."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """`{"name": ..., "arguments": {...} | "json text"}`; arguments are streamed in two fragments."""
    finish_reason: str | None = None
    token_delay_ms: float = 0.0
    cut_after: int | None = None
    """Close the connection after this many content chunks, without finishing the stream."""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    """Error body for a status >= 300 (default: an OpenAI-style error)."""
    stamp: bool = False
    """Append `@<unix time>` to each token as it is sent (the bench measures delivery latency with it)."""

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Step:
        return cls(**raw)


class FakeLlmServer:
    """Serve until cancelled: `await server.start()`, `server.port`, `await server.stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None
        self.scripts: dict[str, list[Step]] = {}
        self.requests: list[dict[str, Any]] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port, limit=1 << 20, backlog=2048)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # --- HTTP ----------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = await self._route(method, target.split("?", 1)[0], body, headers, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(
        self, method: str, path: str, body: bytes, headers: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        if method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(json.loads(body or b"{}"), headers, writer)
        if method == "POST" and path == "/_script":
            data = json.loads(body)
            self.scripts[data["model"]] = [Step.of(s) for s in data["steps"]]
            return await _json(writer, 200, {"ok": True})
        if method == "POST" and path == "/_reset":
            self.scripts.clear()
            self.requests.clear()
            return await _json(writer, 200, {"ok": True})
        if method == "GET" and path == "/_requests":
            return await _json(writer, 200, self.requests)
        if method == "GET" and path == "/healthz":
            return await _json(writer, 200, {"ok": True})
        return await _json(writer, 404, {"error": {"message": "not found", "type": "not_found"}})

    def _next_step(self, model: str, messages: list[dict[str, Any]]) -> Step:
        script = self.scripts.get(model)
        if script:
            return script.pop(0) if len(script) > 1 else script[0]
        bench = _BENCH_MODEL.match(model)
        if bench:
            count, delay = int(bench.group(1)), float(bench.group(2))
            return Step(tokens=[f"t{i}" for i in range(count)], token_delay_ms=delay, stamp=True)
        last = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        return Step(text=f"echo: {last}")

    async def _chat(self, req: dict[str, Any], headers: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        model = str(req.get("model", ""))
        messages = req.get("messages") or []
        self.requests.append(
            {
                "model": model,
                "at": time.time(),
                "messages": messages,
                "tools": req.get("tools"),
                "responseFormat": req.get("response_format"),
                "stream": bool(req.get("stream")),
                "authorization": headers.get("authorization", ""),
            }
        )
        step = self._next_step(model, messages)
        if step.status >= 300:
            body = step.body if step.body is not None else {"error": {"message": f"scripted {step.status}"}}
            return await _json(writer, step.status, body, step.headers)
        tokens = step.tokens if step.tokens is not None else _WORDS.findall(step.text or "")
        usage = {
            "prompt_tokens": sum(len(str(m.get("content") or "").split()) for m in messages),
            "completion_tokens": len(tokens),
            "total_tokens": 0,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        finish = step.finish_reason or ("tool_calls" if step.tool_calls else "stop")
        if not req.get("stream"):
            return await _json(writer, 200, _completion(model, "".join(tokens), step.tool_calls, finish, usage))
        return await self._stream(writer, model, tokens, step, finish, usage)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        model: str,
        tokens: list[str],
        step: Step,
        finish: str,
        usage: dict[str, int],
    ) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"cache-control: no-cache\r\n\r\n"
        )
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]

        async def event(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> None:
            chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model}
            chunk["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
            chunk.update(extra)
            data = b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()

        await event({"role": "assistant", "content": ""})
        for index, token in enumerate(tokens):
            if step.cut_after is not None and index >= step.cut_after:
                writer.transport.abort()  # a dropped stream: no final chunk, no [DONE]
                return False
            if step.token_delay_ms:
                await asyncio.sleep(step.token_delay_ms / 1000)
            await event({"content": f"{token}@{time.time():.6f} " if step.stamp else token})
        for index, call in enumerate(step.tool_calls):
            arguments = call.get("arguments", {})
            text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            half = len(text) // 2
            first = {"index": index, "id": f"call_{index}", "type": "function"}
            await event({"tool_calls": [{**first, "function": {"name": call["name"], "arguments": text[:half]}}]})
            await event({"tool_calls": [{"index": index, "function": {"arguments": text[half:]}}]})
        await event({}, finish)
        await event(None, usage=usage)
        done = b"data: [DONE]\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        await writer.drain()
        return True


def _completion(
    model: str, text: str, calls: list[dict[str, Any]], finish: str, usage: dict[str, int]
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": c["name"],
                    "arguments": c["arguments"] if isinstance(c["arguments"], str) else json.dumps(c["arguments"]),
                },
            }
            for i, c in enumerate(calls)
        ]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:12],
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


async def _json(writer: asyncio.StreamWriter, status: int, body: Any, headers: dict[str, str] | None = None) -> bool:
    data = json.dumps(body, ensure_ascii=False).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n{extra}\r\n".encode()
        + data
    )
    await writer.drain()
    return True
