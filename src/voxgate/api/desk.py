"""The live-agent desk API: the desk socket, queue views, desk agents' skills and callback requests.

``WS /ws/desk`` (a console sign-in cookie, or ``Authorization: Bearer`` for scripts; needs
``handoff.accept``). In a cluster the socket may land on any worker: callers waiting on other workers
are offered through it, and a conversation resumes on whichever worker the page reconnects to. Text frames are JSON; binary frames are 16 kHz mono PCM16 audio, both ways,
while the agent is connected to a voice call.

Desk agent → server::

    {"type": "status", "status": "available" | "away", "queues": ["general", …]?}
    {"type": "accept", "handoff_id": N}          {"type": "decline", "handoff_id": N}
    {"type": "message", "text": …}               (a chat in progress)
    {"type": "hangup"}                           (end the conversation; wrap-up follows)
    {"type": "wrap_up", "handoff_id": N, "disposition": "resolved" | …, "note": …}

Server → desk agent: ``hello``, ``queues``, ``status``, ``skills``, ``offer`` (with the context
packet), ``offer_withdrawn``, ``accepted``, ``accept_failed``, ``connected``, ``caller_message``,
``call_ended``, ``wrapped_up``, ``resumed``, ``error``. A malformed message closes the socket with
1003 and a reason; a call the agent was connected to then goes to its fallback
(``agent_disconnected``). A socket that drops (closed by the page, or the network) mid-conversation
or in wrap-up leaves the caller holding for the queue's ``reconnect_grace_s``: when the same desk
agent connects again within it, ``hello`` says ``"resuming": true`` and ``resumed`` follows — ``{"handoff": {…, "packet"},
"state": "connecting" | "wrap_up", "lines": [{"from": "caller" | "person", "text"}], "status"}`` — and,
for a conversation, ``connected`` once the caller is bridged again (chat lines written meanwhile
follow as ``caller_message``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy import select

from voxgate.api.auth import Target, authorize, current_principal, guard
from voxgate.api.state import AppState, get_state
from voxgate.channels.wire import close_reason
from voxgate.compliance.audit import AuditEvent
from voxgate.errors import InvalidError, NotFoundError, UnavailableError
from voxgate.governance.principals import Principal
from voxgate.handoff.live import DeskAgent, Disposition
from voxgate.handoff.records import callback_view, load_skills, save_skills
from voxgate.store.desk_models import CallbackRequestRow

router = APIRouter(tags=["desk"])
log = logging.getLogger("voxgate.api.desk")

MAX_TEXT_CHARS = 8 * 1024
MAX_AUDIO_BYTES = 32000  # one second of 16 kHz PCM16
OUTBOX = 400  # messages queued to one desk agent before audio frames are dropped
NAME = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


def worker_env(request: Request) -> Target:
    """The environment this worker serves (the target of the desk's routes)."""
    return Target(environment=get_state(request).settings.environment)


# ---- the desk socket ----------------------------------------------------------------------------------


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StatusIn(_Msg):
    """Available or away, and the queues taken."""

    type: Literal["status"]
    status: Literal["available", "away"]
    queues: list[NAME] | None = Field(default=None, max_length=50)


class AcceptIn(_Msg):
    """Take the caller offered."""

    type: Literal["accept"]
    handoff_id: int


class DeclineIn(_Msg):
    """Decline the caller offered."""

    type: Literal["decline"]
    handoff_id: int


class MessageIn(_Msg):
    """A line to the caller of the chat in progress."""

    type: Literal["message"]
    text: str = Field(min_length=1, max_length=2000)


class HangupIn(_Msg):
    """End the conversation in progress (wrap-up follows)."""

    type: Literal["hangup"]


class WrapUpIn(_Msg):
    """Close a conversation with a disposition and a note."""

    type: Literal["wrap_up"]
    handoff_id: int
    disposition: Disposition
    note: str = Field(default="", max_length=2000)


DeskIn = TypeAdapter(
    Annotated[StatusIn | AcceptIn | DeclineIn | MessageIn | HangupIn | WrapUpIn, Field(discriminator="type")]
)


class DeskProtocolError(InvalidError):
    """Bad input on a desk socket: that socket is closed with this reason (1003)."""


class SocketLink:
    """A desk agent's socket seen by the desk: sends never block, in order, through one writer task."""

    def __init__(self, ws: WebSocket):
        self.ws = ws
        self.outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue(maxsize=OUTBOX)
        self.dropped_audio = 0
        self.closed = False
        self.writer = asyncio.create_task(self._write())

    def send(self, message: dict[str, Any]) -> None:
        """A message to the desk agent, queued (a socket that is not reading is closed)."""
        if self.closed:
            return
        try:
            self.outbox.put_nowait(json.dumps(message, default=str))
        except asyncio.QueueFull:
            log.warning("desk socket is not reading; closing it")
            self.closed = True
            asyncio.ensure_future(self.close(1008, "not reading"))

    def send_audio(self, pcm16: bytes) -> None:
        """Caller audio to the desk agent (dropped when the socket falls behind)."""
        if self.closed:
            return
        if self.outbox.qsize() >= OUTBOX // 2:
            self.dropped_audio += 1  # a slow socket loses audio, not control messages or the call
            return
        self.outbox.put_nowait(pcm16)

    async def _write(self) -> None:
        try:
            while True:
                item = await self.outbox.get()
                if item is None:
                    return
                if isinstance(item, bytes):
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_text(item)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.closed = True

    async def close(self, code: int, reason: str) -> None:
        """Close the socket with a code and reason."""
        self.closed = True
        self.writer.cancel()
        try:
            await self.ws.close(code=code, reason=close_reason(reason))
        except (RuntimeError, OSError):
            pass

    async def drain(self, timeout: float = 2.0) -> None:
        """Let queued messages go out (used before closing with an error)."""
        try:
            self.outbox.put_nowait(None)
            await asyncio.wait_for(asyncio.shield(self.writer), timeout)
        except (TimeoutError, asyncio.QueueFull, asyncio.CancelledError):
            pass


@router.websocket("/ws/desk")
async def desk_socket(websocket: WebSocket) -> None:
    """A desk agent's socket (see the module docstring)."""
    state: AppState = websocket.app.state.voxgate
    await websocket.accept()
    try:
        if not websocket.headers.get("authorization") and not _same_origin(websocket):
            # a signed-in browser's cookie goes to any page on the same site (another port, say):
            # the desk socket only takes it from the desk's own origin
            raise HTTPException(403, "cross-origin desk socket refused")
        principal = await current_principal(websocket)  # type: ignore[arg-type]
        if principal.kind != "user":
            raise HTTPException(401, "sign in to use the desk")
        await authorize(state, principal, "handoff.accept", Target(environment=state.settings.environment))
    except HTTPException as exc:
        await websocket.close(code=1008, reason=close_reason(str(exc.detail)))
        return
    user = await asyncio.to_thread(state.identity.get_user, principal.id)
    skills = await asyncio.to_thread(load_skills, state.db, principal.id)
    link = SocketLink(websocket)
    agent = DeskAgent(
        user_id=principal.id,
        username=principal.username or principal.id,
        display_name=(getattr(user, "display_name", "") or principal.username or principal.id),
        link=link,
        skills=frozenset(skills),
    )
    desk = state.desk
    try:
        await desk.join(agent)
    except UnavailableError as exc:  # (the desk copes with its shared state away; this is a last resort)
        log.warning("desk socket of user:%s refused: %s", agent.user_id, exc)
        await link.close(1013, "the desk is unavailable; try again shortly")
        return
    grace = True  # a dropped socket's conversation waits for its desk agent to reconnect
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                if len(data) % 2 or len(data) > MAX_AUDIO_BYTES:
                    raise DeskProtocolError(f"bad audio frame of {len(data)} bytes (16 kHz PCM16, at most one second)")
                await desk.agent_audio(agent, data)
                continue
            if text is None:
                continue
            if len(text) > MAX_TEXT_CHARS:
                raise DeskProtocolError("message too long")
            try:
                msg = DeskIn.validate_json(text)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first["loc"])
                raise DeskProtocolError(
                    f"invalid message: {where + ': ' if where else ''}{first['msg']}"[:200]
                ) from None
            if isinstance(msg, StatusIn):
                desk.set_status(agent, msg.status, msg.queues)
            elif isinstance(msg, AcceptIn):
                await desk.accept(agent, msg.handoff_id)
            elif isinstance(msg, DeclineIn):
                desk.decline(agent, msg.handoff_id)
            elif isinstance(msg, MessageIn):
                await desk.agent_message(agent, msg.text)
            elif isinstance(msg, HangupIn):
                await desk.hangup(agent)
            elif isinstance(msg, WrapUpIn):
                await desk.wrap_up(agent, msg.handoff_id, msg.disposition, msg.note)
    except DeskProtocolError as exc:
        log.info("desk socket of user:%s closed: %s", agent.user_id, exc)
        grace = False  # closed for bad input: the caller goes to the fallback at once
        link.send({"type": "error", "error": str(exc)})
        await link.drain()
        await link.close(1003, str(exc))
    except WebSocketDisconnect:
        pass
    finally:
        await asyncio.shield(desk.leave(agent, grace=grace))
        link.closed = True
        link.writer.cancel()


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser
    return urlsplit(origin).netloc.lower() == (websocket.headers.get("host") or "").lower()


