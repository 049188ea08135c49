"""One CallPipeline driven in-process, in real time, with the real models and the real Harbor
backend: the line a test caller speaks into, and the fixtures the voice tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.testing.voices import resample, synthesize_caller
from voxgate.voice.engines import VoiceEngines, load_engines
from voxgate.voice.pipeline import CallPipeline
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE

CHUNK_MS = 100  # the client sends five frames at a time


class Line:
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


def speech_without_trailing_silence(text: str, *, lead: bool = True) -> bytes:
    """`lead`: keep the synthesiser's leading silence (some 200 ms)."""
    audio = synthesize_caller(text, "flite-slt")
    # through the phone band, as a Twilio caller sounds
    audio = resample(resample(audio, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
    loud = np.nonzero(np.abs(audio.astype(np.int32)) > 300)[0]
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
    line = Line()
    turns: list[dict[str, Any]] = []
    pipeline = CallPipeline(runtime, engines, line, channel="twilio", on_turn=turns.append)
    await pipeline.start()
    while pipeline.agent_speaking:  # the line carries silence while the greeting plays
        await send(pipeline, bytes(CHUNK_MS * SAMPLE_RATE // 1000 * 2))
    return pipeline, line, turns
