"""The shared settings loader: conversion by type, bounds from Annotated, env over file, every problem at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest

from protocol.config import (
    AT_LEAST_ONE,
    NOT_NEGATIVE,
    POSITIVE,
    Secret,
    convert,
    field_docs,
    load_group,
)


@dataclass(frozen=True)
class Group:
    count: Annotated[int, AT_LEAST_ONE] = 1
    """How many."""
    ratio: Annotated[float, POSITIVE] | None = None
    """A ratio, or none."""
    grace_s: Annotated[float, NOT_NEGATIVE] = 0.0
    """0: off."""
    on: bool = False
    names: tuple[str, ...] = ()
    token: Secret = field(default_factory=lambda: Secret(""))
    mode: Literal["a", "b"] = "a"
    where: Path = Path()


class Struct(msgspec.Struct, frozen=True, kw_only=True):
    count: Annotated[int, AT_LEAST_ONE] = 1
    label: str = "x"


def _env(name: str) -> str:
    return "PFX_" + name.upper()


def test_every_type_is_converted_from_its_env_string() -> None:
    problems: list[str] = []
    environ = {
        "PFX_COUNT": " 7 ",
        "PFX_RATIO": "0.5",
        "PFX_GRACE_S": "0",
        "PFX_ON": "yes",
        "PFX_NAMES": "a, b,,c",
        "PFX_TOKEN": "hunter2",
        "PFX_MODE": "B",
        "PFX_WHERE": "/tmp/x",
    }
    group = load_group(Group, environ, problems, env_name=_env)
    assert problems == []
    assert (group.count, group.ratio, group.grace_s, group.on) == (7, 0.5, 0.0, True)
    assert group.names == ("a", "b", "c")
    assert group.token.reveal() == "hunter2"
    assert "hunter2" not in repr(group)
    assert (group.mode, group.where) == ("b", Path("/tmp/x"))


def test_blank_is_unset_and_env_wins_over_the_file_section() -> None:
    problems: list[str] = []
    section = {"count": 3, "label": "file"}
    got = load_group(Struct, {"PFX_COUNT": "", "PFX_LABEL": "env"}, problems, env_name=_env, section=section)
    assert (got.count, got.label) == (3, "env")
    assert problems == []


def test_every_bad_value_is_one_line_naming_its_variable() -> None:
    problems: list[str] = []
    environ = {"PFX_COUNT": "0", "PFX_RATIO": "-1", "PFX_GRACE_S": "nan", "PFX_ON": "maybe", "PFX_MODE": "c"}
    group = load_group(Group, environ, problems, env_name=_env, section={"nope": 1}, section_name="g")
    assert problems == [
        "TASKYARD_CONFIG: unknown field g.nope",
        "PFX_COUNT: must be at least 1",
        "PFX_RATIO: must be above 0",
        "PFX_GRACE_S: expected a finite number",
        "PFX_ON: expected a boolean (1/0, true/false, yes/no, on/off)",
        "PFX_MODE: must be one of a, b",
    ]
    assert group == Group()  # bad values keep their defaults, so later checks still run


def test_file_values_are_checked_and_named_by_their_section() -> None:
    problems: list[str] = []
    load_group(Struct, {}, problems, env_name=_env, section={"count": True}, section_name="s")
    assert problems == ["TASKYARD_CONFIG s.count: expected an integer"]


def test_checks_refine_a_converted_value_or_refuse_it() -> None:
    def upper(value: str) -> str:
        if value == "bad":
            raise ValueError("not that one")
        return value.upper()

    problems: list[str] = []
    assert load_group(Struct, {"PFX_LABEL": "ok"}, problems, env_name=_env, checks={"label": upper}).label == "OK"
    load_group(Struct, {"PFX_LABEL": "bad"}, problems, env_name=_env, checks={"label": upper})
    assert problems == ["PFX_LABEL: not that one"]


def test_convert_keeps_none_for_optional_fields() -> None:
    assert convert(None, Annotated[int, AT_LEAST_ONE] | None) is None
    with pytest.raises(ValueError, match="at least 1"):
        convert("0", Annotated[int, AT_LEAST_ONE] | None)


def test_secrets_compare_by_value_and_never_show_it() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert not Secret("")
    assert str(Secret("a")) == "**********"
    assert repr(Secret("a")) == "Secret('**********')"


def test_field_docs_reads_the_docstring_under_each_field() -> None:
    docs = field_docs(Group)
    assert docs["count"] == ("How many.", "1")
    assert docs["ratio"] == ("A ratio, or none.", "None")
    assert docs["on"] == ("", "False")
