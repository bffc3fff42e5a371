"""`GET /ws`: the handshake (Origin, role, credentials) and the hand-over to an agent or client session.

Handshake rules (docs/protocol.md, "Connecting"): a browser `Origin` not on the allow-list is refused
before the upgrade (HTTP 403). Otherwise the socket is accepted and the first frame is `auth/ok` or
`auth/error` (then close 1008). Credentials never appear in logs; refusals never say which part of
a credential was wrong.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis.exceptions
from litestar import WebSocket, websocket
from sqlalchemy.exc import SQLAlchemyError

from api.agents.service import AgentService
from api.auth.tokens import authenticate_access_token
from api.errors import ApiError
from api.ws.agent_session import AgentSession
from api.ws.client_session import ClientSession
from api.ws.framing import CloseCode, FrameSocket, PeerGoneError, ViolationBudget
from protocol.envelope import AGENT_SENDS, CLIENT_SENDS, encode_frame
from protocol.errors import ErrorCode
from protocol.messages import FEATURE_BATCH, KNOWN_FEATURES, AuthError, AuthOk

if TYPE_CHECKING:
    from litestar.datastructures import State

    from api.auth.identity import CurrentUser
    from api.settings import ApiSettings
    from api.ws.runtime import WsRuntime

__all__ = ("origin_allowed", "ws_endpoint")

logger = logging.getLogger(__name__)

_MAX_CREDENTIAL_LENGTH = 4096
_BUSY = (redis.exceptions.RedisError, OSError, SQLAlchemyError)


class _Refused(Exception):  # noqa: N818 - internal control flow
    def __init__(self, code: ErrorCode, message: str, close_code: int = CloseCode.POLICY_VIOLATION) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


def origin_allowed(origin: str, allowed: tuple[str, ...], host: str | None) -> bool:
    """True for an Origin on the allow-list (or `*`), or the server's own origin (same host)."""
    normalized = origin.rstrip("/").lower()
    if "*" in allowed or normalized in {a.rstrip("/").lower() for a in allowed}:
        return True
    return host is not None and urlsplit(normalized).netloc == host.lower()


def _bearer(socket: WebSocket[Any, Any, Any]) -> str | None:
    header = socket.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


_MAX_FEATURES_LENGTH = 256
_AGENT_FEATURES = frozenset({FEATURE_BATCH}) & KNOWN_FEATURES
"""What an agent may ask for."""
_CLIENT_FEATURES = frozenset({FEATURE_BATCH}) & KNOWN_FEATURES
"""What a client may ask for (a watcher taking `batch` frames gets one write for many events)."""


def _asked_features(socket: WebSocket[Any, Any, Any]) -> set[str] | None:
    """The handshake features the peer asked for (`X-Taskyard-Features` or `features=`); None when it asked none."""
    raw = socket.headers.get("x-taskyard-features") or socket.query_params.get("features")
    if not raw or len(raw) > _MAX_FEATURES_LENGTH:
        return None
    return {name.strip().lower() for name in raw.split(",") if name.strip()}


def _credential(value: str | None) -> str:
    if not value or len(value) > _MAX_CREDENTIAL_LENGTH:
        raise _Refused(ErrorCode.UNAUTHORIZED, "authentication failed")
    return value


@websocket("/ws", name="ws", opt={"exclude_from_auth": True})
async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
    """The one WebSocket route: agents (`role=agent`) and watchers (`role=client`)."""
    state = socket.app.state
    runtime: WsRuntime = state.ws
    settings: ApiSettings = state.settings
    origin = socket.headers.get("origin")
    if origin is not None and not origin_allowed(origin, settings.http.cors_origins, socket.headers.get("host")):
        # Before accept: uvicorn answers HTTP 403 without upgrading (cross-site WebSocket hijacking).
        logger.info("ws refused: origin not allowed")
        await socket.close(code=CloseCode.POLICY_VIOLATION)
        return
    role = socket.query_params.get("role")
    try:
        if role == "agent":
            session: AgentSession | ClientSession = await _agent_session(socket, state, runtime)
        elif role == "client":
            session = await _client_session(socket, state, runtime)
        else:
            raise _Refused(ErrorCode.BAD_REQUEST, "role must be agent or client")
    except _Refused as refused:
        await _refuse(socket, refused)
        return
    await _serve(socket, session, runtime, settings)


async def _refuse(socket: WebSocket[Any, Any, Any], refused: _Refused) -> None:
    await socket.accept()
    frame = AuthError(error=refused.code.error, message=refused.message, code=refused.code.code)
    try:
        await socket.send_text(encode_frame(frame).decode())
        await socket.close(code=refused.close_code, reason=refused.message[:120])
    except Exception:  # the peer may already be gone; nothing to clean up
        logger.debug("ws refusal not delivered")


