"""Several API processes sign and seal with the same keys, even when dev mode could not keep them on disk."""

from __future__ import annotations

import gc
from pathlib import Path

from api.settings import load_settings
from taskyard.api_process import GC_YOUNG_THRESHOLD, share_generated_keys, tune_gc


def test_generated_dev_keys_reach_the_spawned_processes_environment(tmp_path: Path) -> None:
    unwritable = tmp_path / "not-a-dir"
    unwritable.write_text("")  # a file where the data dir should be: nothing can be kept under it
    environ = {"TASKYARD_DATA_DIR": str(unwritable / "data"), "TASKYARD_API_SECRETS_KEY": ""}
    parent = load_settings(environ)
    assert load_settings(environ).auth.jwt_secret != parent.auth.jwt_secret  # each process would make its own

    share_generated_keys(parent, environ)
    child = load_settings(environ)
    assert child.auth.jwt_secret == parent.auth.jwt_secret
    assert child.planner.secrets_key == parent.planner.secrets_key
    assert child.planner.llm_seal_key == parent.planner.llm_seal_key


def test_keys_the_operator_set_are_left_as_they_are(tmp_path: Path) -> None:
    environ = {"TASKYARD_DATA_DIR": str(tmp_path), "JWT_SECRET": "j" * 40}
    settings = load_settings(environ)
    share_generated_keys(settings, environ)
    assert environ["JWT_SECRET"] == "j" * 40
    assert environ["TASKYARD_API_SECRETS_KEY"] == settings.planner.secrets_key.reveal()  # type: ignore[union-attr]


def test_an_api_process_collects_its_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert before[0] < GC_YOUNG_THRESHOLD
    finally:
        gc.set_threshold(*before)
