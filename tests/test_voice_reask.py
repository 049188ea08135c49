"""When the agent asks for a number again, the caller's new answer is judged against what they said
the first time: the same number read again in groups is waited for between groups, an answer that
starts differently (the PIN, read by a caller who did not hear the re-ask) is not.

One CallPipeline in-process with the real models, in real time (tests/inprocess_voice.py).
"""

from __future__ import annotations

import time
from typing import Any

from tests.helpers.inprocess_voice import (
    CHUNK_MS,
    call_until_greeted,
    send,
    speech_without_trailing_silence,
)
from voxgate.runtime.engine import AgentRuntime
from voxgate.voice.engines import VoiceEngines
from voxgate.voice.pipeline import CallPipeline
from voxgate.voice.types import SAMPLE_RATE

ACCOUNT_ASKED = "identify"
SEVEN_DIGITS = "one one eight one five nine eight"  # an eight digit account number with a digit lost


async def _say(pipeline: CallPipeline, turns: list[dict[str, Any]], text: str) -> dict[str, Any]:
    """Speak, then keep the line up with silence until the agent has taken the turn."""
    before = len(turns)
    await send(pipeline, speech_without_trailing_silence(text))
    deadline = time.perf_counter() + 10
    while len(turns) == before and time.perf_counter() < deadline:
        await send(pipeline, bytes(CHUNK_MS * SAMPLE_RATE // 1000 * 2))
    assert len(turns) > before, f"no turn after {text!r}"
    while pipeline.agent_speaking:  # let the reply play, as a caller would
        await send(pipeline, bytes(CHUNK_MS * SAMPLE_RATE // 1000 * 2))
    return turns[-1]


async def _reasked(runtime: AgentRuntime, engines: VoiceEngines) -> tuple[CallPipeline, list[dict[str, Any]]]:
    pipeline, _line, turns = await call_until_greeted(runtime, engines)
    await _say(pipeline, turns, "where is my order")
    first = await _say(pipeline, turns, SEVEN_DIGITS)
    assert first["verdict"] == "unsure", first  # one digit short: answered, not waited on
    assert ACCOUNT_ASKED in pipeline.session.state  # and asked again
    return pipeline, turns


async def test_a_reasked_number_is_waited_on_only_when_it_starts_like_the_last_reading(
    runtime: AgentRuntime, engines: VoiceEngines
) -> None:
    pipeline, turns = await _reasked(runtime, engines)
    try:
        # the same number read again, in groups: its first group is waited on
        turn = await _say(pipeline, turns, "one one eight one")
        assert turn["verdict"] == "incomplete", turn
        assert ACCOUNT_ASKED in pipeline.session.state  # asked a third time
        # a different number (a PIN read by a caller who did not hear the question) is not
        turn = await _say(pipeline, turns, "two four four seven")
        assert turn["verdict"] == "unsure", turn
    finally:
        await pipeline.close("test over")
