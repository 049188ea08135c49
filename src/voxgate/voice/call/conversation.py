"""The conversation side of a call: a finished turn (recognised speech, keyed digits, silence) taken
to the session, and its answer spoken; each turn's timings recorded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from voxgate.clock import MonotonicClock
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.events import TurnResult
from voxgate.runtime.session import Session
from voxgate.voice.call.endpointing import (
    EarlyAsr,
    Endpointer,
    context_prompt,
    expected_digits,
    restore_digits,
    short_by,
)
from voxgate.voice.call.ports import CallOutput, SpeechEngines
from voxgate.voice.call.segmenter import PREROLL_MS
from voxgate.voice.call.speaker import Replies, Speaker
from voxgate.voice.call.timing import CallStats, TurnTiming
from voxgate.voice.pool import URGENT

log = logging.getLogger("voxgate.voice")

UNHEARD_MIN_SPEECH_MS = 500  # speech this long that yields no words gets "sorry, I didn't catch that"
# how long a turn that ended waits for the second reading of a short number (started in its pause)
# before it goes on with the first: on a busy worker the repair is skipped rather than paid for in the tail
RESTORE_WAIT_S = 0.15


class Conversation:
    """Runs one call's turns against its session."""

    def __init__(
        self,
        runtime: AgentRuntime,
        session: Session,
        *,
        engines: SpeechEngines,
        output: CallOutput,
        speaker: Speaker,
        endpointer: Endpointer,
        stats: CallStats,
        clock: MonotonicClock,
        on_turn: Callable[[dict[str, Any]], None] | None,
        ended: Callable[[TurnResult], None],
    ) -> None:
        self.runtime = runtime
        self.session = session
        self.engines = engines
        self.output = output
        self.speaker = speaker
        self.endpointer = endpointer
        self.stats = stats
        self.clock = clock
        self.turn_no = 0
        self.current: TurnTiming | None = None  # the turn whose reply is being spoken
        self._on_turn = on_turn
        self._ended = ended

    def next_turn(self) -> int:
        """Number the next turn."""
        self.turn_no += 1
        return self.turn_no

    async def speech(self, audio: bytes, early: EarlyAsr | None, timing: TurnTiming) -> None:
        """A spoken turn: the early recognition if it still holds, else recognise `audio` now."""
        readings: asyncio.Task[list[str]] | None = None
        try:
            if early is not None and early.task is not None:
                transcript = await early.task
                timing.speculative_hit = True
                readings = early.readings
            else:
                transcript = await self.engines.recognize(audio, URGENT, context_prompt(self.session.expecting()))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("speech recognition failed on call %s", self.session.id)
            return
        timing.asr_final_at = self.clock.now()
        timing.asr_compute_ms = transcript.compute_ms
        if not transcript.text.strip():
            speech_ms = timing.speech_end_audio_ms - timing.speech_start_audio_ms - PREROLL_MS
            if speech_ms < UNHEARD_MIN_SPEECH_MS:
                self.stats.discarded_noise += 1  # a cough or a click: no turn
                return
            # a real stretch of speech that yielded no words: say so rather than stay silent
            result = await self.session.unheard()
            await self.emit(result)
            self.speaker.say(result.text, timing)
            if result.ended:
                self._ended(result)
            return
        await self.text(await self._restored(transcript.text, readings), timing)

    async def _restored(self, text: str, started: asyncio.Task[list[str]] | None) -> str:
        """`text`, or where it is a digit string a digit or two short of what was asked (Whisper drops an
        "oh" on a noisy line), a second reading that only adds the missing zeros. The second reading was
        `started` with the early recognition, in the pause before the turn ended; the turn waits for it
        at most RESTORE_WAIT_S more."""
        expect = self.session.expecting()
        missing = short_by(text, expect)
        if started is None:
            return text
        if not missing:
            started.cancel()
            return text
        grace = asyncio.ensure_future(self.clock.sleep(RESTORE_WAIT_S))  # on the call's clock
        try:
            await asyncio.wait({started, grace}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            grace.cancel()
        if not started.done():
            started.cancel()
            self.stats.digits_unrestored += 1  # the speech threads were busy: asked again instead
            return text
        if started.cancelled() or started.exception() is not None:
            log.warning(
                "a second reading failed on call %s: %r",
                self.session.id,
                started.exception() if not started.cancelled() else "cancelled",
            )
            return text
        readings = started.result()
        expected = expected_digits(expect)
        assert expected is not None  # nosec B101: short_by found a count
        better = restore_digits(text, readings, expected)
        if better is None:
            return text
        self.stats.digits_restored += 1
        log.info("call %s: a digit string %d short was read again in full", self.session.id, missing)
        return better

    async def text(self, text: str, timing: TurnTiming, *, dtmf: bool = False) -> None:
        """A turn in words (or keyed digits): the session's answer is spoken as it comes."""
        timing.text = text
        self.current = timing
        await self.output.send_event({"type": "transcript", "role": "user", "text": text, "final": True, "dtmf": dtmf})
        asked = self.session.expecting()
        replies: Replies | None = None

        def speak_now(reply: str) -> None:
            # the first sentence is spoken while the session may still wait on a connector
            nonlocal replies
            if self.speaker.closed:
                return
            if replies is None:
                timing.intent_at = self.clock.now()
                replies = self.speaker.stream(timing)
            replies.put_nowait(reply)

        try:
            result = await self.session.handle(text, dtmf=dtmf, on_reply=speak_now)
        finally:
            if replies is not None:
                replies.put_nowait(None)
        timing.intent_at = timing.intent_at or self.clock.now()
        self.endpointer.note_reading(asked, self.session.expecting(), text)
        timing.intent = result.intent
        await self.emit(result)
        if result.ended:
            self._ended(result)

    async def keyed(self, digits: str) -> None:
        """A turn of keypad digits."""
        now = self.clock.now()
        timing = TurnTiming(turn=self.next_turn(), speech_end_at=now, endpoint_at=now, asr_final_at=now, dtmf=True)
        await self.text(digits, timing, dtmf=True)

    async def no_input(self) -> TurnResult:
        """The caller said nothing for the silence timeout: the session reprompts (or gives up)."""
        result = await self.session.no_input()
        await self.emit(result)
        self.speaker.say(result.text, None)
        return result

    async def emit(self, result: TurnResult) -> None:
        """Tell the channel what the agent said and how the turn went."""
        data = result.as_dict()
        data.pop("events", None)
        await self.output.send_event({"type": "transcript", "role": "agent", "text": result.text, "final": True})
        await self.output.send_event({"type": "turn", **data})

    def interrupted(self) -> None:
        """The caller cut the agent off: the turn being answered, if heard at all, was interrupted."""
        if self.current is not None and self.current.first_audio_at:
            self.current.interrupted = True

    def record(self, timing: TurnTiming) -> None:
        """The turn's reply reached the caller: log, trace and record its timings."""
        summary = timing.summary()
        self.stats.turns.append(summary)
        log.info("call %s turn %s timings %s", self.session.id, timing.turn, summary)
        if self._on_turn is not None:
            self._on_turn(summary)
        self.session.trace.voice_turn(
            timing.stages(),
            {
                "turn": timing.turn,
                "verdict": timing.verdict,
                "speculative_hit": timing.speculative_hit,
                "dtmf": timing.dtmf,
                "voice_to_voice_ms": summary.get("voice_to_voice_ms"),
            },
        )
        self.session.record_voice_turn(summary)  # the session's ordered writer stores it behind the call
