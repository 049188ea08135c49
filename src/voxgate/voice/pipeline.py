"""One call's real-time pipeline: audio in → VAD → end of turn → ASR → Session → TTS → audio out.

The channel decodes caller audio to 16 kHz PCM frames and calls `feed_audio`; the pipeline
answers through a `CallOutput` the channel implements (audio, clear, marks, events, hang-up).
A ticker evaluates timers (end of turn, no-input, DTMF) every frame period on the pipeline's
clock, so a caller who stops sending audio is still answered.

`CallPipeline` owns the I/O, the tasks and the call's lifecycle; the decisions are made by the
stages in `voxgate.voice.call`: the line (arrivals, cadence, gaps), the segmenter (VAD, preroll,
the last loud frame), endpointing (early recognition and `judge_completeness`), barge-in, the
keypad, the speaker's playback and the turn timing. All time comes from an injected
`MonotonicClock` (a `VirtualClock` in tests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from voxgate.clock import SYSTEM_CLOCK, MonotonicClock
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.events import TurnResult
from voxgate.voice.call.conversation import Conversation
from voxgate.voice.call.dtmf import TERMINATOR, Keypad
from voxgate.voice.call.endpointing import (
    DIGIT_TYPES,
    DIGITS_PROMPT,
    EarlyAsr,
    Endpointer,
    judge_completeness,
    starts_like,
)
from voxgate.voice.call.listener import Listener
from voxgate.voice.call.ports import CallOutput, CallRecorder, CallTakeover, RecordedOutput, SpeechEngines, Vad
from voxgate.voice.call.segmenter import last_loud_ms
from voxgate.voice.call.speaker import Speaker
from voxgate.voice.call.timing import CallStats, TurnTiming
from voxgate.voice.pool import URGENT
from voxgate.voice.types import FRAME_MS, audio_ms

__all__ = [
    "DIGITS_PROMPT",
    "DIGIT_TYPES",
    "CallOutput",
    "CallPipeline",
    "CallStats",
    "CallTakeover",
    "EarlyAsr",
    "HandoffHook",
    "TurnTiming",
    "judge_completeness",
    "last_loud_ms",
    "starts_like",
]

log = logging.getLogger("voxgate.voice")

FRAME_S = FRAME_MS / 1000  # the ticker's period


class HandoffHook(Protocol):
    """Takes over an escalated call (None: nobody does, the call ends after the escalation message)."""

    def take_over(self, pipeline: CallPipeline) -> CallTakeover | None:
        """The takeover that now has the call, or None to end it after the escalation message."""
        ...


class CallPipeline:
    """One call: caller audio and keys in, the agent's speech out, turns taken to the session."""

    def __init__(
        self,
        runtime: AgentRuntime,
        engines: SpeechEngines,
        output: CallOutput,
        *,
        channel: str,
        session_id: str | None = None,
        on_turn: Callable[[dict[str, Any]], None] | None = None,
        handoff: HandoffHook | None = None,
        recording: CallRecorder | None = None,
        clock: MonotonicClock = SYSTEM_CLOCK,
    ):
        self.runtime = runtime
        self.engines = engines
        self.clock = clock
        self.recording = recording  # voice.recording.CallRecording when the environment records calls
        self.output: CallOutput = output if recording is None else RecordedOutput(output, recording)
        self.voice = runtime.agent.voice
        self.session = runtime.new_session(channel=channel, session_id=session_id, defer_records=True)
        self.synth = engines.synthesizer(self.voice.voice)
        self.stats = CallStats()
        self.closed = False
        self.hangup_reason: str | None = None  # set when the agent side ends the call
        self.takeover: CallTakeover | None = None  # set once an escalated call is handed over
        self.listener: Listener | None = None  # once start() has a VAD
        self._created = clock.now()
        self._handoff = handoff
        self._endpointer = Endpointer()
        self._keypad = Keypad()
        self._speaker = Speaker(engines, self.synth, self.output, clock, self.stats, self._turn_heard)
        self._conversation = Conversation(
            runtime,
            self.session,
            engines=engines,
            output=self.output,
            speaker=self._speaker,
            endpointer=self._endpointer,
            stats=self.stats,
            clock=clock,
            on_turn=on_turn,
            ended=self._conversation_ended,
        )
        self._turn_task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._hangup_after_playback: str | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Take a VAD, start the ticker, and greet the caller."""
        vad = await self.engines.acquire_vad()
        self.listener = Listener(
            vad,
            runtime=self.runtime,
            session=self.session,
            engines=self.engines,
            clock=self.clock,
            stats=self.stats,
            endpointer=self._endpointer,
            agent_speaking=lambda: self.agent_speaking,
            busy=self._busy,
            interrupt=self._interrupt,
            since=self._created,
        )
        self._ticker = asyncio.create_task(self._tick_forever())
        greeting = await self.session.start()
        await self._conversation.emit(greeting)
        self._speaker.say(greeting.text, None)

    async def close(self, reason: str) -> None:
        """End the call: the takeover hears of it, tasks stop, the session closes."""
        if self.closed:
            return
        self.closed = self._speaker.closed = True
        if self.takeover is not None:
            try:
                await self.takeover.caller_left(reason)
            except Exception:
                log.exception("handoff of call %s failed at hang-up", self.session.id)
        if self.listener is not None:
            self.engines.release_vad(self.listener.segmenter.vad)
        for task in (self._ticker, self._speaker.task, self._turn_task):
            if task is not None and not task.done():
                task.cancel()
        if self.listener is not None:
            self.listener.close()
        await self.session.close(reason)

    @property
    def agent_speaking(self) -> bool:
        """The agent's reply is being sent or (by the estimate) still playing."""
        return self._speaker.speaking

    @property
    def vad(self) -> Vad | None:
        """The call's speech detector (a takeover may listen with it)."""
        return self.listener.segmenter.vad if self.listener is not None else None

    # ---- input -------------------------------------------------------------------------

    async def feed_audio(self, pcm16: bytes) -> None:
        """One frame (normally 20 ms) of 16 kHz int16 caller audio."""
        if self.closed or self.listener is None:
            return
        self.listener.line.media(audio_ms(pcm16), self.clock.now())
        await self._take_audio(pcm16)

    async def _take_audio(self, pcm16: bytes) -> None:
        if self.recording is not None:
            self.recording.caller(pcm16)
        if self.takeover is not None:
            self.stats.frames_in += 1
            await self.takeover.caller_audio(pcm16)
            return
        assert self.listener is not None  # nosec B101: type narrowing; audio is taken only once started
        await self.listener.take(pcm16)

    async def feed_dtmf(self, digit: str) -> None:
        """One keypad digit (or `#`)."""
        if self.closed:
            return
        if self.takeover is not None:
            await self.takeover.caller_dtmf(digit)
            return
        if not self.voice.dtmf:
            return
        if self.agent_speaking and self.voice.barge_in:
            await self._interrupt()
        wanted = None if digit == TERMINATOR else self.session.expecting().length
        if self._keypad.press(digit, self.clock.now(), wanted):
            await self._commit_dtmf()

    def played(self, mark: str) -> None:
        """The channel reports the caller has heard audio up to this mark."""
        now = self.clock.now()
        if self._speaker.playback.heard(mark, now) and self.listener is not None:
            self.listener.last_activity = now

    # ---- what a takeover (the live-agent desk) may do with the call ---------------------------

    async def wait_played(self) -> None:
        """Until what the agent says has been sent and (by the pipeline's estimate) played."""
        await self._speaker.until_played()

    async def wait_sent(self) -> None:
        """Until what the agent says has been synthesised and sent (it may still be playing)."""
        await self._speaker.until_sent()

    async def say(self, text: str, *, follow_on: bool = False) -> None:
        """Speak `text` once what is playing has played (`follow_on`: right behind it, no pause),
        and wait until the caller has heard it."""
        await self._speaker.announce(text, follow_on=follow_on)

    async def stop_speaking(self) -> None:
        """Cut what the agent is saying (the caller's queued audio is cleared too)."""
        await self._interrupt()

    async def recognize(self, pcm16: bytes, *, digits: bool = False) -> str:
        """Words in caller audio (16 kHz int16), primed for dictated digits when `digits`."""
        transcript = await self.engines.recognize(pcm16, URGENT, DIGITS_PROMPT if digits else None)
        return transcript.text

    async def end_call(self, reason: str) -> None:
        """The agent side hangs up now."""
        await self._hangup(reason)

    # ---- the ticker: end of turn, line gaps, DTMF, no-input ------------------------------------

    async def _tick_forever(self) -> None:
        try:
            while not self.closed:
                await self.clock.sleep(FRAME_S)
                try:
                    await self._tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("voice pipeline tick failed; ending call %s", self.session.id)
                    await self._hangup("internal_error")
                    return
        except asyncio.CancelledError:
            pass

    async def _tick(self) -> None:
        now = self.clock.now()
        if self._hangup_after_playback and not self.agent_speaking:
            await self._hangup(self._hangup_after_playback)
            return
        listener = self.listener
        assert listener is not None  # nosec B101: type narrowing; the ticker starts with the listener
        if listener.segmenter.pending and listener.barge.active is None and not self._busy():
            listener.end_of_turn(self._start_turn, self._conversation.next_turn)
        if self.takeover is None and not self.closed:
            self.stats.silence_filled_ms += await listener.fill_gap(now, self._take_audio)
        if self._keypad.timed_out(now, self.voice.dtmf_inter_digit_ms):
            await self._commit_dtmf()
        waiting = not self._busy() and not self.agent_speaking and not self._keypad.digits and not self.session.ended
        if waiting and listener.no_input_due(now, self._speaker.playback.end):
            self._turn_task = asyncio.create_task(self._no_input())

    def _busy(self) -> bool:
        return self._turn_task is not None and not self._turn_task.done()

    # ---- turns ---------------------------------------------------------------------------

    def _start_turn(self, audio: bytes, early: EarlyAsr | None, timing: TurnTiming) -> None:
        self._turn_task = asyncio.create_task(self._conversation.speech(audio, early, timing))

    async def _commit_dtmf(self) -> None:
        entered = self._keypad.take(busy=self._busy())
        if entered is not None:
            self._turn_task = asyncio.create_task(self._conversation.keyed(entered.digits))

    async def _no_input(self) -> None:
        result = await self._conversation.no_input()
        if result.ended:
            self._hangup_after_playback = "no_input"

    def _conversation_ended(self, result: TurnResult) -> None:
        """Hang up once the last words have played, unless the live-agent desk takes the escalated
        call over (hold, then a person, or the fallback: a call is never just dropped)."""
        if result.outcome == "escalated" and self._handoff is not None and self.takeover is None:
            self.takeover = self._handoff.take_over(self)
            if self.takeover is not None:
                return
        self._hangup_after_playback = result.outcome or "completed"

    def _turn_heard(self, timing: TurnTiming) -> None:
        self._conversation.record(timing)

    async def _interrupt(self) -> None:
        self._conversation.interrupted()
        await self._speaker.stop()

    async def _hangup(self, reason: str) -> None:
        if self.closed:
            return
        self.hangup_reason = reason
        await self.output.send_event(
            {"type": "ended", "outcome": self.session.outcome, "reason": reason, "escalation": self.session.escalation}
        )
        await self.output.hangup(reason)
        await self.close(reason)
