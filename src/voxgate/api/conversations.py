"""Conversations over HTTP (one request per turn) and WebSocket (one socket per session).

In a cluster any worker may take the next turn of an HTTP conversation (`shared_sessions`): a turn that
arrives while another turn of the same conversation is being taken on another worker is answered 409
with `{"detail": {"reason": "turn_conflict", "message": …, "retry": true}}` and not applied; the client
sends it again. Turns of one conversation on one worker wait for each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import Address
from starlette.requests import HTTPConnection

from voxgate.api.auth import Target, guard
from voxgate.api.state import AppState, get_state
from voxgate.channels.admission import DRAINING, DRAINING_MESSAGE, WorkerDraining
from voxgate.channels.services import BundleUnavailable
from voxgate.channels.throttle import retry_after
from voxgate.channels.wire import ProtocolError, close_reason, json_object
from voxgate.cluster.redis import Cluster
from voxgate.cluster.sessions import RedisSnapshotStore, SnapshotSeal
from voxgate.errors import InvalidError, NotFoundError, UnavailableError
from voxgate.governance.policy import Resource
from voxgate.governance.principals import Principal
from voxgate.handoff.chat import chat_handoff
from voxgate.runtime.registry import RuntimeResolver, SharedSessions
from voxgate.store.takeover import take_over

router = APIRouter(tags=["conversations"])
log = logging.getLogger("voxgate.api")

MAX_TEXT = 2000
MAX_CHAT_MESSAGE_CHARS = 16 * 1024  # a chat socket's JSON message: far more than MAX_TEXT needs
TRY_AGAIN_LATER = 1013  # a new chat socket's close code while the worker drains (or cannot count it)
#: why a new chat session is refused when the cluster's count of new sessions cannot be reached
UNCOUNTED = "new sessions cannot be counted right now; try again shortly"
UNCOUNTED_RETRY_S = 5  # the Retry-After of that refusal: about a heartbeat, when readiness has caught up


class ChatProtocolError(InvalidError):
    """A malformed message on a chat socket: the socket is closed with 1003 and this reason."""


def _chat_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """One received WebSocket message as a chat message object, or ChatProtocolError (or
    WebSocketDisconnect when the client went away)."""
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    try:
        return json_object(message.get("text"), MAX_CHAT_MESSAGE_CHARS)
    except ProtocolError as exc:
        raise ChatProtocolError(str(exc)) from None


class TurnIn(BaseModel):
    """One caller line of a conversation over HTTP."""

    text: str = Field(min_length=1, max_length=MAX_TEXT)


class DtmfIn(BaseModel):
    """Keys the caller pressed."""

    digits: str = Field(pattern=r"^[0-9*#]{1,32}$")


@router.get("/api/agents")
def list_agents(state: AppState = Depends(get_state)) -> list[dict[str, Any]]:
    """The agents this worker has loaded (public: the chat page lists them)."""
    return [
        {
            "name": rt.agent.name,
            "display_name": rt.agent.display_name,
            "version": rt.agent.version,
            "environment": rt.environment,
            "topics": sorted(rt.bundle.topics),
        }
        for rt in state.runtimes.values()
    ]


def agent_target(request: HTTPConnection, agent: str | None = None) -> Target:
    """A conversation with `agent` (else the one in the path) in the environment this worker serves."""
    state: AppState = request.app.state.voxgate
    name = agent or request.path_params.get("agent", "")
    return Target(environment=state.settings.environment, resource=Resource.agent(name))


class SessionsUncounted(UnavailableError):
    """A new chat session is refused because the count of new sessions per address cannot be reached."""


async def _too_many_sessions(state: AppState, client: Address | None) -> float | None:
    """Seconds this client address must wait before its next new chat session (None: it may start one).

    In a cluster the count is every worker's together, in Redis; when it cannot be reached the start
    is refused (SessionsUncounted) rather than let through uncounted: a client could otherwise start
    sessions without limit while Redis is away, and the chat would not outlive the turn anyway, since
    a cluster keeps HTTP chats between turns in the same Redis."""
    host = client.host if client is not None else ""
    try:
        wait = await state.throttles.per_address.take(host)
    except UnavailableError as exc:
        log.warning("new chat session from %s refused: %s (%s)", host or "?", UNCOUNTED, exc)
        raise SessionsUncounted(UNCOUNTED) from exc
    if wait is not None:
        log.warning("new chat session from %s refused: too many this minute", host or "?")
    return wait


def _refuse_if_draining(state: AppState, channel: str) -> None:
    """WorkerDraining (503) while the worker drains: no new session here; open ones go on."""
    if state.draining:
        log.warning("new %s chat session refused: %s", channel, DRAINING)
        raise WorkerDraining()


@router.post("/api/agents/{agent}/sessions", status_code=201)
async def start_session(
    agent: str,
    request: Request,
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("call.start", "POST", "/api/agents/{agent}/sessions", agent_target)),
) -> dict[str, Any]:
    """Start a conversation with `agent` over HTTP: its session id and greeting (503 while the worker drains)."""
    _refuse_if_draining(state, "HTTP")
    try:
        wait = await _too_many_sessions(state, request.client)
    except SessionsUncounted as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(UNCOUNTED_RETRY_S)}) from None
    if wait is not None:
        raise HTTPException(
            429,
            "too many new sessions from this address; try again later",
            headers={"Retry-After": str(retry_after(wait))},
        )
    runtime = await state.runtime_for(agent)  # BundleUnavailable: 503
    if runtime is None:
        raise NotFoundError(f"no agent named '{agent}' is served here")
    session = runtime.new_session(channel="http")
    greeting = await session.start()
    await state.sessions.begin(session)
    if isinstance(state.sessions, SharedSessions):
        # the shared store holds it between turns, not this process: this worker's repair pass and
        # idle rule must not count it as this process's (any worker may end it)
        state.recorder.open.discard(session.id)
    return {"session_id": session.id, "greeting": greeting.text, "turn": greeting.as_dict()}


@router.post("/api/sessions/{session_id}/turns")
async def post_turn(session_id: str, body: TurnIn, state: AppState = Depends(get_state)) -> dict[str, Any]:
    """One caller line of a live HTTP conversation: the agent's turn (409 `turn_conflict`: send it again)."""
    async with state.sessions.turn(session_id) as session:
        result = await session.handle(body.text)
    return result.as_dict()


