"""What every voice channel shares: opening a socket for a call (handshake, admission, the agent), the
call's output in the socket's dialect, and the bookkeeping when the call is over."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from voxgate.channels.admission import (
    BUSY_MESSAGE,
    PENDING_GRACE_S,
    UNAVAILABLE_MESSAGE,
    Admission,
)
from voxgate.channels.audio import OutboundAudio, frames
from voxgate.channels.dialect import Dialect, Frame, Start
from voxgate.channels.services import BundleUnavailable, CallServices
from voxgate.channels.wire import ProtocolError, StartTimeout, close_reason, json_object
from voxgate.runtime.engine import AgentRuntime
from voxgate.voice.engines import VoiceEngines
from voxgate.voice.pipeline import CallPipeline
from voxgate.voice.types import SAMPLE_RATE

__all__ = [
    "PENDING_GRACE_S",
    "Admission",
    "CallSocket",
    "OpenedCall",
    "ProtocolError",
    "close_reason",
    "finish_call",
    "json_object",
    "open_call",
    "play_busy",
]

log = logging.getLogger("voxgate.channels")

NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
#: the longest part of a busy or unavailable message a caller is given time to hear before the hang-up
MAX_BUSY_WAIT_S = 6.0
BUSY_TAIL_S = 0.2


class CallSocket:
    """A call's output (`voice.pipeline.CallOutput`) in its socket's dialect: one send at a time, and a
    socket that may already be gone (then nothing more is sent)."""

    def __init__(self, ws: WebSocket, dialect: Dialect, start: Start):
        self.ws = ws
        self.dialect = dialect
        self.start = start
        self.audio_out = OutboundAudio(start.sample_rate, start.encoding)
        self.closed = False
        self._lock = asyncio.Lock()

    async def _send(self, frame: Frame) -> None:
        if self.closed:
            return
        async with self._lock:
            try:
                if isinstance(frame, str):
                    await self.ws.send_text(frame)
                else:
                    await self.ws.send_bytes(frame)
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True

    async def send_audio(self, pcm16: bytes) -> None:
        """Agent audio (16 kHz PCM16), converted to the socket's format."""
        payload = self.audio_out.encode(pcm16)
        if payload:
            await self._send(self.dialect.audio(self.start, payload))

    async def send_clear(self) -> None:
        """Drop the audio queued at the caller (barge-in)."""
        await self._send(self.dialect.clear(self.start))

    async def send_mark(self, name: str) -> None:
        """A mark the caller's side sends back once everything before it has been played."""
        await self._send(self.dialect.mark(self.start, name))

    async def send_event(self, event: dict[str, Any]) -> None:
        """A call event, where the dialect has a place for it."""
        frame = self.dialect.event(self.start, event)
        if frame is not None:
            await self._send(frame)

    async def hangup(self, reason: str) -> None:
        """The agent side ends the call: a normal close with the reason."""
        if not self.closed:
            self.closed = True
            try:
                await self.ws.close(code=NORMAL_CLOSURE, reason=close_reason(reason))
            except RuntimeError:
                pass

    async def abort(self, error: str, last_words: Frame | None) -> None:
        """Close the call for bad input (1008): nothing else is sent after `last_words`."""
        self.closed = True  # no more audio or events from this call
        async with self._lock:
            await abort_socket(self.ws, error, last_words)


async def abort_socket(ws: WebSocket, error: str, last_words: Frame | None) -> None:
    """Send `last_words` (if any) and close with 1008 and the error as the reason."""
    try:
        if isinstance(last_words, str):
            await ws.send_text(last_words)
        elif last_words is not None:
            await ws.send_bytes(last_words)
        await ws.close(code=POLICY_VIOLATION, reason=close_reason(error))
    except (RuntimeError, OSError):
        log.warning("socket already closed while ending a call", exc_info=True)


