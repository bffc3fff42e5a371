"""requirements.lock pins every dependency pyproject.toml declares, and this environment was installed from it."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = [Requirement(r) for r in project["project"]["dependencies"]]
    for extra in project["project"].get("optional-dependencies", {}).get("embedded", []):
        found.append(Requirement(extra))
    for group in project.get("dependency-groups", {}).values():
        found.extend(Requirement(item) for item in group if isinstance(item, str))
    return found


def _locked() -> dict[str, tuple[str, Marker | None]]:
    pins: dict[str, tuple[str, Marker | None]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)(?:\s*;\s*(.+))?$", line.strip())
        if match:
            pins[canonicalize_name(match[1])] = (match[2], Marker(match[3]) if match[3] else None)
    return pins


def test_every_declared_dependency_is_pinned_and_the_pin_satisfies_it() -> None:
    locked = _locked()
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name][0]}, outside {requirement}: run `make lock`"
        )


def test_this_environment_has_the_locked_versions() -> None:
    mismatched = []
    for name, (pinned, marker) in _locked().items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # pinned for another platform or an extra this environment did not ask for
        if installed != pinned:
            mismatched.append(f"{name}: installed {installed}, locked {pinned}")
    if mismatched and (ROOT / ".venv").resolve() != Path(sys.prefix).resolve():
        pytest.skip("not the Makefile's .venv: " + "; ".join(mismatched[:3]))
    assert not mismatched, mismatched
