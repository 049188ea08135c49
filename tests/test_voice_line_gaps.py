"""Media that stops mid-speech (silence suppression, a client whose recording ended) still ends the
caller's turn; media sent in bigger chunks, but steadily, is never padded with silence.

These drive one CallPipeline in-process with the real models, in real time: the gap logic runs on
the wall clock.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers.inprocess_voice import (
    SAMPLE_RATE,
    call_until_greeted,
    send,
    speech_without_trailing_silence,
    wait_for_turn,
)
from voxgate.runtime.engine import AgentRuntime
from voxgate.voice.engines import VoiceEngines


@pytest.mark.parametrize("quiet_ms", [0, 160])
async def test_a_caller_whose_media_stops_after_speaking_is_answered(
    runtime: AgentRuntime, engines: VoiceEngines, quiet_ms: int
) -> None:
    """Media stops right after the words (the VAD never hears the pause), or after some silence
    (the VAD has heard the pause begin, and the rest of it never comes)."""
    pipeline, line, turns = await call_until_greeted(runtime, engines)
    try:
        await send(pipeline, speech_without_trailing_silence("where is my order") + bytes(quiet_ms * 32))
        spoke_until = time.perf_counter()
        # and nothing more comes: no frames at all, not even silent ones
        replied_at = await wait_for_turn(turns, line, spoke_until, timeout_s=8)
        assert replied_at is not None, "no reply: the turn never ended without media"
        assert pipeline.stats.silence_filled_ms > 0
        assert pipeline.session.verified is False and "identify" in pipeline.session.state
        # the gap costs its detection time, not the whole wait for a pause that never comes
        assert replied_at - spoke_until < 3.0
    finally:
        await pipeline.close("test over")


async def test_steady_chunked_media_is_never_padded(runtime: AgentRuntime, engines: VoiceEngines) -> None:
    pipeline, line, turns = await call_until_greeted(runtime, engines)
    try:
        await send(pipeline, speech_without_trailing_silence("where is my order"))
        spoke_until = time.perf_counter()
        trailing = asyncio.create_task(send(pipeline, bytes(3 * SAMPLE_RATE * 2)))  # the line stays up, quiet
        replied_at = await wait_for_turn(turns, line, spoke_until, timeout_s=8)
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
    pipeline, line, turns = await call_until_greeted(runtime, engines)
    try:
        await send(pipeline, speech_without_trailing_silence("where is my order"))
        await send(pipeline, bytes(pause_ms * SAMPLE_RATE // 1000 * 2), chunk_ms=20)
        await asyncio.sleep(held_ms / 1000)  # nothing arrives: the rest of the pause is on its way
        await send(pipeline, speech_without_trailing_silence("and the bill for my account", lead=False))
        spoke_until = time.perf_counter()
        trailing = asyncio.create_task(send(pipeline, bytes(3 * SAMPLE_RATE * 2)))
        replied_at = await wait_for_turn(turns, line, spoke_until, timeout_s=8)
        trailing.cancel()
        assert replied_at is not None
        said = [t.text for t in pipeline.session.transcript if t.role == "user"]
        assert len(said) == 1 and "bill" in said[0].lower(), (said, turns)
        assert pipeline.stats.silence_filled_ms == 0
    finally:
        await pipeline.close("test over")
