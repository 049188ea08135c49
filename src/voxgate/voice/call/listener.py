"""The listening side of a call: caller frames through the line, the segmenter, barge-in and
endpointing, with early recognition and barge-in probes started as the stages ask for them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from voxgate.bundle.models import VoiceSettings
from voxgate.clock import MonotonicClock
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.session import Session
from voxgate.voice.call.barge_in import BargeIn
from voxgate.voice.call.endpointing import (
    EARLY_ASR_URGENT_AFTER_MS,
    EarlyAsr,
    Endpointer,
    context_prompt,
    short_by,
    wants_intent,
)
from voxgate.voice.call.events import (
    END_OF_TURN,
    NOISE_ONLY,
    QUIET_SPELL,
    VOICE_BACK,
    Backchannel,
    Interruption,
    ProbeWanted,
    SpeechEnded,
    SpeechStarted,
)
from voxgate.voice.call.line import Line
from voxgate.voice.call.ports import SpeechEngines, Vad
from voxgate.voice.call.segmenter import Segmenter, is_quiet
from voxgate.voice.call.timing import CallStats, TurnTiming
from voxgate.voice.pool import SPECULATIVE, URGENT, Ticket
from voxgate.voice.types import FRAME_BYTES, FRAME_MS, Transcript

log = logging.getLogger("voxgate.voice")

_SILENT_FRAME = bytes(FRAME_BYTES)
MS_PER_S = 1000

#: starts a turn: the utterance audio, the early recognition that still holds, the turn's timing
TurnStarter = Callable[[bytes, EarlyAsr | None, TurnTiming], None]


class Listener:
    """Caller audio to turns, for one call."""

    def __init__(
        self,
        vad: Vad,
        *,
        runtime: AgentRuntime,
        session: Session,
        engines: SpeechEngines,
        clock: MonotonicClock,
        stats: CallStats,
        endpointer: Endpointer,
        agent_speaking: Callable[[], bool],
        busy: Callable[[], bool],
        interrupt: Callable[[], Awaitable[None]],
        since: float,
    ) -> None:
        self.voice: VoiceSettings = runtime.agent.voice
        self.runtime = runtime
        self.session = session
        self.engines = engines
        self.clock = clock
        self.stats = stats
        self.endpointer = endpointer
        self.line = Line(since)
        self.segmenter = Segmenter(vad)
        self.barge = BargeIn(
            min_speech_ms=self.voice.barge_in_min_speech_ms,
            max_hold_ms=self.voice.barge_in_max_hold_ms,
            backchannels=self.voice.backchannels,
            latency=engines.probe_latency,
        )
        self.early: EarlyAsr | None = None
        self.last_activity = since
        self.speech_end_at = 0.0
        self._agent_speaking = agent_speaking
        self._busy = busy
        self._interrupt = interrupt

    async def take(self, pcm16: bytes) -> None:
        """One frame of caller audio."""
        now = self.clock.now()
        seg = self.segmenter
        events = seg.on_frame(pcm16)
        self.stats.frames_in += 1
        self.line.took(seg.audio_ms, now)
        for event in events:
            if event is VOICE_BACK:
                self.cancel_early()  # the caller went on
            elif event is QUIET_SPELL:
                if (
                    self.early is None
                    and self.barge.active is None
                    and not self._busy()
                    and self.engines.has_room()  # a guess that may be thrown away must not delay others
                ):
                    self._start_early(SPECULATIVE)
            elif isinstance(event, SpeechStarted):
                self._speech_started(event, now)
            elif isinstance(event, SpeechEnded):
                self._speech_ended(event, now)
        if self.barge.active is not None:
            await self._judge_barge_in()
        ended = seg.overlong()
        if ended is not None:
            self._speech_ended(ended, now)

    def _speech_started(self, event: SpeechStarted, now: float) -> None:
        self.last_activity = self.line.time_at(event.onset_ms, now)
        self.cancel_early()  # the caller went on: any guess is stale
        if self._agent_speaking() and self.voice.barge_in and self.barge.active is None:
            self.barge.begin(event.onset_ms)

    def _speech_ended(self, event: SpeechEnded, now: float) -> None:
        self.speech_end_at = self.line.time_at(event.end_ms, now)
        self.last_activity = self.line.time_at(event.vad_ms, now)
        if self.early is not None:
            # the VAD agrees the caller paused: an early guess still queued is now what the turn most
            # likely waits for
            self.engines.promote(self.early.ticket, URGENT)

    async def _judge_barge_in(self) -> None:
        seg, barge = self.segmenter, self.barge
        speaking = self._agent_speaking()
        event = barge.judge(seg.audio_ms, in_speech=seg.in_speech, pending=seg.pending, agent_speaking=speaking)
        if isinstance(event, ProbeWanted):
            barge.probe_launched(self._probe(event.prompt))
            event = barge.decide(barge.heard_ms(seg.audio_ms), in_speech=seg.in_speech, pending=seg.pending)
        if isinstance(event, Backchannel):
            log.info("call %s backchannel ignored (probe heard %r)", self.session.id, event.heard)
            self.stats.backchannels += 1
            seg.drop()
        elif isinstance(event, Interruption):
            log.info("call %s barge-in after %.0f ms (probe heard %r)", self.session.id, event.heard_ms, event.heard)
            self.stats.barge_ins += 1
            await self._interrupt()

    def _probe(self, prompt: str | None) -> asyncio.Task[Transcript]:
        task = asyncio.create_task(self.engines.recognize(bytes(self.segmenter.utterance), URGENT, prompt, quick=True))
        launched = self.clock.now()

        def done(t: asyncio.Task[Transcript]) -> None:
            answered = not t.cancelled() and t.exception() is None
            took_ms = (self.clock.now() - launched) * 1000
            if answered:  # how long probes take on this worker now: how long the next one is waited for
                self.engines.probe_latency.observe(took_ms)
            elif t.cancelled():  # given up unanswered (the barge-in was decided without it)
                self.engines.probe_latency.outlasted(took_ms)
            log.debug("barge probe done in %.0f ms: %r", took_ms, t.result().text if answered else None)

        task.add_done_callback(done)
        return task

    # ---- early recognition and the end of the turn ---------------------------------------------

    def _start_early(self, priority: int) -> None:
        """Start recognising the utterance so far; the result is kept if the pause holds."""
        audio = bytes(self.segmenter.utterance)
        early = EarlyAsr(len(audio), Ticket())
        early.task = asyncio.create_task(self._run_early(early, audio, priority))
        self.early = early

    async def _run_early(self, early: EarlyAsr, audio: bytes, priority: int) -> Transcript:
        expect = self.session.expecting()
        prompt = context_prompt(expect)
        transcript = await self.engines.recognize(audio, priority, prompt, ticket=early.ticket)
        text = transcript.text.strip()
        if short_by(text, expect):
            # read again while the turn waits out its pause, so a repair costs the caller no time
            early.readings = asyncio.create_task(self.engines.readings(audio, priority, prompt))
        if wants_intent(text):
            # (The session asks the same question of the same words next; the runtime caches the answer.)
            prediction = await self.runtime.predict(text)
            early.understood = prediction.intent is not None and not prediction.out_of_scope
        return transcript

    def cancel_early(self) -> None:
        """Drop the early recognition."""
        if self.early is not None:
            self.early.cancel()
        self.early = None

    def end_of_turn(self, start_turn: TurnStarter, turn_no: Callable[[], int]) -> None:
        """On a tick while an utterance is pending: end the turn if the pause is long enough.

        The pause is measured on the caller's audio, not the clock: media held up on the way
        (jitter, a stalled sender) is not a pause; media that stopped altogether is filled in.
        """
        seg = self.segmenter
        silence_ms = seg.silence_ms
        if silence_ms >= EARLY_ASR_URGENT_AFTER_MS and self.early is None:
            # past the VAD's offset: this recognition is almost always the turn's final one
            self._start_early(URGENT)
        timing = self.voice.timing(self.session.state)
        decision = self.endpointer.decide(
            silence_ms, self.early, timing, self.voice.endpointing_ms, self.session.expecting
        )
        if decision is NOISE_ONLY:
            self.stats.discarded_noise += 1
            self.early = None
            seg.drop()
        elif decision is END_OF_TURN:
            self._commit(start_turn, turn_no)

    def _commit(self, start_turn: TurnStarter, turn_no: Callable[[], int]) -> None:
        seg = self.segmenter
        audio = bytes(seg.utterance)
        early = self.early
        # an early guess still holds if everything heard after it was quiet
        if early is not None and not (
            early.audio_len <= len(audio) and is_quiet(audio[early.audio_len :], seg.speech_level)
        ):
            early = None
        if early is None:
            self.cancel_early()
        self.early = None
        seg.drop()
        timing = TurnTiming(
            turn=turn_no(),
            speech_start_audio_ms=seg.speech_start_ms,
            speech_end_audio_ms=seg.speech_end_ms,
            speech_end_at=self.speech_end_at,
            endpoint_at=self.clock.now(),
            verdict=self.endpointer.verdict,
            state=self.session.state,
        )
        start_turn(audio, early, timing)

    async def fill_gap(self, now: float, take: Callable[[bytes], Awaitable[None]]) -> float:
        """Take missing media in the middle of speech, or in the pause that may end the turn, as
        silence (through `take`); the ms filled in. The end of a turn is timed on the audio, so
        without this a caller whose media stopped would never be answered."""
        seg = self.segmenter
        frames = self.line.gap_frames(
            now, utterance_open=seg.in_speech or seg.pending, barge_open=self.barge.active is not None
        )
        for _ in range(frames):
            await take(_SILENT_FRAME)
        self.line.filled(frames)
        return float(frames * FRAME_MS)

    def no_input_due(self, now: float, playback_end: float) -> bool:
        """Whether the caller, who is not speaking, has been silent for the state's timeout since
        the last activity or the end of the agent's audio (the timer restarts when it is)."""
        seg = self.segmenter
        if seg.in_speech or seg.pending:
            return False
        timeout = self.voice.timing(self.session.state).silence_timeout_ms or self.voice.silence_timeout_ms
        if (now - max(self.last_activity, playback_end)) * MS_PER_S >= timeout:
            self.last_activity = now
            return True
        return False

    def close(self) -> None:
        """The call is over: stop the early recognition running for it."""
        if self.early is not None:
            self.early.cancel()
