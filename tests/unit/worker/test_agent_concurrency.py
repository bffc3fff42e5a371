"""The agent's slots follow the server's record (`auth/ok` `concurrency`), under the local cap, and say so."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.unit.worker.fake_api import WAIT_S, FakeApi
from tests.unit.worker.test_agent import Gate, gated_registry, make_settings, running
from worker import Agent
from worker.slots import Slots, choose_concurrency


def _concurrency_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("concurrency ")]


async def _until(predicate: object, what: str) -> None:
    async def poll() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), WAIT_S)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_the_server_record_sets_the_slots_and_a_higher_local_setting_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.agent")
    gate = Gate()
    async with FakeApi(features=["batch"], concurrency=3) as api:
        agent = Agent(make_settings(api, concurrency=16), gated_registry(gate))
        async with running(agent):
            await api.submit_batch([f"t{i}" for i in range(6)], "gated")
            await gate.wait_active(3)
            await api.wait_for(lambda: any(b.running == 3 and b.capacity == 0 for b in api.heartbeats()))
            assert agent.concurrency == 3
            gate.opened.set()
            await api.wait_for(lambda: len(api.frames("task/result")) == 6)
        assert gate.peak == 3
    assert _concurrency_lines(caplog) == ["concurrency 3 (server record; TASKYARD_WORKER_CONCURRENCY=16 ignored)"]


async def test_a_changed_record_applies_on_reconnect_and_is_logged_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.agent")
    async with FakeApi(features=["batch"], concurrency=8) as api:
        agent = Agent(make_settings(api, concurrency=None), gated_registry(Gate()))
        async with running(agent):
            await _until(lambda: agent.concurrency == 8 and agent.connected.is_set(), "the first connection")
            api.concurrency = 20
            await api.drop()
            await _until(lambda: agent.concurrency == 20, "the record of the second connection")
            await api.drop()  # same record again: nothing new to say
            await api.wait_for(lambda: api.connections == 3)
            await _until(agent.connected.is_set, "the third connection")
    assert _concurrency_lines(caplog) == ["concurrency 8 (server record)", "concurrency 20 (server record)"]


async def test_an_older_server_without_a_record_leaves_the_local_setting() -> None:
    gate = Gate()
    async with FakeApi() as api:
        agent = Agent(make_settings(api, concurrency=2), gated_registry(gate))
        async with running(agent):
            for i in range(4):
                await api.submit(f"t{i}", "gated")
            await gate.wait_active(2)
            await api.wait_for(lambda: any(b.running == 2 and b.capacity == 0 for b in api.heartbeats()))
            gate.opened.set()
            await api.wait_for(lambda: len(api.frames("task/result")) == 4)
        assert agent.concurrency == 2
        assert gate.peak == 2


def test_choose_concurrency_takes_the_smaller_and_names_its_reason() -> None:
    var = "TASKYARD_WORKER_CONCURRENCY"
    assert choose_concurrency(8, None) == (8, "server record")
    assert choose_concurrency(8, 16) == (8, f"server record; {var}=16 ignored")
    assert choose_concurrency(8, 2) == (2, f"server record 8 capped by {var}=2")
    assert choose_concurrency(None, 5) == (5, f"the server sends no record; {var}")
    assert choose_concurrency(None, None) == (16, f"the server sends no record; {var} unset, the default")


async def test_slots_shrink_without_stopping_holders_and_grow_to_start_waiters() -> None:
    slots = Slots(2)
    started: list[int] = []
    release = [asyncio.Event() for _ in range(4)]

    async def hold(i: int) -> None:
        async with slots:
            started.append(i)
            await release[i].wait()

    tasks = [asyncio.create_task(hold(i)) for i in range(4)]
    await _until(lambda: started == [0, 1], "two holders")
    slots.resize(1)
    release[0].set()
    await tasks[0]
    assert started == [0, 1]  # one still held and the limit is 1: nobody new
    assert slots.free == 0
    slots.resize(3)
    await _until(lambda: started == [0, 1, 2, 3], "the waiters, in order")
    for event in release:
        event.set()
    await asyncio.gather(*tasks)
    assert slots.free == 3


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    slots = Slots(1)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with slots:
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await held.wait()
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    assert slots.free == 1