@router.post("/api/sessions/{session_id}/dtmf")
async def post_dtmf(session_id: str, body: DtmfIn, state: AppState = Depends(get_state)) -> dict[str, Any]:
    """Keys pressed in a live HTTP conversation: the agent's turn (409 `turn_conflict`: send them again)."""
    async with state.sessions.turn(session_id) as session:
        result = await session.handle(body.digits, dtmf=True)
    return result.as_dict()


@router.post("/api/sessions/{session_id}/end")
async def end_session(session_id: str, state: AppState = Depends(get_state)) -> dict[str, Any]:
    """End a live HTTP conversation: its outcome."""
    session = await state.sessions.end(session_id, "caller_left")
    return {"session_id": session_id, "outcome": session.outcome or "abandoned", "escalation": session.escalation}


def shared_sessions(state: AppState, cluster: Cluster, resolve: RuntimeResolver) -> SharedSessions:
    """The session registry of a worker in a cluster: HTTP conversations wait between turns in `cluster`'s
    Redis for `session_idle_timeout_s` (and a reap pass); `resolve` finds the runtime of the bundle version a
    conversation started on; the worker taking a turn becomes the holder of its row."""

    async def claim(session_id: str) -> bool:
        return await asyncio.to_thread(take_over, state.db, session_id, state.recorder.worker_id)

    idle_s = state.settings.session_idle_timeout_s
    # sealed under the privacy salt (read at start-up, before this): Redis holds nothing readable of a caller
    store = RedisSnapshotStore(cluster, idle_timeout_s=idle_s, seal=SnapshotSeal(state.refs.load()))
    return SharedSessions(store, resolve=resolve, claim=claim, idle_s=idle_s)


def _problem(exc: Exception) -> str:
    """What was wrong with a chat message, in one line."""
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        if errors:
            where = ".".join(str(p) for p in errors[0]["loc"]) or "message"
            return f"{where}: {errors[0]['msg']}"
    return (str(exc).splitlines() or ["malformed message"])[0]


@router.websocket("/ws/chat/{agent}")
async def chat_socket(websocket: WebSocket, agent: str) -> None:
    """JSON messages: {"type":"text","text":…} | {"type":"dtmf","digits":…} | {"type":"end"}."""
    state: AppState = websocket.app.state.voxgate
    await websocket.accept()
    if state.draining:
        log.warning("new WebSocket chat session refused: %s", DRAINING)
        await websocket.close(code=TRY_AGAIN_LATER, reason=close_reason(f"{DRAINING}: {DRAINING_MESSAGE}"))
        return
    try:
        wait = await _too_many_sessions(state, websocket.client)
    except SessionsUncounted as exc:
        await websocket.close(code=TRY_AGAIN_LATER, reason=close_reason(str(exc)))
        return
    if wait is not None:
        await websocket.close(
            code=1008, reason=f"too many new sessions from this address; retry in {retry_after(wait)} s"
        )
        return
    if not await state.may_call(websocket, agent):
        await websocket.close(code=1008, reason="not allowed")
        return
    try:
        runtime = await state.runtime_for(agent)
    except BundleUnavailable:
        await websocket.close(code=1011, reason="agent unavailable")
        return
    if runtime is None:
        await websocket.close(code=4404, reason=close_reason(f"no agent named '{agent}'"))
        return
    session = runtime.new_session(channel="websocket")
    state.sessions.add(session)
    reason = "caller_left"
    try:
        greeting = await session.start()
        await websocket.send_json({"type": "turn", "session_id": session.id, **greeting.as_dict()})
        while not session.ended:
            message = await websocket.receive()
            try:
                msg = _chat_message(message)
                kind = msg.get("type")
                if kind == "text":
                    result = await session.handle(TurnIn(text=msg.get("text", "")).text)
                elif kind == "dtmf":
                    result = await session.handle(DtmfIn(digits=msg.get("digits", "")).digits, dtmf=True)
                elif kind == "end":
                    break
                else:
                    raise ChatProtocolError(
                        f"unknown message type {close_reason(repr(kind))[:40]} (expected text, dtmf or end)"
                    )
            except (ValueError, ValidationError) as exc:
                reason = "protocol_error"
                problem = close_reason(_problem(exc))
                log.info("closing chat socket %s: %s", session.id, problem)
                await websocket.send_json({"type": "error", "error": problem})
                await websocket.close(code=1003, reason=problem)
                return
            await websocket.send_json({"type": "turn", **result.as_dict()})
        if session.outcome == "escalated":  # a person takes over, or the fallback runs
            if await chat_handoff(state.desk, session, websocket) == "protocol_error":
                return
        outcome = await session.close(reason)
        await websocket.send_json({"type": "ended", "outcome": outcome, "escalation": session.escalation})
        await websocket.close()
    except WebSocketDisconnect:
        reason = "disconnected"
    finally:
        state.sessions.remove(session.id)
        if not session.ended:
            # the socket task may be cancelled; the outcome must still be recorded
            await asyncio.shield(session.close(reason))