# ---- REST -----------------------------------------------------------------------------------------------


@router.get("/api/desk")
async def desk_view(
    state: AppState = Depends(get_state), _: Principal = Depends(guard("handoff.read", "GET", "/api/desk", worker_env))
) -> dict[str, Any]:
    """The desk: queues (waiting callers, desk agents available), agents and live handoffs — in a
    cluster, every worker's (each agent and handoff names the worker holding it)."""
    return await state.desk.fresh_snapshot()


class SkillsIn(BaseModel):
    """The skills a desk agent is routed by."""

    model_config = ConfigDict(extra="forbid")
    skills: list[NAME] = Field(max_length=50)


@router.put("/api/desk/agents/{user_id}")
async def set_skills(
    user_id: str,
    body: SkillsIn,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(guard("desk.manage", "PUT", "/api/desk/agents/{user_id}", worker_env)),
) -> dict[str, Any]:
    """Set the skills a desk agent is routed by (queues list the skills they need)."""
    user = await asyncio.to_thread(state.identity.get_user, user_id)
    if user is None:
        raise NotFoundError("no such user")
    skills = sorted(set(body.skills))
    await asyncio.to_thread(save_skills, state.db, user_id, skills, principal.id)
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="desk.skills_set",
            resource=f"user:{user_id}",
            environment=state.settings.environment,
            data={"skills": skills},
        ),
    )
    state.desk.set_skills(user_id, skills)
    return {"user_id": user_id, "skills": skills}


