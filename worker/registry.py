"""Task type -> handler, with each handler's declared input type. Knows nothing of sockets or frames.

A handler is `async def handle(input: SomeStruct, ctx: TaskContext[Resources]) -> Output` (or a plain
`def`, which the runtime runs in a thread so the event loop keeps heartbeating). The input type is read
from the first parameter's annotation (or given explicitly) and enforced by msgspec before the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import inspect
import threading
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from protocol.limits import TaskType
from worker.errors import InputValidationError, RegistryError

if typing.TYPE_CHECKING:
    from worker.context import TaskContext

__all__ = ("HandlerSpec", "Registry", "load_registry")

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_INFER: Any = object()
"""Sentinel: read the input type from the handler's first parameter annotation."""


@dataclass(frozen=True, slots=True)
class HandlerSpec(Generic[R]):
    """One registered handler.

    Attributes:
        type: the task type it serves.
        fn: the handler, called as `fn(input, ctx)`.
        input_type: the type the input JSON is decoded into (`Any` when undeclared).
        is_async: True for coroutine functions; sync ones run in a thread.
    """

    type: str
    fn: Callable[[Any, TaskContext[R]], Any]
    input_type: Any
    is_async: bool

    def decode_input(self, input_json: bytes) -> Any:
        """Decode and validate the task's input JSON into `input_type`.

        Raises:
            InputValidationError: the input does not match (the message names the field).
        """
        try:
            return msgspec.json.decode(input_json, type=self.input_type)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise InputValidationError(str(exc)) from exc

    async def call(self, value: Any, ctx: TaskContext[R]) -> Any:
        """Run the handler on an already decoded input and return its output."""
        if self.is_async:
            return await self.fn(value, ctx)
        return await _run_in_thread(self.fn, value, ctx)


async def _run_in_thread(fn: Callable[[Any, TaskContext[R]], Any], value: Any, ctx: TaskContext[R]) -> Any:
    """Run a sync handler in a daemon thread of its own.

    Not `asyncio.to_thread`: a sync handler cannot be interrupted, and the default executor's threads are
    joined at exit, so one stuck handler would keep a drained worker from exiting. A daemon thread is
    abandoned instead (its task was already handed back). Concurrency is bounded by the agent's slots.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = context.run(fn, value, ctx)
        except BaseException as exc:  # handed to the awaiting coroutine, which decides what it means
            error = exc
            _call_soon(loop, settle, lambda: future.set_exception(error))
        else:
            _call_soon(loop, settle, lambda: future.set_result(result))

    threading.Thread(target=target, name=f"handler-{ctx.task_id}", daemon=True).start()
    return await future


def _call_soon(
    loop: asyncio.AbstractEventLoop, fn: Callable[[Callable[[], None]], None], arg: Callable[[], None]
) -> None:
    # RuntimeError: the loop closed while the thread ran, so nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, arg)


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _infer_input_type(fn: Callable[..., Any]) -> Any:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"cannot read the signature of {fn!r}") from exc
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2:
        raise RegistryError(f"handler {fn!r} must take (input, ctx)")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # any failure to resolve a forward reference
        raise RegistryError(
            f"cannot resolve the annotations of {fn!r} ({exc}); define the input type at module level "
            "or pass input_type="
        ) from exc
    return hints.get(positional[0].name, Any)


class Registry(Generic[R]):
    """Maps task types to handlers. `R` is the resources type handlers get as `ctx.resources`.

    Example::

        registry: Registry[MyResources] = Registry()

        @registry.handler("summarize")
        async def summarize(input: SummarizeInput, ctx: TaskContext[MyResources]) -> SummarizeOutput: ...
    """

    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec[R]] = {}

    def handler(self, task_type: str, *, input_type: Any = _INFER) -> Callable[[F], F]:
        """Decorator: register the function for `task_type` and return it unchanged.

        Raises:
            RegistryError: the type is invalid or taken, or the function's signature is not `(input, ctx)`.
        """

        def decorate(fn: F) -> F:
            self.register(task_type, fn, input_type=input_type)
            return fn

        return decorate

    def register(
        self, task_type: str, fn: Callable[[Any, TaskContext[R]], Any], *, input_type: Any = _INFER
    ) -> HandlerSpec[R]:
        """Register `fn` for `task_type`; `input_type` defaults to the first parameter's annotation.

        Raises:
            RegistryError: the type is invalid or taken, or the function's signature is not `(input, ctx)`.
        """
        try:
            msgspec.convert(task_type, type=TaskType)
        except msgspec.ValidationError as exc:
            raise RegistryError(f"invalid task type {task_type!r}: {exc}") from exc
        if task_type in self._specs:
            raise RegistryError(f"task type {task_type!r} is already registered")
        resolved = _infer_input_type(fn) if input_type is _INFER else input_type
        spec = HandlerSpec(type=task_type, fn=fn, input_type=resolved, is_async=_is_async_callable(fn))
        self._specs[task_type] = spec
        return spec

    def include(self, other: Registry[Any]) -> None:
        """Add every handler of `other`.

        Raises:
            RegistryError: a type is registered in both.
        """
        clash = sorted(set(self._specs) & set(other._specs))
        if clash:
            raise RegistryError(f"task types registered twice: {', '.join(clash)}")
        self._specs.update(other._specs)

    def get(self, task_type: str) -> HandlerSpec[R] | None:
        """The handler for `task_type`, or None."""
        return self._specs.get(task_type)

    @property
    def types(self) -> tuple[str, ...]:
        """Registered task types, sorted."""
        return tuple(sorted(self._specs))

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._specs

    def __iter__(self) -> Iterator[HandlerSpec[R]]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)


def load_registry(ref: str) -> Registry[Any]:
    """Import `module:attr`: a `Registry`, or a callable with no arguments that returns one.

    Raises:
        RegistryError: the module or attribute is missing, or is not a registry.
    """
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
        target = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"cannot load handlers {ref!r}: {exc}") from exc
    if not isinstance(target, Registry) and callable(target) and not _is_async_callable(target):
        try:
            target = target()
        except TypeError as exc:  # a callable that wants arguments is not a registry factory
            raise RegistryError(f"{ref!r} is not a worker.Registry or a factory of one: {exc}") from exc
    if not isinstance(target, Registry):
        raise RegistryError(f"{ref!r} is not a worker.Registry")
    return target
