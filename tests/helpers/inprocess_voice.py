"""One CallPipeline driven in-process, in real time, with the real models and the real Harbor
backend: the line a test caller speaks into. The `engines` (one load per test process) and `runtime`
fixtures it needs are in tests/conftest.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from voxgate.runtime.engine import AgentRuntime
from voxgate.testing.voices import resample, synthesize_caller
from voxgate.voice.engines import VoiceEngines
from voxgate.voice.pipeline import CallPipeline
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE

__all__ = [
    "CHUNK_MS",
    "SAMPLE_RATE",
    "Line",
    "call_until_greeted",
    "send",
    "speech_without_trailing_silence",
    "wait_for_turn",
]

CHUNK_MS = 100  # the client sends five frames at a time
#: a sample louder than this counts as speech when cutting the synthesised words
LOUD_SAMPLE = 300
#: the phone band a Twilio caller comes through
PHONE_RATE = 8000


class Line:
    """What the caller's side of the line receives: audio bytes and when they came."""

    def __init__(self) -> None:
        self.audio_at: list[float] = []

    async def send_audio(self, pcm16: bytes) -> None:
        """Note when audio arrived."""
        self.audio_at.append(time.perf_counter())

    async def send_clear(self) -> None:
        """Ignored: the test reads arrival times only."""

    async def send_mark(self, name: str) -> None:
        """Ignored."""

    async def send_event(self, event: dict[str, Any]) -> None:
        """Ignored."""

    async def hangup(self, reason: str) -> None:
        """Ignored."""


def speech_without_trailing_silence(text: str, *, lead: bool = True) -> bytes:
    """A caller's words through the phone band, cut right after the last loud sample.

    `lead`: keep the synthesiser's leading silence (some 200 ms)."""
    audio = synthesize_caller(text, "flite-slt")
    # through the phone band, as a Twilio caller sounds
    audio = resample(resample(audio, SAMPLE_RATE, PHONE_RATE), PHONE_RATE, SAMPLE_RATE)
    loud = np.nonzero(np.abs(audio.astype(np.int32)) > LOUD_SAMPLE)[0]
    return audio[0 if lead else loud[0] : loud[-1] + 1].astype(np.int16).tobytes()


async def send(pipeline: CallPipeline, pcm16: bytes, chunk_ms: int = CHUNK_MS) -> None:
    """Paced in real time, a chunk at a time, each chunk cut into the pipeline's frames."""
    chunk = chunk_ms * SAMPLE_RATE // 1000 * 2
    start = time.perf_counter()
    for i, at in enumerate(range(0, len(pcm16), chunk)):
        piece = pcm16[at : at + chunk]
        piece += bytes(-len(piece) % FRAME_BYTES)
        for f in range(0, len(piece), FRAME_BYTES):
            await pipeline.feed_audio(piece[f : f + FRAME_BYTES])
        await asyncio.sleep(max(0.0, start + (i + 1) * chunk_ms / 1000 - time.perf_counter()))


async def wait_for_turn(turns: list[dict[str, Any]], line: Line, after: float, timeout_s: float) -> float | None:
    """When the first reply audio after `after` reached the line, once a turn is recorded (None: not in time)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        later = [t for t in line.audio_at if t > after]
        if turns and later:
            return later[0]
        await asyncio.sleep(0.02)
    return None


async def call_until_greeted(
    runtime: AgentRuntime, engines: VoiceEngines
) -> tuple[CallPipeline, Line, list[dict[str, Any]]]:
    """A started Twilio-like call whose greeting has played out over a silent line."""
    line = Line()
    turns: list[dict[str, Any]] = []
    pipeline = CallPipeline(runtime, engines, line, channel="twilio", on_turn=turns.append)
    await pipeline.start()
    while pipeline.agent_speaking:  # the line carries silence while the greeting plays
        await send(pipeline, bytes(CHUNK_MS * SAMPLE_RATE // 1000 * 2))
    return pipeline, line, turns