@dataclass
class OpenedCall:
    """A voice socket accepted for a served (or withdrawn) agent, not yet a call.

    It takes a line only at a valid `start` (`admit`); until then it is one of a bounded number of
    not-yet-started sockets per worker and per client address, and it has the admission's
    `start_timeout_s` from `since` to start."""

    services: CallServices
    runtime: AgentRuntime | None  # None: the agent was withdrawn here; the caller hears it is unavailable
    client: str
    since: float  # when the socket was accepted (monotonic)
    admitted: bool = False
    pending: bool = True

    async def receive(self, ws: WebSocket) -> dict[str, Any]:
        """The socket's next message; before `start`, only until the start deadline."""
        if not self.pending:
            return dict(await ws.receive())
        admission = self.services.admission
        left = self.since + admission.start_timeout_s - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            return dict(await asyncio.wait_for(ws.receive(), left))
        except TimeoutError:
            admission.start_timeouts += 1
            raise StartTimeout(f"no valid 'start' within {admission.start_timeout_s:g} s") from None

    async def admit(self) -> VoiceEngines:
        """At a valid `start`: take a line if the environment's limits leave room for the call and
        this worker has one free. Returns the speech engines either way; `admitted` False means the
        caller hears the busy (or, no runtime, the unavailable) message."""
        self.leave_pending()
        services = self.services
        engines = await services.voice_engines()
        if self.runtime is None:
            return engines
        refusal = await services.admit_call()
        if refusal is not None:
            # the environment's hard limits (or their count unreachable): callers hear "busy" too
            services.admission.refused += 1
            log.info("call refused: %s", refusal)
            return engines
        self.admitted = services.admission.try_admit()
        if not self.admitted:  # this worker is full or draining: the environment's count gives it back
            await services.release_call(started=False)
        return engines

    def leave_pending(self) -> None:
        """The socket started or is closing: it no longer counts as waiting to start."""
        if self.pending:
            self.pending = False
            self.services.admission.unhold(self.client, self.since)


async def open_call(ws: WebSocket, agent: str, channel: str, services: CallServices) -> OpenedCall | None:
    """Accept a voice socket, or None when it was closed: its handshake refused by the environment's
    channel settings (no valid Twilio signature, or no signed-in caller where one is required: 403
    before it is accepted), too many not-yet-started sockets (1008), not allowed, or no such agent
    served (1008), or the agent's bundle unusable (1011). An agent withdrawn from this environment
    gives runtime None: the caller hears it is unavailable once they start. No line is taken here:
    see OpenedCall.admit."""
    client = ws.client.host if ws.client is not None else ""
    refused = await services.handshake_refusal(ws, channel)
    if refused is not None:
        log.warning("%s socket from %s refused at the handshake: %s", channel, client, refused)
        await ws.close(code=POLICY_VIOLATION, reason=close_reason(refused))  # before accept: a 403
        return None
    await ws.accept()
    now = time.monotonic()
    refusal = services.admission.hold(client, now)
    if refusal is not None:
        log.warning("voice socket from %s refused: %s", client, refusal)
        await ws.close(code=POLICY_VIOLATION, reason=close_reason(refusal))
        return None
    opened = OpenedCall(services, None, client, now)
    try:
        if not await services.may_call(ws, agent):
            await ws.close(code=POLICY_VIOLATION, reason="not allowed")
            opened.leave_pending()
            return None
        try:
            opened.runtime = await services.runtime_for(agent)
        except BundleUnavailable:
            await ws.close(code=INTERNAL_ERROR, reason="agent unavailable")
            opened.leave_pending()
            return None
        if opened.runtime is None and not await services.withdrawn(agent):
            await ws.close(code=POLICY_VIOLATION, reason=close_reason(f"no agent named '{agent}'"))
            opened.leave_pending()
            return None
    except BaseException:
        opened.leave_pending()
        raise
    return opened


async def play_busy(admission: Admission, engines: VoiceEngines, output: CallSocket, *, unavailable: bool) -> None:
    """Tell a caller beyond capacity that the lines are busy (or, `unavailable`, that the agent is
    not available here now), give them time to hear it, hang up."""
    reason = "unavailable" if unavailable else "busy"
    audio = await admission.busy_audio(engines, UNAVAILABLE_MESSAGE if unavailable else BUSY_MESSAGE)
    for frame in frames(audio):
        await output.send_audio(frame)
    await output.send_mark(f"{reason}:last")
    await output.send_event({"type": "ended", "outcome": "refused", "reason": reason})
    await asyncio.sleep(min(len(audio) / 2 / SAMPLE_RATE, MAX_BUSY_WAIT_S) + BUSY_TAIL_S)
    await output.hangup("busy")


async def finish_call(services: CallServices, pipeline: CallPipeline | None, admitted: bool, reason: str) -> None:
    """Bookkeeping when a call's socket is done, however it ended."""
    if pipeline is not None and pipeline.hangup_reason:
        reason = f"agent_hangup:{pipeline.hangup_reason}"
    services.voice_stats.record_call(reason, pipeline.stats.silence_filled_ms if pipeline is not None else 0.0)
    if admitted:
        services.admission.release()
        await asyncio.shield(services.release_call())
    if pipeline is not None:
        # the socket task may be cancelled; the call's records must still be written
        await asyncio.shield(pipeline.close(reason))
        if pipeline.recording is not None:
            await asyncio.shield(services.save_recording(pipeline.recording, pipeline.session))
