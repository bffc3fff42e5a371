from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import msgspec
import pytest

from protocol.envelope import MESSAGE_TYPES, MessageType
from protocol.schema import DEFAULT_OUTPUT, build_schema, main, render_schema

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_schema_file_is_fresh() -> None:
    # Regenerated in memory: a change to protocol/ without `make schema` fails here.
    assert DEFAULT_OUTPUT == DOCS / "protocol.schema.json"
    assert DEFAULT_OUTPUT.read_text(encoding="utf-8") == render_schema()


def test_schema_has_one_envelope_per_message_type() -> None:
    schema = build_schema()

    refs = [branch["$ref"].rsplit("/", 1)[1] for branch in schema["oneOf"]]
    assert len(refs) == len(MESSAGE_TYPES)
    for ref, message_type in zip(refs, MESSAGE_TYPES, strict=True):
        envelope = schema["$defs"][ref]
        assert envelope["properties"]["type"] == {"enum": [message_type]}
        assert envelope["properties"]["id"] == {"type": "string", "format": "uuid"}
        assert envelope["additionalProperties"] is False
        assert envelope["required"] == ["id", "type", "ts", "payload"]


def test_schema_payloads_are_strict_and_camel_case() -> None:
    defs = build_schema()["$defs"]

    submit = defs["TaskSubmit"]
    assert submit["additionalProperties"] is False
    assert set(submit["required"]) == {"taskId", "attempt", "type", "input", "priority", "timeoutSeconds"}
    assert submit["properties"]["priority"] == {
        "description": "0 (lowest) to 9 (highest); higher runs first.",
        "type": "integer",
        "minimum": 0,
        "maximum": 9,
    }
    assert submit["properties"]["taskId"]["maxLength"] == 64


def test_schema_carries_the_views_and_error_body() -> None:
    defs = build_schema()["$defs"]

    assert {"TaskView", "AgentView", "TaskEventView", "TaskPage", "ErrorBody"} <= set(defs)
    assert "requestId" in defs["ErrorBody"]["properties"]


def test_check_mode_reports_stale_and_fresh_files(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"

    assert main(["--output", str(target), "--check"]) == 1
    assert main(["--output", str(target)]) == 0
    assert json.loads(target.read_text(encoding="utf-8"))["title"] == "taskyard WebSocket protocol"
    assert main(["--output", str(target), "--check"]) == 0


def message_table_rows() -> dict[str, str]:
    """The "Message types" table of docs/protocol.md: type -> the rest of its row."""
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    section = text.split("## Message types", 1)[1].split("\n## ", 1)[0]
    return {
        match.group(1): match.group(2) for match in re.finditer(r"^\| `([a-z/]+)` \|(.*)$", section, flags=re.MULTILINE)
    }


def test_protocol_doc_table_lists_every_message_type() -> None:
    assert set(message_table_rows()) == set(get_args(MessageType))


@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
def test_protocol_doc_table_names_every_payload_field(message_type: str) -> None:
    row = message_table_rows()[message_type]

    for field in msgspec.structs.fields(MESSAGE_TYPES[message_type]):  # type: ignore[index]
        assert f"`{field.encode_name}" in row, f"docs/protocol.md: {message_type} row misses {field.encode_name}"


def test_module_entry_point_checks_the_committed_file() -> None:
    # The real `python -m protocol.schema --check`, as `make schema`/CI would run it.
    done = subprocess.run(
        [sys.executable, "-m", "protocol.schema", "--check"],
        cwd=DOCS.parent,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
