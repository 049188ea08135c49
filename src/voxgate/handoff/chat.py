"""A chat's side of a handoff: after the conversation escalates on `/ws/chat/{agent}`, the caller's
messages go to the desk agent who accepted and theirs come back; or the fallback asks, in text, for a
phone number or a message.

Server → caller, in addition to the chat's own messages:
``{"type": "handoff", "status": "waiting" | "connected" | "reconnecting" | "fallback" | "ended", …}``
(`reconnecting`: the desk agent's connection dropped; the caller holds for them to come back) and
``{"type": "agent_message", "text": …, "from": "person" | "agent", "name": …}`` (`person`: the desk
agent; `agent`: the virtual agent speaking for the fallback). The caller sends what it always
sends (``text``, ``end``); a malformed message closes the socket with 1003, which for the desk is
the caller hanging up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxgate.bundle.models import HandoffMessages
from voxgate.channels.wire import json_object
from voxgate.errors import InvalidError
from voxgate.handoff.live import CALLBACK_NUMBER_ASKS, DeskAgent, FailureReason, HandoffDesk, LiveHandoff, NotANumber
from voxgate.runtime.nlu.slots import parse_slot
from voxgate.runtime.session import Session

log = logging.getLogger("voxgate.handoff.chat")

FALLBACK_REPLY_S = 300.0  # how long the fallback waits for the caller to type
MAX_TEXT = 2000
MAX_MESSAGE_CHARS = 16 * 1024  # as before the handoff (`/ws/chat`): a JSON message, far more than MAX_TEXT needs
MAX_ERROR_CHARS = 200
PROTOCOL_ERROR_CLOSE = 1003


class _TextIn(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT)


def _message(received: Mapping[str, Any]) -> dict[str, Any]:
    """One received WebSocket message as a JSON object; ProtocolError (an InvalidError) when it is not
    one (a binary frame, too long, nested too deeply, not JSON); WebSocketDisconnect when the caller
    went away."""
    if received["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(received.get("code", 1000), received.get("reason"))
    return json_object(received.get("text"), MAX_MESSAGE_CHARS)


class ChatLeg:
    """The caller's side of a chat handoff (a `live.CallerLeg`)."""

    channel = "chat"

    def __init__(self, desk: HandoffDesk, session: Session, websocket: WebSocket):
        self.desk = desk
        self.session = session
        self.ws = websocket
        self.handoff: LiveHandoff | None = None
        self.mode = "waiting"  # waiting | connected | fallback | ended
        self.inbox: asyncio.Queue[str] = asyncio.Queue()
        self.done = asyncio.Event()
        self.end_reason = "handoff_ended"
        self._gone = False
        self._lock = asyncio.Lock()

    @property
    def gone(self) -> bool:
        """The caller has left."""
        return self._gone

    def left(self) -> None:
        """The caller closed the chat (or went away): nothing more is sent."""
        self._gone = True
        self.mode = "ended"

    async def send(self, message: dict[str, Any]) -> None:
        """A message to the caller (dropped once they are gone)."""
        if self._gone:
            return
        async with self._lock:
            try:
                await self.ws.send_text(json.dumps(message, default=str))
            except (WebSocketDisconnect, RuntimeError):
                self._gone = True

    async def say(self, text: str) -> None:
        """A line from the virtual agent (the fallback speaks for it)."""
        await self.send(
            {
                "type": "agent_message",
                "from": "agent",
                "name": self.session.agent.display_name or self.session.agent.name,
                "text": text,
            }
        )

    # ---- CallerLeg ----------------------------------------------------------------------------------

    def hold(self, handoff: LiveHandoff) -> None:
        """The caller waits for a person."""
        asyncio.ensure_future(self.send({"type": "handoff", "status": "waiting", "queue": handoff.queue}))

    async def connect(self, handoff: LiveHandoff, agent: DeskAgent) -> None:
        """A person took the chat."""
        self.mode = "connected"
        await self.send({"type": "handoff", "status": "connected", "name": agent.display_name or agent.username})

    async def agent_audio(self, pcm16: bytes) -> None:
        """A chat carries no audio."""
        raise RuntimeError("a chat takes text, not audio")

    async def agent_text(self, text: str, agent: DeskAgent) -> None:
        """The person's line, to the caller."""
        await self.send(
            {"type": "agent_message", "from": "person", "name": agent.display_name or agent.username, "text": text}
        )

    async def agent_lost(self, handoff: LiveHandoff) -> None:
        """The person's connection dropped: the caller holds for them."""
        if self.mode != "connected":
            return
        self.mode = "waiting"  # what the caller writes now waits for the desk agent
        await self.send({"type": "handoff", "status": "reconnecting"})
        if self.mode == "waiting":  # (not back already)
            await self.say(handoff.messages.reconnecting)

    async def agent_hung_up(self) -> None:
        """The person ended the chat."""
        self.mode = "ended"
        self.end_reason = "desk_agent_ended"
        await self.send({"type": "handoff", "status": "ended", "by": "person"})
        self.done.set()

    async def fallback(self, handoff: LiveHandoff, reason: str) -> None:
        """Nobody can take the chat: ask, in text, for a callback number or a message."""
        self.mode = "fallback"
        messages = handoff.messages
        lost = reason in (FailureReason.agent_disconnected.value, FailureReason.bridge_error.value)
        intro = messages.lost if lost else messages.unavailable
        kind = handoff.config.fallback
        await self.send({"type": "handoff", "status": "fallback", "kind": kind})
        while not self.inbox.empty():
            self.inbox.get_nowait()  # what was typed while waiting is not the answer to this question
        if kind == "message":
            await self.say(f"{intro} {messages.chat_message_prompt}")
            text = await self._reply()
            if text:
                await self.desk.fallback_stored(handoff, "message", message=text)
                await self.say(messages.message_thanks)
                self.end_reason = "fallback_message"
            else:
                await self.desk.fallback_failed(handoff)
                self.end_reason = "fallback_incomplete"
            self.done.set()
            return
        await self.say(f"{intro} {messages.chat_callback_prompt}")
        number = await self._callback_number(messages)
        if number is not None:
            await self.desk.fallback_stored(handoff, "callback", number=number)
            await self.say(messages.callback_confirm.replace("{number}", number))
            self.end_reason = "fallback_callback"
            self.done.set()
            return
        await self.desk.fallback_failed(handoff)
        await self.say(messages.callback_failed)
        self.end_reason = "fallback_incomplete"
        self.done.set()

    async def _callback_number(self, messages: HandoffMessages) -> str | None:
        """The number the caller types, asked again once when the answer is not one (None: no number)."""
        try:
            async for attempt in CALLBACK_NUMBER_ASKS.async_retrying(NotANumber):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        await self.say(messages.callback_retry.replace("say or key it in", "type it"))
                    text = await self._reply()
                    if text is None:
                        return None  # no answer at all: not asked again
                    parsed = parse_slot("phone", text)
                    if not parsed.ok:
                        raise NotANumber(parsed.error or "not a phone number")
                    return str(parsed.value)
        except NotANumber:
            return None
        return None

    async def _reply(self) -> str | None:
        try:
            return await asyncio.wait_for(self.inbox.get(), FALLBACK_REPLY_S)
        except TimeoutError:
            return None


