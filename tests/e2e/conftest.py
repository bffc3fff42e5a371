"""Fixtures for end-to-end tests: a fresh stack of real processes per test."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import own_database
from tests.e2e.stack import Stack


@pytest.fixture
def e2e_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: PostgreSQL when present (required in CI), else SQLite."""
    yield from own_database("taskyard_e2e", tmp_path)


@pytest.fixture
def stack(tmp_path: Path, e2e_database_url: str, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Redis, a migrated database, one API and one scheduler; tests add agents and more processes."""
    with running_stack(tmp_path, e2e_database_url, request) as the_stack:
        yield the_stack


@pytest.fixture
def make_stack(tmp_path: Path, e2e_database_url: str, request: pytest.FixtureRequest) -> Iterator[StackFactory]:
    """Like `stack`, with the test's own environment for every process (call it once)."""
    with contextlib.ExitStack() as stacks:

        def build(**env: str) -> Stack:
            return stacks.enter_context(running_stack(tmp_path, e2e_database_url, request, env))

        yield build


StackFactory = Callable[..., Stack]


@contextlib.contextmanager
def running_stack(
    tmp_path: Path, database_url: str, request: pytest.FixtureRequest, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    the_stack = Stack(
        workdir=tmp_path, database_url=database_url, prefix=f"e2e:{secrets.token_hex(4)}", extra_env=dict(env or {})
    )
    try:
        the_stack.start_redis()
        the_stack.migrate()
        the_stack.start_api()
        the_stack.start_scheduler()
        yield the_stack
    except BaseException:
        print(the_stack.logs())
        raise
    finally:
        if request.node.stash.get(_FAILED_KEY, False):
            print(the_stack.logs())
        the_stack.stop()


_FAILED_KEY = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED_KEY] = True
    return report