async def _agent_session(socket: WebSocket[Any, Any, Any], state: State, runtime: WsRuntime) -> AgentSession:
    settings: ApiSettings = state.settings
    agent_id = socket.query_params.get("agent_id") or socket.headers.get("x-agent-id")
    token = socket.query_params.get("agent_token") or _bearer(socket)
    agent_id, token = _credential(agent_id), _credential(token)
    try:
        async with state.db() as db_session:
            record = await AgentService(db_session, state.scheduler).authenticate(agent_id, token)
    except ApiError as exc:
        raise _Refused(ErrorCode.UNAUTHORIZED, "authentication failed") from exc
    except _BUSY as exc:
        logger.warning("ws agent handshake: storage unavailable", exc_info=True)
        raise _Refused(ErrorCode.SERVICE_UNAVAILABLE, "try again later", CloseCode.TRY_AGAIN_LATER) from exc
    session_id = str(uuid.uuid4())
    asked = _asked_features(socket)
    features = None if asked is None else sorted(asked & _AGENT_FEATURES)
    batch = features is not None and FEATURE_BATCH in features
    conn = FrameSocket(
        socket,
        max_frame_bytes=settings.ws.agent_max_frame_bytes,
        budget=ViolationBudget(settings.ws.bad_frames_before_close, 60.0),
        accept=AGENT_SENDS | {"batch"} if batch else AGENT_SENDS,
    )
    session = AgentSession(
        conn,
        session_id,
        agent=record,
        spec=AgentService.spec(record),
        scheduler=state.scheduler,
        db=state.db,
        settings=settings.ws,
        consumer=f"{runtime.node_id}:{session_id}",
        token=token,
        lanes=runtime.lanes,
        submit_payload=runtime.submit_payload,
        features=features,
    )
    try:
        await session.register()
    except _BUSY as exc:
        logger.warning("ws agent handshake: presence not registered agent_id=%s", record.id, exc_info=True)
        raise _Refused(ErrorCode.SERVICE_UNAVAILABLE, "try again later", CloseCode.TRY_AGAIN_LATER) from exc
    return session


async def _client_session(socket: WebSocket[Any, Any, Any], state: State, runtime: WsRuntime) -> ClientSession:
    settings: ApiSettings = state.settings
    token = _credential(_bearer(socket) or socket.query_params.get("token"))
    try:
        user: CurrentUser = await authenticate_access_token(state, token)
    except ApiError as exc:
        raise _Refused(ErrorCode.UNAUTHORIZED, "authentication failed") from exc
    except _BUSY as exc:
        logger.warning("ws client handshake: storage unavailable", exc_info=True)
        raise _Refused(ErrorCode.SERVICE_UNAVAILABLE, "try again later", CloseCode.TRY_AGAIN_LATER) from exc
    asked = _asked_features(socket)
    features = None if asked is None else sorted(asked & _CLIENT_FEATURES)
    conn = FrameSocket(
        socket,
        max_frame_bytes=settings.ws.client_max_frame_bytes,
        budget=ViolationBudget(settings.ws.bad_frames_before_close, 60.0),
        accept=CLIENT_SENDS | {"batch"} if features and FEATURE_BATCH in features else CLIENT_SENDS,
    )
    session = ClientSession(
        conn,
        str(uuid.uuid4()),
        user=user,
        registry=runtime.registry,
        scheduler=state.scheduler,
        db=state.db,
        settings=settings.ws,
        agent_feed=runtime.agent_feed,
        planner_sessions=runtime.planner_sessions,
    )
    session.features = features
    return session


async def _serve(
    socket: WebSocket[Any, Any, Any], session: AgentSession | ClientSession, runtime: WsRuntime, settings: ApiSettings
) -> None:
    await socket.accept()
    if isinstance(session, AgentSession):
        subject_id = session.agent.id
        replaced = runtime.registry.close_agent(
            subject_id, CloseCode.POLICY_VIOLATION, "replaced by a newer connection"
        )
        if replaced:
            logger.info("ws agent reconnected; closing %d older socket(s) agent_id=%s", replaced, subject_id)
        runtime.registry.add_agent(subject_id, session.agent.owner_id, session)
        runtime.agent_changed()
    else:
        subject_id = session.user.id
        runtime.registry.add_client(subject_id, session.user.jti, session)
    runtime.connection_opened(session.role)
    try:
        if runtime.fanout is not None and not isinstance(session, AgentSession):
            # Before the client can subscribe: from here on the scheduler publishes events.
            await runtime.fanout.ensure_watching()
        await session.conn.send(
            AuthOk(
                role="agent" if isinstance(session, AgentSession) else "client",
                subject_id=subject_id,
                session_id=session.session_id,
                heartbeat_interval_s=settings.ws.heartbeat_interval_s,
                heartbeat_timeout_s=settings.ws.heartbeat_timeout_s,
                features=session.features,
                concurrency=session.agent.concurrency
                if isinstance(session, AgentSession) and session.features is not None
                else None,
            )
        )
        logger.info("ws %s connected", session.role, extra=session.log_context())
        await session.run()
    except PeerGoneError:
        logger.info("ws %s left during the handshake", session.role, extra=session.log_context())
    except Exception:
        # Handshake-time failures (e.g. the peer left during auth/ok) stay inside this session.
        logger.exception("ws session setup failed", extra=session.log_context())
        await session.conn.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        if isinstance(session, AgentSession):
            runtime.registry.remove_agent(subject_id, session.agent.owner_id, session)
            runtime.agent_changed()
        else:
            session.detach()
            runtime.registry.remove_client(subject_id, session.user.jti, session)
        runtime.connection_closed(session.role)
        logger.info("ws %s closed code=%s", session.role, session.conn.close_code, extra=session.log_context())
