"""The entry points' event loop: uvloop when installed, the stdlib loop when not."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest

import scheduler.runtime
import worker.runtime


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize("module", [scheduler.runtime, worker.runtime])
def test_runs_on_uvloop_when_installed(module: Any) -> None:
    pytest.importorskip("uvloop")
    assert module.run(_loop_module()).startswith("uvloop")


@pytest.mark.parametrize("module", [scheduler.runtime, worker.runtime])
def test_falls_back_to_asyncio_without_uvloop(module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert module.run(_loop_module()).startswith("asyncio")
