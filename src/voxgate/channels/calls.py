"""What every voice channel shares: admission control and the call lifecycle around a pipeline."""

from __future__ import annotations

import asyncio
import contextlib
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
                await self.ws.close(code=1000, reason=reason[:120])
            except RuntimeError:
                pass


async def open_call(ws: Any, agent: str) -> tuple[Any, Any, Any, bool] | None:
    """Accept a voice socket: (app state, agent runtime, speech engines, admitted), or None
    when no such agent is served (the socket is then closed with 1008). An agent withdrawn from
    this environment gives runtime None and admitted False: the caller hears it is unavailable."""
    from voxgate.api.conversations import may_call

    state = ws.app.state.voxgate
    await ws.accept()
    if not await may_call(ws, agent):
        await ws.close(code=1008, reason="not allowed")
        return None
    from voxgate.api.state import BundleUnavailable

    try:
        runtime = await state.runtime_for(agent)
    except BundleUnavailable:
        await ws.close(code=1011, reason="agent unavailable")
        return None
    if runtime is None:
        if await state.withdrawn(agent):
            return state, None, await state.voice_engines(), False
        await ws.close(code=1008, reason=f"no agent named '{agent}'")
        return None
    engines = await state.voice_engines()
    if not await state.within_daily_quota():
        state.admission.refused += 1  # the environment's hard daily limit: callers hear "busy" too
        return state, runtime, engines, False
    return state, runtime, engines, state.admission.try_admit()


class ProtocolError(Exception):
    """Malformed input on a call's socket: that call ends with this reason; nothing else does."""


@dataclass
class Admission:
    """A worker's capacity for concurrent calls; beyond it callers hear a short busy message."""

    capacity: int
    active: int = 0
    admitted: int = 0
    refused: int = 0
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

    async def busy_audio(self, engines: Any, text: str = BUSY_MESSAGE) -> bytes:
        """16 kHz PCM of the busy (or another fixed) message, synthesised once and reused (it must cost nothing)."""
        async with self._lock:
            if text not in self._audio:
                synth = engines.synthesizer("default")
                audio = await asyncio.to_thread(engines.render, synth, text)
                self._audio[text] = await asyncio.to_thread(engines.to_pipeline_rate, audio, synth.sample_rate)
            return self._audio[text]


def frames(pcm16: bytes, frame_bytes: int) -> list[bytes]:
    return [pcm16[i:i + frame_bytes] for i in range(0, len(pcm16), frame_bytes)]


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
            await ws.close(code=1008, reason=str(error)[:120])
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
