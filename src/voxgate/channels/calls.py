"""What every voice channel shares: admission control and the call lifecycle around a pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocketDisconnect

from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE

log = logging.getLogger("voxgate.channels")

BUSY_MESSAGE = "All our lines are busy right now. Please call back in a few minutes. Goodbye."
#: what a caller hears when the agent they called was withdrawn from this environment (a rollback of its
#: first release): the line answers, says so, and hangs up
UNAVAILABLE_MESSAGE = "Sorry, this service is not available right now. Please call back later. Goodbye."
#: how long a voice socket may wait for its `start` before it counts against its address's limit
#: on sockets not started yet (the worker's limit counts it at once)
PENDING_GRACE_S = 1.0


class SocketOutput:
    """What both voice dialects share: one send at a time, and a socket that may already be gone."""

    def __init__(self, ws: Any):
        self.ws = ws
        self._lock = asyncio.Lock()
        self.closed = False

    async def _send_raw(self, *, text: str | None = None, data: bytes | None = None) -> None:
        if self.closed:
            return
        async with self._lock:
            try:
                if text is not None:
                    await self.ws.send_text(text)
                else:
                    await self.ws.send_bytes(data or b"")
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True

    async def hangup(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            try:
                await self.ws.close(code=1000, reason=close_reason(reason))
            except RuntimeError:
                pass


def close_reason(text: str) -> str:
    """A close reason fit to send: printable ASCII within the 123 bytes a close frame allows (a longer
    one makes the server's WebSocket library fail the close and drop the connection instead)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")[:120]


class ProtocolError(Exception):
    """Malformed input on a call's socket: that call ends with this reason; nothing else does."""


def json_object(raw: str | None, max_chars: int) -> dict[str, Any]:
    """A text frame of a JSON protocol as an object, or ProtocolError saying what is wrong with it:
    a binary frame (`raw` None), too long, not JSON, nested too deeply for the parser, not an object."""
    if raw is None:
        raise ProtocolError("binary frames are not part of this protocol (send JSON text)")
    if len(raw) > max_chars:
        raise ProtocolError(f"message of {len(raw)} characters exceeds {max_chars}")
    try:
        msg = json.loads(raw)
    except RecursionError:  # a few thousand nested brackets fit in any size limit
        raise ProtocolError("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON: {getattr(exc, 'msg', exc)}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object")
    return msg


class StartTimeout(ProtocolError):
    """A voice socket sent no valid `start` in time: it is closed (1008) and never took a line."""


@dataclass
class OpenedCall:
    """A voice socket accepted for a served (or withdrawn) agent, not yet a call.

    It takes a line only at a valid `start` (`admit`); until then it is one of a bounded number of
    not-yet-started sockets per worker and per client address, and it has `start_timeout_s` from `since` to start."""

    state: Any
    runtime: Any  # None: the agent was withdrawn here; the caller hears it is unavailable
    client: str
    since: float  # when the socket was accepted (monotonic)
    engines: Any = None
    admitted: bool = False
    pending: bool = True

    async def receive(self, ws: Any) -> dict[str, Any]:
        """The socket's next message; before `start`, only until the start deadline."""
        if not self.pending:
            return await ws.receive()
        left = self.since + self.state.admission.start_timeout_s - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            return await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            self.state.admission.start_timeouts += 1
            raise StartTimeout(f"no valid 'start' within {self.state.admission.start_timeout_s:g} s") from None

    async def admit(self) -> bool:
        """At a valid `start`: take a line if one is free (False: play the busy or unavailable message)."""
        self.leave_pending()
        state = self.state
        self.engines = await state.voice_engines()
        if self.runtime is None:
            return False
        if not await state.within_daily_quota():
            state.admission.refused += 1  # the environment's hard daily limit: callers hear "busy" too
            return False
        self.admitted = state.admission.try_admit()
        return self.admitted

    def leave_pending(self) -> None:
        if self.pending:
            self.pending = False
            self.state.admission.unhold(self.client, self.since)


async def open_call(ws: Any, agent: str, channel: str) -> OpenedCall | None:
    """Accept a voice socket, or None when it was closed: its handshake refused by the environment's
    channel settings (no valid Twilio signature, or no signed-in caller where one is required: 403
    before it is accepted), too many not-yet-started sockets (1008), not allowed, or no such agent
    served (1008), or the agent's bundle unusable (1011). An agent withdrawn from this environment
    gives runtime None: the caller hears it is unavailable once they start. No line is taken here:
    see OpenedCall.admit."""
    from voxgate.api.conversations import handshake_refusal, may_call

    state = ws.app.state.voxgate
    admission: Admission = state.admission
    client = ws.client.host if ws.client is not None else ""
    refused = await handshake_refusal(ws, channel)
    if refused is not None:
        log.warning("%s socket from %s refused at the handshake: %s", channel, client, refused)
        await ws.close(code=1008, reason=close_reason(refused))  # before accept: the handshake gets 403
        return None
    await ws.accept()
    now = time.monotonic()
    refusal = admission.hold(client, now)
    if refusal is not None:
        log.warning("voice socket from %s refused: %s", client, refusal)
        await ws.close(code=1008, reason=close_reason(refusal))
        return None
    opened = OpenedCall(state, None, client, now)
    try:
        if not await may_call(ws, agent):
            await ws.close(code=1008, reason="not allowed")
            opened.leave_pending()
            return None
        from voxgate.api.state import BundleUnavailable

        try:
            opened.runtime = await state.runtime_for(agent)
        except BundleUnavailable:
            await ws.close(code=1011, reason="agent unavailable")
            opened.leave_pending()
            return None
        if opened.runtime is None and not await state.withdrawn(agent):
            await ws.close(code=1008, reason=close_reason(f"no agent named '{agent}'"))
            opened.leave_pending()
            return None
    except BaseException:
        opened.leave_pending()
        raise
    return opened


@dataclass
class Admission:
    """A worker's capacity for concurrent calls; beyond it callers hear a short busy message.

    A call takes a line at its valid `start`, not when its socket opens. Sockets not started yet
    are bounded apart (`max_pending` per worker, `max_pending_per_client` per client address) and
    must start within `start_timeout_s`, so idle sockets can neither hold lines nor pile up."""

    capacity: int
    start_timeout_s: float = 5.0
    max_pending: int = 50
    max_pending_per_client: int = 10
    active: int = 0
    admitted: int = 0
    refused: int = 0
    pending: int = 0
    pending_refused: int = 0
    start_timeouts: int = 0
    _pending_by_client: dict[str, list[float]] = field(default_factory=dict)  # when each began waiting
    started_at: float = field(default_factory=time.time)
    _audio: dict[str, bytes] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def try_admit(self) -> bool:
        if self.active >= self.capacity:
            self.refused += 1
            return False
        self.active += 1
        self.admitted += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)

    def hold(self, client: str, now: float) -> str | None:
        """Count one more socket not started yet from `client`, or say why it is refused.

        Every such socket counts against the worker's limit at once. Against its address's limit
        count only those that have waited PENDING_GRACE_S without starting: a real caller starts
        within a round trip, so a burst of callers from one gateway is never refused for it."""
        if self.pending >= self.max_pending:
            self.pending_refused += 1
            return "too many voice sockets waiting to start; try again later"
        waiting = self._pending_by_client.setdefault(client, [])
        if sum(1 for since in waiting if now - since >= PENDING_GRACE_S) >= self.max_pending_per_client:
            if not waiting:
                self._pending_by_client.pop(client, None)
            self.pending_refused += 1
            return "too many voice sockets waiting to start from this address"
        self.pending += 1
        waiting.append(now)
        return None

    def unhold(self, client: str, since: float) -> None:
        """The socket from `client` held at `since` started or closed."""
        self.pending = max(0, self.pending - 1)
        waiting = self._pending_by_client.get(client)
        if waiting and since in waiting:
            waiting.remove(since)
            if not waiting:
                del self._pending_by_client[client]

    async def busy_audio(self, engines: Any, text: str = BUSY_MESSAGE) -> bytes:
        """16 kHz PCM of the busy (or another fixed) message, synthesised once and reused (it must cost nothing)."""
        async with self._lock:
            if text not in self._audio:
                synth = engines.synthesizer("default")
                audio = await asyncio.to_thread(engines.render, synth, text)
                self._audio[text] = await asyncio.to_thread(engines.to_pipeline_rate, audio, synth.sample_rate)
            return self._audio[text]