async def chat_handoff(desk: HandoffDesk, session: Session, websocket: WebSocket) -> str:
    """Carry an escalated chat through the desk; returns why it ended. Raises WebSocketDisconnect
    when the caller's socket goes away (the desk has then been told the caller left)."""
    leg = ChatLeg(desk, session, websocket)
    opened = asyncio.ensure_future(desk.escalated(session, leg))
    opened.add_done_callback(lambda f: leg.done.set() if f.cancelled() or f.exception() is not None else None)
    done = asyncio.ensure_future(leg.done.wait())
    try:
        while True:
            receive = asyncio.ensure_future(websocket.receive())
            finished, _ = await asyncio.wait({receive, done}, return_when=asyncio.FIRST_COMPLETED)
            if done in finished:
                receive.cancel()
                await asyncio.gather(receive, return_exceptions=True)
                return leg.end_reason
            text = await _caller_text(leg, receive.result())  # raises WebSocketDisconnect when the caller went away
            if text is None:
                break
            h = await _handoff(opened)
            if leg.mode == "fallback":
                leg.inbox.put_nowait(text)
            elif h is not None:
                desk.caller_text(h, text)
    except WebSocketDisconnect:
        await _caller_left(leg, opened)
        raise
    finally:
        done.cancel()
    await _caller_left(leg, opened)
    return leg.end_reason


async def _caller_text(leg: ChatLeg, received: Mapping[str, Any]) -> str | None:
    """What the caller wrote; None when they ended the chat, or sent something malformed (the socket is
    then closed with 1003)."""
    try:
        msg = _message(received)
        kind = msg.get("type")
        if kind == "end":
            leg.end_reason = "caller_left"
            return None
        if kind != "text":
            raise InvalidError(f"unknown message type {kind!r} (expected text or end)")
        return _TextIn(text=msg.get("text", "")).text
    except (ValueError, ValidationError) as exc:
        error = (str(exc).splitlines() or ["malformed message"])[0][:MAX_ERROR_CHARS]
        log.info("closing chat socket %s during a handoff: %s", leg.session.id, error)
        await leg.send({"type": "error", "error": error})
        await leg.ws.close(code=PROTOCOL_ERROR_CLOSE, reason="protocol error")
        leg.end_reason = "protocol_error"
        return None


async def _caller_left(leg: ChatLeg, opened: asyncio.Future[LiveHandoff]) -> None:
    leg.left()
    h = await _handoff(opened)
    if h is not None:
        await leg.desk.caller_left(h)


async def _handoff(opened: asyncio.Future[LiveHandoff]) -> LiveHandoff | None:
    try:
        return await asyncio.shield(opened)
    except Exception:
        log.exception("the desk could not take an escalated chat")
        return None
