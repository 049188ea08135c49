"""One call's real-time pipeline: audio in → VAD → end of turn → ASR → Session → TTS → audio out.

The channel decodes caller audio to 16 kHz PCM frames and calls `feed_audio`; the pipeline
answers through a `CallOutput` the channel implements (audio, clear, marks, events, hang-up).
A ticker evaluates timers (end of turn, no-input, DTMF) every frame period, so a caller who
stops sending audio is still answered.

Turn-taking: when the caller pauses, recognition starts speculatively after a short silence;
if the words look complete (a full account number, a yes, a clear request) the turn ends
after `complete_endpointing_ms`, if they look unfinished (half an account number, a trailing
"and…") it waits `incomplete_endpointing_ms`, otherwise `endpointing_ms`. If the caller speaks
again the speculation is dropped. Barge-in: caller speech while the agent talks stops playback
once it has lasted `barge_in_min_speech_ms` and a streaming recogniser heard a word that is not
a backchannel, or once it outlasts `barge_in_max_hold_ms`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voxgate.compliance.recording import RecordingOutput
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.events import TurnResult
from voxgate.runtime.nlu.numbers import extract_digit_string
from voxgate.runtime.nlu.slots import digit_homophones, parse_slot
from voxgate.runtime.session import Expectation
from voxgate.voice import codec
from voxgate.voice.engines import VoiceEngines
from voxgate.voice.pool import BACKGROUND, FIRST_AUDIO, SPECULATIVE, URGENT, Ticket
from voxgate.voice.speech_text import first_clause, is_backchannel
from voxgate.voice.types import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, Transcript

log = logging.getLogger("voxgate.voice")

PREROLL_MS = 300  # audio kept from before the detected onset, so first syllables are not cut
# Whisper hears what it expects to hear: priming it with digit formats stops "one one" coming
# out as "when when"; priming the first barge-in probe with acknowledgements makes a quick
# "okay" read as "Okay." rather than "Else.".
DIGIT_TYPES = {"account_number", "pin", "digits", "postcode", "phone"}
DIGITS_PROMPT = "My number is 4 1 5 9 2 2 0 8."
BACKCHANNEL_PROMPT = "Okay. Yeah. Uh-huh. Mm-hmm. Right. Sure."
FILLERS = ("uh", "um", "mm", "hmm", "mhm", "oh", "ah", "huh", "er")
BARGE_PROBES_MS = (110, 320)  # when to listen to speech heard over the agent (ms after onset)
# how long past barge_in_min_speech_ms a still-running first probe is waited for: under load a
# late answer is the usual case, and an "okay" should not cut the agent off for want of it
FIRST_PROBE_GRACE_MS = 100
UNHEARD_MIN_SPEECH_MS = 500  # speech this long that yields no words gets "sorry, I didn't catch that"
SYNTH_AHEAD_S = 2.0  # how much reply audio may be queued at the caller ahead of playback
SPECULATE_AFTER_MS = 60  # silence after which recognition starts speculatively
MAX_UTTERANCE_MS = 30000
# No media for this long in the middle of speech (or in the pause after it) means the line
# carries silence; a shorter hold-up is jitter and delays the audio, it is not a pause. A gateway
# with silence suppression sends no packets between words, and a client whose recording ended
# simply stops. Without this the caller's last words would wait forever for the pause that ends
# them. Clients that send audio in bigger chunks get twice their chunk length before it counts.
LINE_GAP_MS = 240
MAX_CADENCE_MS = 1000
_SILENT_FRAME = bytes(FRAME_BYTES)
SHORT_ANSWER_WORDS = 5  # a yes or no this short is a whole answer, whatever was asked
_TRAILING_INCOMPLETE = re.compile(
    r"\b(and|but|or|so|because|the|a|an|my|is|to|for|of|with|um+|uh+|er+|like|then)\W*$", re.IGNORECASE
)


class CallOutput(Protocol):
    """What a channel offers the pipeline. Audio is 16 kHz int16 mono PCM."""

    async def send_audio(self, pcm16: bytes) -> None: ...

    async def send_clear(self) -> None: ...

    async def send_mark(self, name: str) -> None: ...

    async def send_event(self, event: dict[str, Any]) -> None: ...

    async def hangup(self, reason: str) -> None: ...


class CallTakeover(Protocol):
    """Who has the call once its conversation escalated (the live-agent desk, `voxgate.handoff`):
    caller audio, keypad digits and the hang-up go to it instead of the conversation."""

    async def caller_audio(self, pcm16: bytes) -> None: ...

    async def caller_dtmf(self, digit: str) -> None: ...

    async def caller_left(self, reason: str) -> None: ...


class HandoffHook(Protocol):
    """Takes over an escalated call (None: nobody does, the call ends after the escalation message)."""

    def take_over(self, pipeline: CallPipeline) -> CallTakeover | None: ...


@dataclass
class TurnTiming:
    """Per-turn stage timestamps (perf_counter seconds) and derived durations in ms."""

    turn: int
    speech_start_audio_ms: float = 0.0
    speech_end_audio_ms: float = 0.0
    speech_end_at: float = 0.0
    endpoint_at: float = 0.0
    asr_final_at: float = 0.0
    asr_compute_ms: float = 0.0
    speculative_hit: bool = False
    intent_at: float = 0.0
    first_tts_at: float = 0.0
    first_audio_at: float = 0.0
    text: str = ""
    intent: str | None = None
    interrupted: bool = False
    dtmf: bool = False
    verdict: str = ""  # the completeness judgement that chose the endpointing window
    state: str = ""  # the session state the caller answered in

    def summary(self) -> dict[str, Any]:
        def ms(a: float, b: float) -> float | None:
            return round((b - a) * 1000, 1) if a and b else None

        return {
            "turn": self.turn,
            "speech_end_audio_ms": round(self.speech_end_audio_ms, 1),
            "endpoint_ms": ms(self.speech_end_at, self.endpoint_at),
            "asr_final_ms": ms(self.speech_end_at, self.asr_final_at),
            "asr_compute_ms": round(self.asr_compute_ms, 1),
            "speculative_hit": self.speculative_hit,
            "intent_ms": ms(self.speech_end_at, self.intent_at),
            "first_tts_ms": ms(self.speech_end_at, self.first_tts_at),
            "voice_to_voice_ms": ms(self.speech_end_at, self.first_audio_at),
            "interrupted": self.interrupted,
            "dtmf": self.dtmf,
            "verdict": self.verdict,
            "state": self.state,
        }


@dataclass
class _Speculation:
    """Recognition of the utterance so far, started during a pause before the turn is over."""

    audio_len: int  # bytes of utterance audio it covers
    ticket: Ticket
    task: asyncio.Task[Transcript] | None = None
    understood: bool = False  # the words map confidently onto one of the agent's intents
    started_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Barge:
    """Caller speech heard while the agent talks, not yet judged interruption or backchannel."""

    started_audio_ms: float
    probes: list[asyncio.Task[Transcript]] = field(default_factory=list)
    verdict: str = "unknown"  # unknown | words | backchannel
    heard: str = ""
    judged: int = 0  # probes whose result has been taken into account


@dataclass
class CallStats:
    frames_in: int = 0
    bytes_out: int = 0
    barge_ins: int = 0
    backchannels: int = 0
    discarded_noise: int = 0
    silence_filled_ms: float = 0.0  # line gaps (no media mid-speech) taken as silence
    turns: list[dict[str, Any]] = field(default_factory=list)


class CallPipeline:
    def __init__(
        self,
        runtime: AgentRuntime,
        engines: VoiceEngines,
        output: CallOutput,
        *,
        channel: str,
        session_id: str | None = None,
        on_turn: Callable[[dict[str, Any]], None] | None = None,
        handoff: HandoffHook | None = None,
        recording: Any = None,
    ):
        self.runtime = runtime
        self.engines = engines
        self.recording = recording  # compliance.recording.CallRecording when the environment records calls
        self.output = output if recording is None else RecordingOutput(output, recording)
        self.voice = runtime.agent.voice
        self.session = runtime.new_session(channel=channel, session_id=session_id, defer_records=True)
        self.synth = engines.synthesizer(self.voice.voice)
        self.vad: Any = None  # acquired in start()
        self.stats = CallStats()
        self.audio_ms = 0.0
        self.closed = False
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=200)  # (audio ms at frame end, wall)
        self._media_at = time.perf_counter()  # when the last frame came in (or silence was filled up to)
        self._burst_ms = 0.0  # audio that arrived at once, i.e. the sender's chunk length
        self._cadence_ms = float(FRAME_MS)
        self._line_silent = False  # no media is coming: silence is being filled in
        self._preroll: deque[bytes] = deque(maxlen=PREROLL_MS // FRAME_MS)
        self._utterance = bytearray()
        self._gap = bytearray()
        self._speech_level = 0.0
        self._quiet_frames = 0
        self._in_speech = False
        self._speech_start_ms = 0.0
        self._speech_end_ms = 0.0
        self._speech_end_at = 0.0
        self._verdict = ""  # what judge_completeness last said of the pending utterance
        # the digits the caller last gave and the question they answered, while it is asked again
        self._reading: tuple[Expectation, str] | None = None
        self._pending = False  # an utterance ended and waits for the end-of-turn decision
        self._spec: _Speculation | None = None
        self._barge: _Barge | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._speak_task: asyncio.Task[None] | None = None
        self._playback_end = 0.0
        self._last_activity = time.perf_counter()
        self._ticker: asyncio.Task[None] | None = None
        self._last_tick = time.perf_counter()
        self._dtmf = ""
        self._dtmf_at = 0.0
        self._turn_no = 0
        self._current: TurnTiming | None = None
        self._hangup_after_playback: str | None = None
        self._mark_seq = 0
        self._on_turn = on_turn
        self.hangup_reason: str | None = None  # set when the agent side ends the call
        self._writes: set[asyncio.Task[None]] = set()
        self._handoff = handoff
        self.takeover: CallTakeover | None = None  # set once an escalated call is handed over

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.vad = await self.engines.acquire_vad()
        self._ticker = asyncio.create_task(self._tick_forever())
        greeting = await self.session.start()
        await self._emit_turn(greeting)
        self._start_speaking(greeting.text, None)

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.takeover is not None:
            try:
                await self.takeover.caller_left(reason)
            except Exception:
                log.exception("handoff of call %s failed at hang-up", self.session.id)
        if self.vad is not None:
            self.engines.release_vad(self.vad)
        for task in (self._ticker, self._speak_task, self._turn_task, self._spec.task if self._spec else None):
            if task is not None and not task.done():
                task.cancel()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self.session.close(reason)

    @property
    def agent_speaking(self) -> bool:
        return (
            self._speak_task is not None and not self._speak_task.done()
        ) or time.perf_counter() < self._playback_end

    # ---- input -------------------------------------------------------------------------

    async def feed_audio(self, pcm16: bytes) -> None:
        """One frame (normally 20 ms) of 16 kHz int16 caller audio."""
        if self.closed or self.vad is None:
            return
        now = time.perf_counter()
        frame_ms = len(pcm16) / 2 / SAMPLE_RATE * 1000
        # frames of one message are fed back to back; the sum is how much the sender sends at once
        self._burst_ms = self._burst_ms + frame_ms if now - self._media_at < 0.002 else frame_ms
        self._cadence_ms = min(max(self._cadence_ms, self._burst_ms), MAX_CADENCE_MS)
        self._media_at = now
        self._line_silent = False
        await self._take_audio(pcm16)

    async def _take_audio(self, pcm16: bytes) -> None:
        if self.recording is not None:
            self.recording.caller(pcm16)
        if self.takeover is not None:
            self.stats.frames_in += 1
            await self.takeover.caller_audio(pcm16)
            return
        now = time.perf_counter()
        frame_ms = len(pcm16) / 2 / SAMPLE_RATE * 1000
        self.audio_ms += frame_ms
        self.stats.frames_in += 1
        self._arrivals.append((self.audio_ms, now))
        if self._in_speech:
            self._utterance.extend(pcm16)
            self._watch_for_a_pause(pcm16)
        elif self._pending:
            self._gap.extend(pcm16)  # joins the utterance only if the caller speaks again
        else:
            self._preroll.append(pcm16)
        for window in self.vad.feed(pcm16):
            if window.event == "onset":
                await self._on_speech_start(self._wall_at(window.event_ms), window.event_ms)
            elif window.event == "offset":
                self._on_speech_end(self._wall_at(window.event_ms), window.event_ms)
        if self._barge is not None:
            await self._judge_barge_in()
        if self._in_speech and len(self._utterance) / 32 > MAX_UTTERANCE_MS:
            self._on_speech_end(now, self.audio_ms)  # a caller who never pauses still gets an answer

    def _watch_for_a_pause(self, pcm16: bytes) -> None:
        """Start recognising as soon as the voice goes quiet, before the VAD confirms the pause.

        The VAD's offset lags the last word by 50-150 ms; the frame energy does not. Quiet
        relative to the caller's own level for EARLY_SPEC_MS starts the speculative decode; the
        caller's voice coming back cancels it.
        """
        rms = _rms(pcm16)
        self._speech_level = max(self._speech_level * 0.998, rms)
        if rms >= QUIET_FRACTION * self._speech_level:
            self._quiet_frames = 0
            if self._spec is not None and not self._pending:
                self._cancel_speculation()
            return
        self._quiet_frames += 1
        if (
            self._spec is None
            and self._barge is None
            and self._quiet_frames * FRAME_MS >= EARLY_SPEC_MS
            and len(self._utterance) / 32 >= PREROLL_MS + 200
            and not self._busy()
            and self.engines.pool.has_room()  # a guess that may be thrown away must not delay others
        ):
            self._speculate(SPECULATIVE)

    def _speculate(self, priority: int) -> None:
        """Start recognising the utterance so far; the result is kept if the pause holds."""
        audio = bytes(self._utterance)
        spec = _Speculation(len(audio), Ticket())
        spec.task = asyncio.create_task(self._run_speculation(spec, audio, priority))
        self._spec = spec

    async def _run_speculation(self, spec: _Speculation, audio: bytes, priority: int) -> Transcript:
        transcript = await self._recognize(audio, priority, self._context_prompt(), ticket=spec.ticket)
        text = transcript.text.strip()
        if text and text[-1:] not in ".?!" and not any(ch.isdigit() for ch in text):
            # Whisper leaves out the full stop when the audio ends right after the last word:
            # words the agent understands are a finished request all the same. (The session
            # asks the same question of the same words next; the runtime caches the answer.)
            prediction = await self.runtime.predict(text)
            spec.understood = prediction.intent is not None and not prediction.out_of_scope
        return transcript

    def _cancel_speculation(self) -> None:
        if self._spec is not None and self._spec.task is not None:
            self._spec.task.cancel()
        self._spec = None

    def _wall_at(self, audio_ms: float | None) -> float:
        """When the frame holding this point of the caller's audio arrived."""
        if audio_ms is None:
            return time.perf_counter()
        for frame_end, wall in self._arrivals:
            if frame_end >= audio_ms:
                return wall
        return self._arrivals[-1][1] if self._arrivals else time.perf_counter()

    async def feed_dtmf(self, digit: str) -> None:
        if self.closed:
            return
        if self.takeover is not None:
            await self.takeover.caller_dtmf(digit)
            return
        if not self.voice.dtmf:
            return
        if self.agent_speaking and self.voice.barge_in:
            await self._interrupt()
        if digit == "#":
            await self._commit_dtmf()
            return
        self._dtmf += digit
        self._dtmf_at = time.perf_counter()
        expect = self.session.expecting()
        if expect.length and len(self._dtmf) >= expect.length:
            await self._commit_dtmf()

    def played(self, mark: str) -> None:
        """The channel reports the caller has heard audio up to this mark."""
        if mark.endswith(":last"):
            self._playback_end = min(self._playback_end, time.perf_counter())
            self._last_activity = time.perf_counter()

    # ---- speech boundaries -------------------------------------------------------------

    async def _on_speech_start(self, now: float, onset_ms: float | None) -> None:
        self._in_speech = True
        self._last_activity = now
        self._quiet_frames = 0
        if self._pending:
            self._utterance.extend(self._gap)
        else:
            self._speech_level = 0.0
            self._utterance = bytearray(b"".join(self._preroll))
            self._speech_start_ms = self.audio_ms - len(self._utterance) / 32
        self._gap = bytearray()
        self._preroll.clear()
        self._pending = False
        self._cancel_speculation()  # the caller went on: any guess is stale
        if self.agent_speaking and self.voice.barge_in and self._barge is None:
            self._barge = _Barge(started_audio_ms=onset_ms if onset_ms is not None else self.audio_ms)

    def _on_speech_end(self, now: float, end_ms: float | None) -> None:
        self._in_speech = False
        self._gap = bytearray()
        vad_end = end_ms if end_ms is not None else self.audio_ms
        # The VAD's smoothing reports the end 50-150 ms after the last word; the silence
        # that decides the turn is counted from the last loud frame instead.
        self._speech_end_ms = _last_loud_ms(self._utterance, self.audio_ms, vad_end)
        self._speech_end_at = self._wall_at(self._speech_end_ms)
        self._last_activity = now
        self._pending = True
        if self._spec is not None:
            # the VAD agrees the caller paused: an early guess still queued is now what the
            # turn most likely waits for
            self.engines.pool.promote(self._spec.ticket, URGENT)

    async def _judge_barge_in(self) -> None:
        """Stop playback for an interruption within a fraction of a second, not for "uh-huh".

        Within the first quarter second nobody can tell "okay…" from "oh wait…" by content,
        so the rule is by duration with a veto: speech that lasts `barge_in_min_speech_ms`
        stops playback, unless a quick recognition of its first syllables (a probe sent
        through the recogniser at urgent priority) heard a backchannel. A vetoed backchannel
        that goes on past `barge_in_max_hold_ms`, or that a later probe hears as words, stops
        playback after all.
        """
        barge = self._barge
        assert barge is not None  # nosec B101: type narrowing; called only while a barge-in is being decided
        if not self.agent_speaking:
            self._cancel_probes(barge)
            self._barge = None  # the agent finished first: an ordinary turn
            return
        heard_ms = self.audio_ms - barge.started_audio_ms
        for index, probe in enumerate(barge.probes):
            if probe.done() and not probe.cancelled() and probe.exception() is None and index >= barge.judged:
                barge.judged = index + 1
                verdict = self._classify(probe.result().text)
                log.debug("barge probe %d heard %r (%s) at %.0f ms", index, probe.result().text, verdict, heard_ms)
                if verdict != "unknown":
                    barge.heard, barge.verdict = probe.result().text, verdict
        if (
            self._in_speech
            and len(barge.probes) < len(BARGE_PROBES_MS)
            and heard_ms >= BARGE_PROBES_MS[len(barge.probes)]
        ):
            # the first probe listens for acknowledgements; the later one listens without bias
            prompt = BACKCHANNEL_PROMPT if not barge.probes else None
            task = asyncio.create_task(self._recognize(bytes(self._utterance), URGENT, prompt, quick=True))
            launched = time.perf_counter()
            task.add_done_callback(
                lambda t: log.debug(
                    "barge probe done in %.0f ms: %r",
                    (time.perf_counter() - launched) * 1000,
                    t.result().text if not t.cancelled() and t.exception() is None else None,
                )
            )
            barge.probes.append(task)
        if not self._in_speech:
            if self._pending:
                # speech ended while the agent kept talking: a backchannel or a noise, not a turn
                log.info("call %s backchannel ignored (probe heard %r)", self.session.id, barge.heard)
                self.stats.backchannels += 1
                self._cancel_probes(barge)
                self._barge = None
                self._pending = False
                self._utterance = bytearray()
                self._gap = bytearray()
            return
        first_pending = bool(barge.probes) and not barge.probes[0].done()
        min_ms = self.voice.barge_in_min_speech_ms
        if (
            heard_ms >= min_ms
            and barge.verdict != "backchannel"
            and not (first_pending and heard_ms < min_ms + FIRST_PROBE_GRACE_MS)
        ) or heard_ms >= self.voice.barge_in_max_hold_ms:
            log.info("call %s barge-in after %.0f ms (probe heard %r)", self.session.id, heard_ms, barge.heard)
            self.stats.barge_ins += 1
            self._cancel_probes(barge)
            self._barge = None
            await self._interrupt()

    def _classify(self, text: str) -> str:
        """'words', 'backchannel', or 'unknown' when the probe heard nothing word-like.

        Cut-off syllables ("Mm-", "Uh-") and fillers count as acknowledgements: a caller
        starting a real interruption has, a tenth of a second in, usually said more."""
        words = [w for w in re.findall(r"[a-z']+", text.lower()) if len(w) > 1 or w in ("a", "i")]
        if not words:
            return "unknown"
        acks = [*self.voice.backchannels, *FILLERS]
        return "backchannel" if is_backchannel(" ".join(words), acks) else "words"

    @staticmethod
    def _cancel_probes(barge: _Barge) -> None:
        for probe in barge.probes:
            if not probe.done():
                probe.cancel()

    async def _interrupt(self) -> None:
        if self._speak_task is not None and not self._speak_task.done():
            self._speak_task.cancel()
        self._playback_end = time.perf_counter()
        if self._current is not None and self._current.first_audio_at:
            self._current.interrupted = True
        await self.output.send_clear()

    # ---- the ticker: end of turn, no-input, DTMF --------------------------------------------

    async def _tick_forever(self) -> None:
        try:
            while not self.closed:
                await asyncio.sleep(FRAME_MS / 1000)
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
        now = time.perf_counter()
        if self._hangup_after_playback and not self.agent_speaking:
            await self._hangup(self._hangup_after_playback)
            return
        if self._pending and self._barge is None and not self._busy():
            # measured on the caller's audio, not the clock: media held up on the way (jitter, a
            # stalled sender) is not a pause; media that stopped altogether is filled in below
            silence = self.audio_ms - self._speech_end_ms
            await self._consider_end_of_turn(silence)
        await self._fill_line_gap(now)
        if self._dtmf and (now - self._dtmf_at) * 1000 >= self.voice.dtmf_inter_digit_ms:
            await self._commit_dtmf()
        if (
            not self._in_speech
            and not self._pending
            and not self._busy()
            and not self.agent_speaking
            and not self._dtmf
            and not self.session.ended
        ):
            timing = self.voice.timing(self.session.state)
            timeout = timing.silence_timeout_ms or self.voice.silence_timeout_ms
            if (now - max(self._last_activity, self._playback_end)) * 1000 >= timeout:
                self._last_activity = now
                self._turn_task = asyncio.create_task(self._no_input())

    async def _fill_line_gap(self, now: float) -> None:
        """Take missing media in the middle of speech, or in the pause that may end the turn, as
        silence, in step with the clock (the end of a turn is timed on the audio, so without this
        a caller whose media stopped would never be answered).

        Only a gap seen by a tick that ran on time counts: after the event loop itself stalled,
        frames that arrived meanwhile are still waiting to be read, and are not missing.
        """
        if self.takeover is not None or self.closed:
            return
        lag_ms = (now - self._last_tick) * 1000 - FRAME_MS
        self._last_tick = now
        if not self._line_silent:
            gap_ms = (now - self._media_at) * 1000
            if not (
                (self._in_speech or self._pending)
                and lag_ms < FRAME_MS
                and gap_ms >= max(LINE_GAP_MS, 2 * self._cadence_ms)
            ):
                return
            self._line_silent = True
        if not (self._in_speech or self._pending or self._barge is not None):
            self._line_silent = False  # the utterance is dealt with; idle time runs on the clock
            return
        frames = int((now - self._media_at) * 1000 // FRAME_MS)
        for _ in range(frames):
            await self._take_audio(_SILENT_FRAME)
        self._media_at += frames * FRAME_MS / 1000
        self.stats.silence_filled_ms += frames * FRAME_MS

    def _busy(self) -> bool:
        return self._turn_task is not None and not self._turn_task.done()

    async def _consider_end_of_turn(self, silence_ms: float) -> None:
        if silence_ms >= SPECULATE_AFTER_MS and self._spec is None:
            # past the VAD's offset: this recognition is almost always the turn's final one
            self._speculate(URGENT)
        timing = self.voice.timing(self.session.state)
        window = timing.endpointing_ms or self.voice.endpointing_ms
        self._verdict = "unjudged"
        spec = self._spec
        if spec is not None and spec.task is not None and spec.task.done() and not spec.task.cancelled():
            exc = spec.task.exception()
            if exc is None:
                text = spec.task.result().text
                if not text.strip():
                    if silence_ms >= (timing.complete_endpointing_ms or 250):
                        self._discard_noise()
                    return
                expect = self.session.expecting()
                previous = self._reading[1] if self._reading is not None and self._reading[0] == expect else None
                verdict = self._verdict = judge_completeness(
                    text, expect, understood=spec.understood, previous=previous
                )
                if verdict == "complete":
                    window = timing.complete_endpointing_ms or window
                elif verdict == "incomplete":
                    window = timing.incomplete_endpointing_ms or window
        if silence_ms >= window:
            self._commit_speech()

    def _discard_noise(self) -> None:
        self.stats.discarded_noise += 1
        self._pending = False
        self._spec = None
        self._utterance = bytearray()
        self._gap = bytearray()

    def _commit_speech(self) -> None:
        audio = bytes(self._utterance)
        spec = self._spec
        # an early guess still holds if everything heard after it was quiet
        if spec is not None and not (
            spec.audio_len <= len(audio) and _is_quiet(audio[spec.audio_len :], self._speech_level)
        ):
            spec = None
        if spec is None:
            self._cancel_speculation()
        self._spec = None
        self._pending = False
        self._utterance = bytearray()
        self._gap = bytearray()
        self._turn_no += 1
        timing = TurnTiming(
            turn=self._turn_no,
            speech_start_audio_ms=self._speech_start_ms,
            speech_end_audio_ms=self._speech_end_ms,
            speech_end_at=self._speech_end_at,
            endpoint_at=time.perf_counter(),
            verdict=self._verdict,
            state=self.session.state,
        )
        self._turn_task = asyncio.create_task(self._speech_turn(audio, spec, timing))

    async def _commit_dtmf(self) -> None:
        digits, self._dtmf = self._dtmf, ""
        if not digits or self._busy():
            self._dtmf = digits if self._busy() else ""
            return
        self._turn_no += 1
        now = time.perf_counter()
        timing = TurnTiming(turn=self._turn_no, speech_end_at=now, endpoint_at=now, asr_final_at=now, dtmf=True)
        self._turn_task = asyncio.create_task(self._handle_text(digits, timing, dtmf=True))

    # ---- turns ---------------------------------------------------------------------------

    async def _recognize(
        self, audio: bytes, priority: int, prompt: str | None = None, quick: bool = False, ticket: Ticket | None = None
    ) -> Transcript:
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        return await self.engines.pool.run(priority, self.engines.transcribe, samples, prompt, quick, ticket=ticket)

    def _context_prompt(self) -> str | None:
        """Text that primes recognition for what the agent just asked for."""
        expect = self.session.expecting()
        if expect.value_type in DIGIT_TYPES:
            return DIGITS_PROMPT
        return None

    async def _speech_turn(self, audio: bytes, spec: _Speculation | None, timing: TurnTiming) -> None:
        try:
            if spec is not None and spec.task is not None:
                transcript = await spec.task
                timing.speculative_hit = True
            else:
                transcript = await self._recognize(audio, URGENT, self._context_prompt())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("speech recognition failed on call %s", self.session.id)
            return
        timing.asr_final_at = time.perf_counter()
        timing.asr_compute_ms = transcript.compute_ms
        if not transcript.text.strip():
            speech_ms = timing.speech_end_audio_ms - timing.speech_start_audio_ms - PREROLL_MS
            if speech_ms < UNHEARD_MIN_SPEECH_MS:
                self.stats.discarded_noise += 1  # a cough or a click: no turn
                return
            # a real stretch of speech that yielded no words: say so rather than stay silent
            result = await self.session.unheard()
            await self._emit_turn(result)
            self._start_speaking(result.text, timing)
            if result.ended:
                self._conversation_ended(result)
            return
        await self._handle_text(transcript.text, timing)

    async def _handle_text(self, text: str, timing: TurnTiming, *, dtmf: bool = False) -> None:
        timing.text = text
        self._current = timing
        await self.output.send_event({"type": "transcript", "role": "user", "text": text, "final": True, "dtmf": dtmf})
        asked = self.session.expecting()
        replies: asyncio.Queue[str | None] | None = None

        def speak_now(reply: str) -> None:
            # the first sentence is spoken while the session may still wait on a connector
            nonlocal replies
            if self.closed:
                return
            if replies is None:
                timing.intent_at = time.perf_counter()
                replies = asyncio.Queue()
                if self._speak_task is not None and not self._speak_task.done():
                    self._speak_task.cancel()
                self._speak_task = asyncio.create_task(self._speak(replies, timing))
            replies.put_nowait(reply)

        try:
            result = await self.session.handle(text, dtmf=dtmf, on_reply=speak_now)
        finally:
            if replies is not None:
                replies.put_nowait(None)
        timing.intent_at = timing.intent_at or time.perf_counter()
        self._note_reading(asked, text)
        timing.intent = result.intent
        await self._emit_turn(result, timing)
        if result.ended:
            self._conversation_ended(result)

    def _note_reading(self, asked: Expectation, text: str) -> None:
        """Remember the digits given for a question the agent is about to ask again."""
        self._reading = None
        if asked.value_type in DIGIT_TYPES and self.session.expecting() == asked:
            digits = extract_digit_string(digit_homophones(text))
            if digits:
                self._reading = (asked, digits)

    def _conversation_ended(self, result: TurnResult) -> None:
        """Hang up once the last words have played, unless the live-agent desk takes the escalated
        call over (hold, then a person, or the fallback: a call is never just dropped)."""
        if result.outcome == "escalated" and self._handoff is not None and self.takeover is None:
            self.takeover = self._handoff.take_over(self)
            if self.takeover is not None:
                return
        self._hangup_after_playback = result.outcome or "completed"

    # ---- what a takeover (the live-agent desk) may do with the call ---------------------------

    async def wait_played(self) -> None:
        """Until what the agent says has been sent and (by the pipeline's estimate) played."""
        while self.agent_speaking and not self.closed:
            await asyncio.sleep(FRAME_MS / 1000)

    async def wait_sent(self) -> None:
        """Until what the agent says has been synthesised and sent (it may still be playing)."""
        task = self._speak_task
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def say(self, text: str, *, follow_on: bool = False) -> None:
        """Speak `text` once what is playing has played (`follow_on`: right behind it, no pause),
        and wait until the caller has heard it."""
        await (self.wait_sent() if follow_on else self.wait_played())
        if self.closed:
            return
        await self.output.send_event({"type": "transcript", "role": "agent", "text": text, "final": True})
        self._start_speaking(text, None)
        task = self._speak_task
        if task is not None:
            await asyncio.wait({task})
        await self.wait_played()

    async def stop_speaking(self) -> None:
        """Cut what the agent is saying (the caller's queued audio is cleared too)."""
        await self._interrupt()

    async def recognize(self, pcm16: bytes, *, digits: bool = False) -> str:
        """Words in caller audio (16 kHz int16), primed for dictated digits when `digits`."""
        transcript = await self._recognize(pcm16, URGENT, DIGITS_PROMPT if digits else None)
        return transcript.text

    async def end_call(self, reason: str) -> None:
        """The agent side hangs up now."""
        await self._hangup(reason)

    async def _no_input(self) -> None:
        result = await self.session.no_input()
        await self._emit_turn(result)
        self._start_speaking(result.text, None)
        if result.ended:
            self._hangup_after_playback = "no_input"

    async def _emit_turn(self, result: TurnResult, timing: TurnTiming | None = None) -> None:
        data = result.as_dict()
        data.pop("events", None)
        await self.output.send_event({"type": "transcript", "role": "agent", "text": result.text, "final": True})
        await self.output.send_event({"type": "turn", **data})

    # ---- speaking --------------------------------------------------------------------------

    def _start_speaking(self, text: str, timing: TurnTiming | None) -> None:
        if not text.strip() or self.closed:
            return
        replies: asyncio.Queue[str | None] = asyncio.Queue()
        replies.put_nowait(text)
        replies.put_nowait(None)
        self._speak_task = asyncio.create_task(self._speak(replies, timing))

    async def _speak(self, replies: asyncio.Queue[str | None], timing: TurnTiming | None) -> None:
        """Speak the texts put on `replies` one after another, until None; a text may still be
        on its way while the ones before it play."""
        chunks: deque[str] = deque()
        index = 0

        async def more() -> None:
            # wait for the next text (or the end), split into what is synthesised at a time
            while not chunks:
                text = await replies.get()
                if text is None:
                    replies.put_nowait(None)  # stays closed
                    return
                parts = self.engines.chunk_text(text)
                if index == 0 and parts and self.engines.cached_speech(self.synth, parts[0]) is None:
                    # nothing cached to start with: speak the first clause alone, the rest renders meanwhile
                    parts = first_clause(parts[0]) + parts[1:]
                chunks.extend(parts)

        await more()
        while chunks:
            chunk = chunks.popleft()
            # Synthesise just ahead of what the caller is hearing: work for a reply that is
            # interrupted is never done, and bursts of synthesis do not crowd out other calls.
            ahead = self._playback_end - time.perf_counter()
            if index and ahead > SYNTH_AHEAD_S:
                await asyncio.sleep(ahead - SYNTH_AHEAD_S)
            priority = FIRST_AUDIO if index == 0 else BACKGROUND
            pcm = self.engines.cached_speech(self.synth, chunk)
            if pcm is None:
                pcm = await self.engines.pool.run(priority, self.engines.speech, self.synth, chunk)
            if timing is not None and index == 0:
                timing.first_tts_at = time.perf_counter()
            if not pcm:
                index += 1
                await more()
                continue
            for start in range(0, len(pcm), FRAME_BYTES):
                await self.output.send_audio(pcm[start : start + FRAME_BYTES])
            if timing is not None and not timing.first_audio_at:
                timing.first_audio_at = time.perf_counter()
                self._record(timing)
            self.stats.bytes_out += len(pcm)
            now = time.perf_counter()
            self._playback_end = max(self._playback_end, now) + len(pcm) / 2 / SAMPLE_RATE
            self._mark_seq += 1
            label, index = index, index + 1
            await more()  # is this the last of the reply? the session may still be working it out
            await self.output.send_mark(f"{self._mark_seq}:{'last' if not chunks else label}")

    def _record(self, timing: TurnTiming) -> None:
        summary = timing.summary()
        self.stats.turns.append(summary)
        log.info("call %s turn %s timings %s", self.session.id, timing.turn, summary)
        if self._on_turn is not None:
            self._on_turn(summary)
        self.session.trace.voice_turn(
            {
                "speech_end_at": timing.speech_end_at,
                "endpoint_at": timing.endpoint_at,
                "asr_final_at": timing.asr_final_at,
                "intent_at": timing.intent_at,
                "first_audio_at": timing.first_audio_at,
            },
            {
                "turn": timing.turn,
                "verdict": timing.verdict,
                "speculative_hit": timing.speculative_hit,
                "dtmf": timing.dtmf,
                "voice_to_voice_ms": summary.get("voice_to_voice_ms"),
            },
        )
        task = asyncio.create_task(self.session.record(self.runtime.recorder.voice_turn(self.session, summary)))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _hangup(self, reason: str) -> None:
        if self.closed:
            return
        self.hangup_reason = reason
        await self.output.send_event(
            {"type": "ended", "outcome": self.session.outcome, "reason": reason, "escalation": self.session.escalation}
        )
        await self.output.hangup(reason)
        await self.close(reason)


MAX_END_REFINEMENT_MS = 250
QUIET_FRACTION = 0.06  # of the caller's own speech level: below it a frame is a pause
EARLY_SPEC_MS = 80


def _rms(pcm16: bytes) -> float:
    return codec.rms(np.frombuffer(pcm16, dtype=np.int16))


def _is_quiet(pcm16: bytes, level: float) -> bool:
    frame = SAMPLE_RATE * FRAME_MS // 1000 * 2
    return all(_rms(pcm16[i : i + frame]) < QUIET_FRACTION * level for i in range(0, len(pcm16), frame))


def _last_loud_ms(utterance: bytes | bytearray, utterance_end_ms: float, vad_end_ms: float) -> float:
    """Audio time just after the last 20 ms frame of the utterance that still carries speech energy.

    "Loud" is relative to the utterance itself (6 % of its 95th-percentile frame level), so
    it follows the caller's volume; the result is never more than MAX_END_REFINEMENT_MS
    before the VAD's own estimate.
    """
    samples = np.frombuffer(bytes(utterance), dtype=np.int16)
    frame = SAMPLE_RATE * FRAME_MS // 1000
    n = samples.size // frame
    if n < 3:
        return vad_end_ms
    frames = samples[samples.size - n * frame :].reshape(n, frame).astype(np.float64)
    rms = np.sqrt((frames * frames).mean(axis=1))
    level = float(np.percentile(rms, 95))
    if level <= 0:
        return vad_end_ms
    loud = np.flatnonzero(rms > 0.06 * level)
    if loud.size == 0:
        return vad_end_ms
    end = utterance_end_ms - (n - 1 - int(loud[-1])) * FRAME_MS
    return max(min(end, vad_end_ms), vad_end_ms - MAX_END_REFINEMENT_MS)


def judge_completeness(text: str, expect: Expectation, *, understood: bool = False, previous: str | None = None) -> str:
    """'complete', 'incomplete' or 'unsure' for the words so far, given what the agent asked.

    `understood`: the words map confidently onto one of the agent's intents, which makes a
    request complete even when the recogniser left out the final full stop.
    `previous`: the digits the caller gave when the agent last asked this same question (it is
    asking again). A caller who reads the number again starts it the same way; a first group
    that does not is some other answer, not the start of that number, so it is not waited on.
    """
    stripped = text.strip()
    if not stripped:
        return "unsure"
    if expect.value_type in DIGIT_TYPES:
        digits = extract_digit_string(digit_homophones(stripped)) or ""
        needed = expect.length or (10 if expect.value_type == "phone" else None)
        if needed is not None and len(digits) >= needed:
            return "complete"
        if digits:
            # A caller reading digits pauses between groups: wait for more while the words
            # so far end in a digit ("one one eight … [pause] five nine"). One digit short
            # is not such a pause (nobody stops before the last digit) but a digit the
            # recogniser lost, and waiting longer would not bring it back.
            ends_in_digit = bool(
                re.search(r"(\d|zero|oh|one|two|three|four|five|six|seven|eight|nine)\W*$", stripped, re.IGNORECASE)
            )
            if not ends_in_digit or (needed is not None and needed - len(digits) == 1):
                return "unsure"
            if previous and not starts_like(digits, previous):
                return "unsure"
            return "incomplete"
        # no digits at all: the caller said something else ("I don't have it"); judge the words
    if _TRAILING_INCOMPLETE.search(stripped):
        return "incomplete"
    if expect.value_type in ("yes_no", "money", "date"):
        if parse_slot(expect.value_type, stripped).ok:
            return "complete"
        if expect.kind != "open":
            return "unsure"
    elif len(stripped.split()) <= SHORT_ANSWER_WORDS and parse_slot("yes_no", stripped).ok:
        return "complete"  # "no thanks, that's all" to any question is a whole answer
    if stripped[-1:] in ".?!" or understood:
        return "complete"
    return "unsure"


def starts_like(digits: str, reading: str) -> bool:
    """Whether `digits` could be the first group of `reading`, the same number read earlier.

    Either reading may have lost or misheard a digit, so the group is compared with the start
    of the earlier reading one digit shorter, as long, and one longer, allowing one edit per
    four digits (at least one).
    """
    n = len(digits)
    allowed = max(1, n // 4)
    return any(_edit_distance(digits, reading[:k]) <= allowed for k in range(max(1, n - 1), n + 2))


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]
