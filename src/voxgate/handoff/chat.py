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
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError
from starlette.websockets import WebSocketDisconnect

from voxgate.channels.calls import ProtocolError, json_object
from voxgate.handoff.desk import Desk, DeskAgent, FailureReason, LiveHandoff
from voxgate.runtime.nlu.slots import parse_slot

if TYPE_CHECKING:
    from voxgate.runtime.session import Session

log = logging.getLogger("voxgate.handoff.chat")

FALLBACK_REPLY_S = 300.0  # how long the fallback waits for the caller to type
MAX_TEXT = 2000
MAX_MESSAGE_CHARS = 16 * 1024  # as before the handoff (`/ws/chat`): a JSON message, far more than MAX_TEXT needs


class _TextIn(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT)


def _message(received: dict[str, Any]) -> dict[str, Any]:
    """One received WebSocket message as a JSON object; ValueError when it is not one (a binary frame,
    too long, nested too deeply, not JSON); WebSocketDisconnect when the caller went away."""
    if received["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(received.get("code", 1000), received.get("reason"))
    try:
        return json_object(received.get("text"), MAX_MESSAGE_CHARS)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None


class ChatLeg:
    channel = "chat"

    def __init__(self, desk: Desk, session: Session, websocket: Any):
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
        return self._gone

    async def send(self, message: dict[str, Any]) -> None:
        if self._gone:
            return
        async with self._lock:
            try:
                await self.ws.send_text(json.dumps(message, default=str))
            except (WebSocketDisconnect, RuntimeError):
                self._gone = True

    async def say(self, text: str) -> None:
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
        asyncio.ensure_future(self.send({"type": "handoff", "status": "waiting", "queue": handoff.queue}))

    async def connect(self, handoff: LiveHandoff, agent: DeskAgent) -> None:
        self.mode = "connected"
        await self.send({"type": "handoff", "status": "connected", "name": agent.display_name or agent.username})

    async def agent_audio(self, pcm16: bytes) -> None:
        raise RuntimeError("a chat takes text, not audio")

    async def agent_text(self, text: str, agent: DeskAgent) -> None:
        await self.send(
            {"type": "agent_message", "from": "person", "name": agent.display_name or agent.username, "text": text}
        )

    async def agent_lost(self, handoff: LiveHandoff) -> None:
        if self.mode != "connected":
            return
        self.mode = "waiting"  # what the caller writes now waits for the desk agent
        await self.send({"type": "handoff", "status": "reconnecting"})
        if self.mode == "waiting":  # (not back already)
            await self.say(handoff.messages.reconnecting)

    async def agent_hung_up(self) -> None:
        self.mode = "ended"
        self.end_reason = "desk_agent_ended"
        await self.send({"type": "handoff", "status": "ended", "by": "person"})
        self.done.set()

    async def fallback(self, handoff: LiveHandoff, reason: str) -> None:
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
        for attempt in range(2):
            if attempt:
                await self.say(messages.callback_retry.replace("say or key it in", "type it"))
            text = await self._reply()
            if text is None:
                break
            parsed = parse_slot("phone", text)
            if parsed.ok:
                await self.desk.fallback_stored(handoff, "callback", number=str(parsed.value))
                await self.say(messages.callback_confirm.replace("{number}", str(parsed.value)))
                self.end_reason = "fallback_callback"
                self.done.set()
                return
        await self.desk.fallback_failed(handoff)
        await self.say(messages.callback_failed)
        self.end_reason = "fallback_incomplete"
        self.done.set()

    async def _reply(self) -> str | None:
        try:
            return await asyncio.wait_for(self.inbox.get(), FALLBACK_REPLY_S)
        except TimeoutError:
            return None


async def chat_handoff(desk: Desk, session: Session, websocket: Any) -> str:
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
            received = receive.result()
            try:
                msg = _message(received)  # raises WebSocketDisconnect when the caller went away
                kind = msg.get("type")
                if kind == "end":
                    leg.end_reason = "caller_left"
                    raise _CallerLeft()
                if kind != "text":
                    raise ValueError(f"unknown message type {kind!r} (expected text or end)")
                text = _TextIn(text=msg.get("text", "")).text
            except (ValueError, ValidationError) as exc:
                error = (str(exc).splitlines() or ["malformed message"])[0][:200]
                log.info("closing chat socket %s during a handoff: %s", session.id, error)
                await leg.send({"type": "error", "error": error})
                await websocket.close(code=1003, reason="protocol error")
                leg.end_reason = "protocol_error"
                raise _CallerLeft() from None
            h = await _handoff(opened)
            if leg.mode == "fallback":
                leg.inbox.put_nowait(text)
            elif h is not None:
                desk.caller_text(h, text)
    except (_CallerLeft, WebSocketDisconnect) as exc:
        leg._gone = True
        leg.mode = "ended"
        h = await _handoff(opened)
        if h is not None:
            await desk.caller_left(h)
        if isinstance(exc, WebSocketDisconnect):
            raise
        return leg.end_reason
    finally:
        done.cancel()


async def _handoff(opened: asyncio.Future[LiveHandoff]) -> LiveHandoff | None:
    try:
        return await asyncio.shield(opened)
    except Exception:
        log.exception("the desk could not take an escalated chat")
        return None


class _CallerLeft(Exception):
    pass