def frames(pcm16: bytes, frame_bytes: int) -> list[bytes]:
    return [pcm16[i : i + frame_bytes] for i in range(0, len(pcm16), frame_bytes)]


async def close_call(ws: Any, output: Any, pipeline: Any, error: Exception, last_words: str | None = None) -> None:
    """End a call on bad input: silence the pipeline first, then close with 1008 and the reason."""
    if pipeline is not None:
        await asyncio.shield(pipeline.close("protocol_error"))
    lock = getattr(output, "_lock", None)
    if output is not None:
        output.closed = True  # no more audio or events from this call
    async with lock if lock is not None else contextlib.nullcontext():
        try:
            if last_words is not None:
                await ws.send_text(last_words)
            await ws.close(code=1008, reason=close_reason(str(error)))
        except (RuntimeError, OSError):
            log.warning("socket already closed while ending a call", exc_info=True)


async def play_busy(admission: Admission, engines: Any, output: Any, *, unavailable: bool = False) -> None:
    """Tell a caller beyond capacity that the lines are busy (or, `unavailable`, that the agent is
    not available here now), give them time to hear it, hang up."""
    reason = "unavailable" if unavailable else "busy"
    audio = await admission.busy_audio(engines, UNAVAILABLE_MESSAGE if unavailable else BUSY_MESSAGE)
    for frame in frames(audio, FRAME_BYTES):
        await output.send_audio(frame)
    await output.send_mark(f"{reason}:last")
    await output.send_event({"type": "ended", "outcome": "refused", "reason": reason})
    await asyncio.sleep(min(len(audio) / 2 / SAMPLE_RATE, 6.0) + 0.2)
    await output.hangup("busy")


async def finish_call(state: Any, pipeline: Any, admitted: bool, reason: str) -> None:
    """Bookkeeping when a call's socket is done, however it ended."""
    if pipeline is not None and pipeline.hangup_reason:
        reason = f"agent_hangup:{pipeline.hangup_reason}"
    state.voice_stats.record_call(reason, pipeline.stats.silence_filled_ms if pipeline is not None else 0.0)
    if admitted:
        state.admission.release()
    if pipeline is not None:
        # the socket task may be cancelled; the call's records must still be written
        await asyncio.shield(pipeline.close(reason))
        if pipeline.recording is not None:
            await asyncio.shield(state.save_recording(pipeline.recording, pipeline.session))
