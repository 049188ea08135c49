"""A reply is spoken sentence by sentence as the session says it: the caller hears "Thanks, you're
verified" while the order is still being fetched from a slow backend, and the rest follows.

One CallPipeline in-process with the real models and the real Harbor backend over HTTP; the
order lookup is held up on its way back, as a slow CRM would be. Digits are keyed (DTMF) so the
test does not depend on recognition.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.helpers.inprocess_voice import (
    CHUNK_MS,
    call_until_greeted,
    send,
    speech_without_trailing_silence,
)
from voxgate.runtime.connectors import ActionResult, CallContext
from voxgate.runtime.engine import AgentRuntime
from voxgate.voice.engines import VoiceEngines
from voxgate.voice.types import SAMPLE_RATE

SLOW_S = 1.5


async def test_the_first_sentence_plays_while_a_slow_connector_answers(
    runtime: AgentRuntime, engines: VoiceEngines, credentials: list[dict[str, str]]
) -> None:
    real_call = runtime.connectors.call
    returned: dict[str, float] = {}

    async def slow_orders(name: str, ctx: CallContext) -> ActionResult:
        result = await real_call(name, ctx)
        if name == "get_latest_order":
            await asyncio.sleep(SLOW_S)
            returned[name] = time.perf_counter()
        return result

    runtime.connectors.call = slow_orders  # type: ignore[method-assign]
    cred = credentials[3]
    pipeline, line, turns = await call_until_greeted(runtime, engines)
    silence = bytes(CHUNK_MS * SAMPLE_RATE // 1000 * 2)
    try:
        await send(pipeline, speech_without_trailing_silence("where is my order"))
        while not turns:
            await send(pipeline, silence)
        # keyed over the agent's questions, as callers who know the drill do
        for digit in cred["account_number"] + "#":
            await pipeline.feed_dtmf(digit)
        while len(turns) < 2:
            await send(pipeline, silence)
        assert pipeline.session.state == "verifying:secret"
        keyed_at = time.perf_counter()
        for digit in cred["pin"]:
            await pipeline.feed_dtmf(digit)
        deadline = time.perf_counter() + 15
        while not ("get_latest_order" in returned and line.audio_at[-1] > returned["get_latest_order"]):
            assert time.perf_counter() < deadline, "the rest of the reply never came"
            await send(pipeline, silence)
        first_audio = next(t for t in line.audio_at if t > keyed_at)
        # the caller heard the agent before the order came back, not after
        assert first_audio < returned["get_latest_order"]
        said: list[Any] = [t.text for t in pipeline.session.transcript if t.role == "agent"]
        assert "verified" in said[-1] and cred["first_name"] in said[-1] and "order" in said[-1].lower()
        # and the rest of the reply followed: audio kept coming after the order returned (the loop above)
    finally:
        await pipeline.close("test over")
