"""Media that stops mid-speech (silence suppression, a client whose recording ended) still ends the
caller's turn; media sent in bigger chunks, but steadily, is never padded with silence.

These drive one CallPipeline in-process with the real models, in real time: the gap logic runs on
the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Iterator

import numpy as np
import pytest

from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.testing.voices import resample, synthesize_caller
from voxgate.voice.engines import VoiceEngines, load_engines
from voxgate.voice.pipeline import CallPipeline
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE

CHUNK_MS = 100  # the client sends five frames at a time


class _Line:
    """What the caller's side of the line receives: audio bytes and when they came."""

    def __init__(self) -> None:
        self.audio_at: list[float] = []

    async def send_audio(self, pcm16: bytes) -> None:
        self.audio_at.append(time.perf_counter())

    async def send_clear(self) -> None:
        pass

    async def send_mark(self, name: str) -> None:
        pass

    async def send_event(self, event: dict[str, Any]) -> None:
        pass

    async def hangup(self, reason: str) -> None:
        pass


@pytest.fixture(scope="module")
def engines() -> Iterator[VoiceEngines]:
    loaded = load_engines(voices=("default",), workers=1)
    yield loaded
    loaded.close()


@pytest.fixture()
async def runtime(harbor_bundle: Any, harbor_backend: Any) -> AsyncIterator[AgentRuntime]:
    rt = AgentRuntime(harbor_bundle, recorder=MemoryRecorder())
    yield rt
    await rt.aclose()


def _speech_without_trailing_silence(text: str, *, lead: bool = True) -> bytes:
    """`lead`: keep the synthesiser's leading silence (some 200 ms)."""
    audio = synthesize_caller(text, "flite-slt")
    # through the phone band, as a Twilio caller sounds
    audio = resample(resample(audio, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
    loud = np.nonzero(np.abs(audio.astype(np.int32)) > 300)[0]
    return audio[0 if lead else loud[0] : loud[-1] + 1].astype(np.int16).tobytes()


async def _send(pipeline: CallPipeline, pcm16: bytes, chunk_ms: int = CHUNK_MS) -> None:
    """Paced in real time, a chunk at a time, each chunk cut into the pipeline's frames."""
    chunk = chunk_ms * SAMPLE_RATE // 1000 * 2
    start = time.perf_counter()
    for i, at in enumerate(range(0, len(pcm16), chunk)):
        piece = pcm16[at : at + chunk]
        piece += bytes(-len(piece) % FRAME_BYTES)
        for f in range(0, len(piece), FRAME_BYTES):
            await pipeline.feed_audio(piece[f : f + FRAME_BYTES])
        await asyncio.sleep(max(0.0, start + (i + 1) * chunk_ms / 1000 - time.perf_counter()))


async def _wait_for_turn(turns: list[dict[str, Any]], line: _Line, after: float, timeout_s: float) -> float | None:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        later = [t for t in line.audio_at if t > after]
        if turns and later:
            return later[0]
        await asyncio.sleep(0.02)
    return None


async def _call_until_greeted(runtime: AgentRuntime, engines: VoiceEngines) -> tuple[CallPipeline, _Line, list[dict[str, Any]]]:
    line = _Line()
    turns: list[dict[str, Any]] = []
    pipeline = CallPipeline(runtime, engines, line, channel="twilio", on_turn=turns.append)
    await pipeline.start()
    while pipeline.agent_speaking:  # the line carries silence while the greeting plays
        await _send(pipeline, bytes(CHUNK_MS * SAMPLE_RATE // 1000 * 2))
    return pipeline, line, turns


@pytest.mark.parametrize("quiet_ms", [0, 160])
async def test_a_caller_whose_media_stops_after_speaking_is_answered(
    runtime: AgentRuntime, engines: VoiceEngines, quiet_ms: int
) -> None:
    """Media stops right after the words (the VAD never hears the pause), or after some silence
    (the VAD has heard the pause begin, and the rest of it never comes)."""
    pipeline, line, turns = await _call_until_greeted(runtime, engines)
    try:
        await _send(pipeline, _speech_without_trailing_silence("where is my order") + bytes(quiet_ms * 32))
        spoke_until = time.perf_counter()
        # and nothing more comes: no frames at all, not even silent ones
        replied_at = await _wait_for_turn(turns, line, spoke_until, timeout_s=8)
        assert replied_at is not None, "no reply: the turn never ended without media"
        assert pipeline.stats.silence_filled_ms > 0
        assert pipeline.session.verified is False and "identify" in pipeline.session.state
        # the gap costs its detection time, not the whole wait for a pause that never comes
        assert replied_at - spoke_until < 3.0
    finally:
        await pipeline.close("test over")


async def test_steady_chunked_media_is_never_padded(runtime: AgentRuntime, engines: VoiceEngines) -> None:
    pipeline, line, turns = await _call_until_greeted(runtime, engines)
    try:
        await _send(pipeline, _speech_without_trailing_silence("where is my order"))
        spoke_until = time.perf_counter()
        trailing = asyncio.create_task(_send(pipeline, bytes(3 * SAMPLE_RATE * 2)))  # the line stays up, quiet
        replied_at = await _wait_for_turn(turns, line, spoke_until, timeout_s=8)
        trailing.cancel()
        assert replied_at is not None
        assert pipeline.stats.silence_filled_ms == 0
        assert "identify" in pipeline.session.state
    finally:
        await pipeline.close("test over")


async def test_media_held_up_in_a_pause_is_not_taken_for_silence(runtime: AgentRuntime, engines: VoiceEngines) -> None:
    """A sender that stalls (or a network that holds packets) for a moment in the caller's pause
    delays the audio; it does not lengthen the pause. Timed on the clock, the pause plus the
    hold-up would pass the 350 ms that ends a complete-sounding request, and the agent would
    answer half a sentence."""
    pause_ms, held_ms = 220, 150
    pipeline, line, turns = await _call_until_greeted(runtime, engines)
    try:
        await _send(pipeline, _speech_without_trailing_silence("where is my order"))
        await _send(pipeline, bytes(pause_ms * SAMPLE_RATE // 1000 * 2), chunk_ms=20)
        await asyncio.sleep(held_ms / 1000)  # nothing arrives: the rest of the pause is on its way
        await _send(pipeline, _speech_without_trailing_silence("and the bill for my account", lead=False))
        spoke_until = time.perf_counter()
        trailing = asyncio.create_task(_send(pipeline, bytes(3 * SAMPLE_RATE * 2)))
        replied_at = await _wait_for_turn(turns, line, spoke_until, timeout_s=8)
        trailing.cancel()
        assert replied_at is not None
        said = [t.text for t in pipeline.session.transcript if t.role == "user"]
        assert len(said) == 1 and "bill" in said[0].lower(), (said, turns)
        assert pipeline.stats.silence_filled_ms == 0
    finally:
        await pipeline.close("test over")
