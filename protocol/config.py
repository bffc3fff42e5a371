"""The one settings loader api, scheduler and worker share: fields declared once, read from env (and a YAML file).

A package declares its settings as frozen dataclasses or msgspec Structs whose fields carry the type, the
default and a docstring underneath (the docs' tables are generated from those). `load_group` fills one such
class from the environment and an optional file section (the API's YAML file, which the API parses),
converting each value by its type and checking the bounds written as `msgspec.Meta` in `Annotated` (e.g.
`Annotated[int, AT_LEAST_ONE]`); each package adds only the checks that span fields. Problems are
collected, never raised one at a time, so one run lists them all.

It lives in `protocol/` because that is the only layer all three may import; like the rest of `protocol/` it
imports nothing of ours and no third-party package but msgspec.
"""

from __future__ import annotations

import ast
import dataclasses
import hmac
import inspect
import math
import sys
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

__all__ = (
    "AT_LEAST_ONE",
    "NOT_NEGATIVE",
    "POSITIVE",
    "Secret",
    "convert",
    "field_docs",
    "field_types",
    "load_group",
)

_T = TypeVar("_T")

POSITIVE = msgspec.Meta(gt=0)
"""Bound for durations and sizes that must be above zero."""
NOT_NEGATIVE = msgspec.Meta(ge=0)
"""Bound for values where 0 means off."""
AT_LEAST_ONE = msgspec.Meta(ge=1)
"""Bound for counts."""

_MASK = "**********"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Secret:
    """A string that never shows itself in repr/str/logs; `.reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK


def _bounds(value: float, metas: Collection[object]) -> None:
    for meta in metas:
        if not isinstance(meta, msgspec.Meta):
            continue
        if meta.gt is not None and not value > meta.gt:
            raise ValueError(f"must be above {meta.gt:g}")
        if meta.ge is not None and not value >= meta.ge:
            raise ValueError(f"must be at least {meta.ge:g}")
        if meta.lt is not None and not value < meta.lt:
            raise ValueError(f"must be below {meta.lt:g}")
        if meta.le is not None and not value <= meta.le:
            raise ValueError(f"must be at most {meta.le:g}")


def _unwrap(hint: Any) -> tuple[Any, tuple[object, ...], bool]:
    """(base type, its Annotated metadata, whether None is allowed), through `X | None` and `Annotated`."""
    metas: tuple[object, ...] = ()
    optional = False
    while True:
        if typing.get_origin(hint) is Annotated:
            hint, *extra = typing.get_args(hint)
            metas += tuple(extra)
        elif typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            optional = optional or len(args) < len(typing.get_args(hint))
            (hint,) = args
        else:
            return hint, metas, optional


def _int(raw: object) -> int:
    if isinstance(raw, bool | float):
        raise ValueError("expected an integer")
    try:
        return int(str(raw))
    except ValueError:
        raise ValueError("expected an integer") from None


def _float(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number")
    try:
        value = float(str(raw))
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected a boolean (1/0, true/false, yes/no, on/off)")


def _tuple(raw: object) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


_SCALARS: dict[Any, Callable[[object], object]] = {
    bool: _bool,
    int: _int,
    float: _float,
    Secret: lambda raw: Secret(str(raw)),
    Path: lambda raw: Path(str(raw)),
}


def convert(raw: object, hint: Any) -> object:
    """An env string or a YAML value as `hint` says; ValueError (worded for a person) when it does not fit."""
    hint, metas, optional = _unwrap(hint)
    if raw is None and optional:
        return None
    text = raw.strip() if isinstance(raw, str) else raw
    origin = typing.get_origin(hint)
    value: object
    if origin is tuple:
        value = _tuple(text)
    elif origin is Literal:
        choices = typing.get_args(hint)
        value = str(text).lower()
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(map(str, choices)))
    else:
        value = _SCALARS.get(hint, str)(text)
    if isinstance(value, int | float) and not isinstance(value, bool):
        _bounds(value, metas)
    return value


def field_types(cls: type[Any]) -> dict[str, Any]:
    """Field name -> annotated type of a settings dataclass or msgspec Struct, in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    if dataclasses.is_dataclass(cls):
        return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}
    return {name: hints[name] for name in cls.__struct_fields__}


def load_group(
    cls: type[_T],
    environ: Mapping[str, str],
    problems: list[str],
    *,
    env_name: Callable[[str], str],
    section: Mapping[str, object] | None = None,
    section_name: str = "",
    checks: Mapping[str, Callable[[Any], Any]] | None = None,
    skip: Collection[str] = (),
) -> _T:
    """`cls` filled from `environ` (winning) and the file's `section`; defaults for the rest.

    A blank variable counts as unset. Every bad value adds one `NAME: why` line to `problems`; `checks`
    maps a field to a function that refines its converted value or raises ValueError. Fields in `skip` are
    left to the caller (they come from elsewhere, like `HTTP_ADDR`).
    """
    section = section or {}
    types_ = field_types(cls)
    for name in sorted(set(section) - set(types_)):
        problems.append(f"TASKYARD_CONFIG: unknown field {section_name}.{name}")
    values: dict[str, object] = {}
    for name, hint in types_.items():
        if name in skip:
            continue
        var = env_name(name)
        raw: object
        if environ.get(var, "").strip():
            raw, source = environ[var], var
        elif name in section:
            raw, source = section[name], f"TASKYARD_CONFIG {section_name}.{name}"
        else:
            continue
        try:
            value = convert(raw, hint)
            check = (checks or {}).get(name)
            values[name] = check(value) if check is not None and value is not None else value
        except ValueError as exc:
            problems.append(f"{source}: {exc}")
    return cls(**values)


def field_docs(cls: type[Any]) -> dict[str, tuple[str, str]]:
    """Field name -> (the docstring under it, its default as written), read from the source for the docs."""
    tree = ast.parse(inspect.getsource(sys.modules[cls.__module__]))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            out: dict[str, tuple[str, str]] = {}
            body = node.body
            for i, stmt in enumerate(body):
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                following = body[i + 1] if i + 1 < len(body) else None
                doc = ""
                if (
                    isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                ):
                    doc = " ".join(following.value.value.split())
                out[stmt.target.id] = (doc, ast.unparse(stmt.value) if stmt.value is not None else "")
            return out
    raise LookupError(cls.__name__)