@router.get("/api/callbacks")
def list_callbacks(
    status: Literal["open", "done"] | None = "open",
    queue: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    state: AppState = Depends(get_state),
    _: Principal = Depends(guard("handoff.read", "GET", "/api/callbacks", worker_env)),
) -> list[dict[str, Any]]:
    """Callback requests and messages the fallback took, newest first (the number in full: it is
    what the desk calls back)."""
    stmt = (
        select(CallbackRequestRow)
        .where(CallbackRequestRow.environment == state.settings.environment)
        .order_by(CallbackRequestRow.created_at.desc())
        .limit(limit)
    )
    if status:
        stmt = stmt.where(CallbackRequestRow.status == status)
    if queue:
        stmt = stmt.where(CallbackRequestRow.queue == queue)
    with state.db.orm() as orm:
        return [callback_view(row) for row in orm.scalars(stmt)]


@router.post("/api/callbacks/{callback_id}/complete")
async def complete_callback(
    callback_id: str,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(
        guard("handoff.accept", "POST", "/api/callbacks/{callback_id}/complete", worker_env)
    ),
) -> dict[str, Any]:
    """Mark a callback request (or message) as dealt with."""

    def work() -> dict[str, Any] | None:
        with state.db.orm() as orm, orm.begin():
            row = orm.get(CallbackRequestRow, callback_id)
            if row is None or row.environment != state.settings.environment:
                return None
            if row.status != "done":
                row.status, row.completed_at, row.completed_by = "done", dt.datetime.now(dt.UTC), principal.id
            return callback_view(row)

    view = await asyncio.to_thread(work)
    if view is None:
        raise NotFoundError("no such callback request")
    await asyncio.to_thread(
        state.audit.append,
        AuditEvent(
            actor=principal.audit_actor,
            action="handoff.callback_completed",
            resource=f"callback:{callback_id}",
            environment=state.settings.environment,
            data={"session": view["session_id"], "kind": view["kind"]},
        ),
    )
    return view
