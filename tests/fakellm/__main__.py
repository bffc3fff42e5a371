"""`python -m tests.fakellm [--host H] [--port P]`: run the fake LLM server; prints `listening on PORT`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from tests.fakellm.server import FakeLlmServer


async def _main(host: str, port: int) -> None:
    server = FakeLlmServer(host, port)
    await server.start()
    print(f"listening on {server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.fakellm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.host, args.port))
