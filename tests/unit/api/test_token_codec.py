"""AccessTokenCodec keeps tokens it verified, so only expiry is re-checked on their next use."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import jwt
import pytest

from api.auth.tokens import AccessTokenCodec
from api.errors import UnauthorizedError
from api.settings import MIN_JWT_SECRET_BYTES, load_settings


@pytest.fixture
def codec(tmp_path: Path) -> AccessTokenCodec:
    settings = load_settings({"TASKYARD_DATA_DIR": str(tmp_path), "JWT_SECRET": "k" * MIN_JWT_SECRET_BYTES})
    return AccessTokenCodec(settings.auth)


def test_a_verified_token_is_served_again_without_a_second_verification(
    codec: AccessTokenCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = codec.issue(user_id="u-1", role="user", token_version=3, session_id="s-1")
    first = codec.decode(issued.token)
    calls: list[str] = []
    real = jwt.decode

    def counting(*args: object, **kwargs: object) -> object:
        calls.append("decode")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)
    again = codec.decode(issued.token)
    assert again == first
    assert (again.user_id, again.token_version, again.session_id) == ("u-1", 3, "s-1")
    assert calls == []


def test_a_kept_token_is_refused_once_expired(codec: AccessTokenCodec, monkeypatch: pytest.MonkeyPatch) -> None:
    issued = codec.issue(user_id="u-1", role="user", token_version=0, session_id="s-1")
    codec.decode(issued.token)
    later = issued.exp + 11  # past the 10 s leeway, for the codec and for pyjwt alike

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Later:
            return cls.fromtimestamp(later, tz)

    monkeypatch.setattr(time, "time", lambda: float(later))
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    with pytest.raises(UnauthorizedError):
        codec.decode(issued.token)


def test_a_tampered_token_is_still_refused_after_the_real_one_was_kept(codec: AccessTokenCodec) -> None:
    issued = codec.issue(user_id="u-1", role="user", token_version=0, session_id="s-1")
    codec.decode(issued.token)
    head, payload, signature = issued.token.split(".")
    forged = f"{head}.{payload}.{signature[:-2]}{'AA' if not signature.endswith('AA') else 'BB'}"
    with pytest.raises(UnauthorizedError):
        codec.decode(forged)
    assert time.time() < issued.exp
