"""The console's browser tests skip on a machine without Chromium, except where services are required (CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.browser import _unavailable, chromium_binary


def test_no_chromium_on_path_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert chromium_binary() is None
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert chromium_binary() == str(fake)


def test_missing_chromium_skips_with_a_reason_unless_services_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKYARD_TEST_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        _unavailable("no chromium binary on PATH")
    monkeypatch.setenv("TASKYARD_TEST_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="TASKYARD_TEST_REQUIRE_SERVICES=1 but no chromium"):
        _unavailable("no chromium binary on PATH")
