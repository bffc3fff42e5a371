from __future__ import annotations

import pytest

from worker.errors import WorkerSettingsError
from worker.settings import Secret, load_settings

CREDENTIALS = {"TASKYARD_WORKER_AGENT_ID": "agent-1", "TASKYARD_WORKER_AGENT_TOKEN": "s3cr3t-token"}


def test_defaults_apply_when_unset() -> None:
    settings = load_settings(CREDENTIALS)
    assert settings.url == "ws://127.0.0.1:8000/ws"
    assert settings.concurrency is None  # unset: the server's record decides (worker.slots)
    assert settings.drain_timeout_s == 30.0
    assert settings.handlers == ()
    assert settings.agent_token.reveal() == "s3cr3t-token"


def test_every_variable_is_parsed() -> None:
    settings = load_settings(
        {
            **CREDENTIALS,
            "TASKYARD_WORKER_URL": "wss://api.example.com/ws",
            "TASKYARD_WORKER_CONCURRENCY": "200",
            "TASKYARD_WORKER_DRAIN_TIMEOUT_S": "3",
            "TASKYARD_WORKER_HANDLERS": "pkg.a:registry, pkg.b:make",
            "TASKYARD_WORKER_TOKEN_IN_QUERY": "yes",
            "TASKYARD_WORKER_ENABLE_CRASH_HANDLER": "1",
            "TASKYARD_WORKER_BACKOFF_BASE_S": "0.1",
            "TASKYARD_WORKER_BACKOFF_MAX_S": "5",
            "TASKYARD_WORKER_LOG_LEVEL": "debug",
        }
    )
    assert settings.url == "wss://api.example.com/ws"
    assert settings.concurrency == 200
    assert settings.drain_timeout_s == 3.0
    assert settings.handlers == ("pkg.a:registry", "pkg.b:make")
    assert settings.token_in_query is True
    assert settings.enable_crash_handler is True
    assert (settings.backoff_base_s, settings.backoff_max_s) == (0.1, 5.0)
    assert settings.log_level == "DEBUG"


def test_every_bad_variable_is_listed_at_once() -> None:
    with pytest.raises(WorkerSettingsError) as caught:
        load_settings(
            {
                "TASKYARD_WORKER_URL": "http://not-a-websocket",
                "TASKYARD_WORKER_CONCURRENCY": "0",
                "TASKYARD_WORKER_DRAIN_TIMEOUT_S": "soon",
                "TASKYARD_WORKER_HANDLERS": "no_colon",
                "TASKYARD_WORKER_TOKEN_IN_QUERY": "maybe",
            }
        )
    names = {problem.split(":")[0] for problem in caught.value.problems}
    assert names == {
        "TASKYARD_WORKER_URL",
        "TASKYARD_WORKER_CONCURRENCY",
        "TASKYARD_WORKER_DRAIN_TIMEOUT_S",
        "TASKYARD_WORKER_HANDLERS",
        "TASKYARD_WORKER_TOKEN_IN_QUERY",
        "TASKYARD_WORKER_AGENT_ID",
        "TASKYARD_WORKER_AGENT_TOKEN",
    }


def test_backoff_cap_below_base_is_refused() -> None:
    with pytest.raises(WorkerSettingsError, match="BACKOFF_MAX_S"):
        load_settings({**CREDENTIALS, "TASKYARD_WORKER_BACKOFF_BASE_S": "5", "TASKYARD_WORKER_BACKOFF_MAX_S": "1"})


def test_repr_of_settings_never_shows_the_token() -> None:
    settings = load_settings(CREDENTIALS)
    assert "s3cr3t-token" not in repr(settings)
    assert "s3cr3t-token" not in str(settings.agent_token)
    assert repr(Secret("x")) == "Secret('**********')"
