from __future__ import annotations

from typing import Any

import msgspec
import pytest

from worker.context import TaskContext
from worker.errors import InputValidationError, RegistryError
from worker.registry import Registry, load_registry


class Greeting(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    name: str
    times_count: int = 1


async def greet(input: Greeting, ctx: TaskContext[None]) -> str:
    return input.name


def sync_greet(input: Greeting, ctx: TaskContext[None]) -> str:
    return input.name


async def untyped(input, ctx):  # type: ignore[no-untyped-def]
    return input


example_registry: Registry[None] = Registry()
example_registry.register("example.greet", greet)


def make_example_registry() -> Registry[None]:
    return example_registry


def test_input_type_comes_from_the_first_annotation() -> None:
    registry: Registry[None] = Registry()
    spec = registry.register("greet", greet)
    assert spec.input_type is Greeting
    assert spec.is_async
    assert spec.decode_input(b'{"name": "ada", "timesCount": 2}') == Greeting(name="ada", times_count=2)


def test_sync_handlers_are_marked_to_run_in_a_thread() -> None:
    assert not Registry[None]().register("greet", sync_greet).is_async


def test_unannotated_input_decodes_to_plain_json() -> None:
    spec = Registry[Any]().register("any", untyped)
    assert spec.input_type is Any
    assert spec.decode_input(b'{"a": [1, 2]}') == {"a": [1, 2]}


def test_explicit_input_type_wins() -> None:
    spec = Registry[Any]().register("any", untyped, input_type=Greeting)
    assert spec.decode_input(b'{"name": "x"}') == Greeting(name="x")


def test_bad_input_raises_input_validation_error_naming_the_field() -> None:
    spec = Registry[None]().register("greet", greet)
    with pytest.raises(InputValidationError, match="name"):
        spec.decode_input(b'{"name": 3}')
    with pytest.raises(InputValidationError, match="unknown field"):
        spec.decode_input(b'{"name": "x", "extra": 1}')


def test_decorator_registers_and_returns_the_function() -> None:
    registry: Registry[None] = Registry()
    decorated = registry.handler("greet")(greet)
    assert decorated is greet
    assert "greet" in registry
    assert registry.types == ("greet",)


def test_duplicate_and_invalid_types_are_refused() -> None:
    registry: Registry[None] = Registry()
    registry.register("greet", greet)
    with pytest.raises(RegistryError, match="already registered"):
        registry.register("greet", greet)
    with pytest.raises(RegistryError, match="invalid task type"):
        registry.register("bad type!", greet)
    with pytest.raises(RegistryError, match="input, ctx"):
        registry.register("one-arg", lambda x: x)  # type: ignore[arg-type,misc]


def test_include_refuses_clashes() -> None:
    first: Registry[None] = Registry()
    first.register("greet", greet)
    second: Registry[None] = Registry()
    second.register("greet", sync_greet)
    with pytest.raises(RegistryError, match="greet"):
        first.include(second)


def test_load_registry_takes_an_object_or_a_factory() -> None:
    assert "example.greet" in load_registry(f"{__name__}:example_registry")
    assert "example.greet" in load_registry(f"{__name__}:make_example_registry")
    with pytest.raises(RegistryError):
        load_registry(f"{__name__}:greet")
    with pytest.raises(RegistryError):
        load_registry("no_such_module_xyz:registry")
