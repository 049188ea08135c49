"""Fakes for driving a call without models or real time: a caller voice whose words a fake
recogniser can read back, a fake VAD (speech where the audio is loud, or scripted), fake speech
engines whose work takes virtual time, and a scripted agent runtime.

A `FakeVoice` speaks each text as a tone of its own pitch, as long as the words would take;
`FakeRecognizer` hears the pitches in a stretch of audio and returns the words that long a stretch
of each tone carries (a part of an utterance yields its first words; the whole of it, the text as
scripted). With `VirtualClock` and `CallPipeline(clock=...)` a test drives a call frame by frame
in milliseconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxgate.bundle.models import VoiceSettings
from voxgate.clock import MonotonicClock
from voxgate.runtime.events import TurnResult
from voxgate.runtime.nlu.intents import IntentPrediction
from voxgate.runtime.session import Expectation
from voxgate.voice.call.barge_in import ProbeLatency
from voxgate.voice.call.ports import Vad
from voxgate.voice.pool import Ticket
from voxgate.voice.types import (
    BYTES_PER_MS,
    FRAME_MS,
    FRAME_SAMPLES,
    INT16_SCALE,
    SAMPLE_RATE,
    SpeechSynthesizer,
    Transcript,
)
from voxgate.voice.vad import WINDOW_SAMPLES, SpeechDetector

MS_PER_WORD = 300  # how long a fake caller takes to say a word
VOICE_LEVEL = 8000  # the fake caller's amplitude (int16)
BASE_HZ = 400  # the first text's pitch; each further text is one FFT bin (50 Hz) higher
BIN_HZ = SAMPLE_RATE // FRAME_SAMPLES  # 50 Hz: one 20 ms frame's FFT resolution
MAX_VOICES = 60
LOUD_RMS = 500.0  # a fake VAD hears speech in a window louder than this
SPEECH_PROB = 0.95
SILENCE_PROB = 0.02
TTS_MS_PER_CHAR = 40  # fake synthesis: reply audio this long per character
TTS_LEVEL = 3000
_SENTENCE = re.compile(r"(?<=[.?!])\s+")


def silence(ms: float) -> bytes:
    """Digital silence of `ms` milliseconds (16 kHz int16)."""
    return bytes(int(ms) * BYTES_PER_MS)


def tone(hz: float, ms: float, level: int) -> bytes:
    """A sine of `hz` for `ms` at amplitude `level` (16 kHz int16)."""
    t = np.arange(int(ms) * SAMPLE_RATE // 1000) / SAMPLE_RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


@dataclass
class _Said:
    text: str
    hz: float
    ms: float


class FakeVoice:
    """A caller whose every text has its own pitch, so `FakeRecognizer` can tell what was said."""

    def __init__(self, ms_per_word: float = MS_PER_WORD) -> None:
        self.ms_per_word = ms_per_word
        self._said: dict[str, _Said] = {}

    def say(self, text: str, ms: float | None = None) -> bytes:
        """`text` as audio: its tone for `ms` (default: `ms_per_word` a word), frame-aligned."""
        said = self._said.get(text)
        if said is None:
            if len(self._said) >= MAX_VOICES:
                raise ValueError(f"a FakeVoice tells at most {MAX_VOICES} texts apart")
            length = ms if ms is not None else self.ms_per_word * len(text.split())
            said = _Said(text, BASE_HZ + BIN_HZ * len(self._said), FRAME_MS * math.ceil(length / FRAME_MS))
            self._said[text] = said
        return tone(said.hz, said.ms, VOICE_LEVEL)

    def heard(self, hz: float) -> _Said | None:
        """What was said at this pitch."""
        return next((s for s in self._said.values() if abs(s.hz - hz) < BIN_HZ / 2), None)


class FakeRecognizer:
    """Reads back a `FakeVoice` (`voice`), or returns scripted `texts` in order, one per call."""

    name = "fake-asr"

    def __init__(self, voice: FakeVoice | None = None, texts: Iterable[str] = ()) -> None:
        self.voice = voice
        self.texts = list(texts)
        self.calls: list[tuple[str | None, bool, str]] = []  # (prompt, quick, what it returned)

    def transcribe(self, audio: np.ndarray, prompt: str | None = None, quick: bool = False) -> Transcript:
        """What the audio (float32 in [-1, 1]) says."""
        text = self.texts.pop(0) if self.texts else self._read(audio)
        self.calls.append((prompt, quick, text))
        return Transcript(text, audio.size * 1000 / SAMPLE_RATE, 0.0, self.name)

    def _read(self, audio: np.ndarray) -> str:
        if self.voice is None:
            return ""
        n = audio.size // FRAME_SAMPLES
        frames = audio[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES) if n else np.zeros((0, FRAME_SAMPLES))
        runs: list[tuple[_Said, int]] = []
        for frame in frames:
            if np.sqrt(np.mean(frame * frame)) * INT16_SCALE < LOUD_RMS:
                continue
            said = self.voice.heard(float(np.argmax(np.abs(np.fft.rfft(frame)))) * BIN_HZ)
            if said is None:
                continue
            if runs and runs[-1][0] is said:
                runs[-1] = (said, runs[-1][1] + 1)
            else:
                runs.append((said, 1))
        return " ".join(_words_heard(said, count * FRAME_MS) for said, count in runs)


def _words_heard(said: _Said, heard_ms: float) -> str:
    if heard_ms >= said.ms:
        return said.text
    words = said.text.split()
    return " ".join(words[: max(1, math.ceil(len(words) * heard_ms / said.ms))]).rstrip(".?!,")


class LoudnessProbabilities:
    """A fake Silero: speech probability by loudness per 32 ms window, or from a `script`."""

    def __init__(self, script: Iterable[float] = ()) -> None:
        self.script = list(script)
        self._pending = np.zeros(0, dtype=np.int16)

    def feed(self, pcm16: bytes) -> list[float]:
        """One probability per completed window."""
        samples = np.concatenate([self._pending, np.frombuffer(pcm16, dtype="<i2")])
        n = samples.size // WINDOW_SAMPLES
        probs: list[float] = []
        for i in range(n):
            window = samples[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES].astype(np.float64)
            if self.script:
                probs.append(self.script.pop(0))
            else:
                probs.append(SPEECH_PROB if np.sqrt(np.mean(window * window)) > LOUD_RMS else SILENCE_PROB)
        self._pending = samples[n * WINDOW_SAMPLES :]
        return probs

    def reset(self) -> None:
        """Forget buffered audio."""
        self._pending = np.zeros(0, dtype=np.int16)


def fake_vad(script: Iterable[float] = ()) -> SpeechDetector:
    """The real hysteresis detector over `LoudnessProbabilities`."""
    return SpeechDetector(vad=LoudnessProbabilities(script))


class FakeSynthesizer:
    """Speaks any text as a quiet tone `ms_per_char` long a character."""

    name = "fake-tts"
    sample_rate = SAMPLE_RATE

    def __init__(self, ms_per_char: float = TTS_MS_PER_CHAR) -> None:
        self.ms_per_char = ms_per_char
        self.spoken: list[str] = []

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """One chunk of audio for the whole text."""
        self.spoken.append(text)
        yield np.frombuffer(self.audio(text), dtype=np.int16)

    def audio(self, text: str) -> bytes:
        """The PCM for `text`."""
        return tone(220.0, self.ms_per_char * len(text.strip()), TTS_LEVEL) if text.strip() else b""


@dataclass
class FakeEngines:
    """Speech engines for one test (`voice.call.ports.SpeechEngines`): recognition and synthesis
    take `asr_delay_s` and `tts_delay_s` of the clock's time, and nothing runs in a thread."""

    clock: MonotonicClock
    recognizer: FakeRecognizer = field(default_factory=FakeRecognizer)
    synth: FakeSynthesizer = field(default_factory=FakeSynthesizer)
    asr_delay_s: float = 0.1
    tts_delay_s: float = 0.05
    vad_script: list[float] = field(default_factory=list)
    recognitions: list[tuple[int, str | None, bool]] = field(default_factory=list)  # (priority, prompt, quick)
    alternatives: list[list[str]] = field(default_factory=list)  # what each call of `readings` returns
    rereads: list[str | None] = field(default_factory=list)  # the prompt of each call of `readings`
    reread_at: list[float] = field(default_factory=list)  # and when it was made, on the clock
    readings_delay_s: float | None = None  # how long `readings` takes (default: `asr_delay_s`)
    probe_latency: ProbeLatency = field(default_factory=ProbeLatency)
    vads: list[Vad] = field(default_factory=list)

    def synthesizer(self, voice: str) -> SpeechSynthesizer:
        """The one fake synthesiser."""
        return self.synth

    async def acquire_vad(self) -> Vad:
        """A fresh fake VAD."""
        vad = fake_vad(self.vad_script)
        self.vads.append(vad)
        return vad

    def release_vad(self, vad: Vad) -> None:
        """Nothing is pooled."""

    def chunk_text(self, text: str) -> list[str]:
        """A reply cut at sentence ends."""
        return [part for part in _SENTENCE.split(text.strip()) if part]

    def cached_speech(self, synth: SpeechSynthesizer, text: str) -> bytes | None:
        """Nothing is cached."""
        return None

    async def synthesize(self, synth: SpeechSynthesizer, text: str, priority: int) -> bytes:
        """The fake audio, after `tts_delay_s`."""
        await self.clock.sleep(self.tts_delay_s)
        return b"".join(chunk.astype("<i2").tobytes() for chunk in synth.synthesize(text))

    async def recognize(
        self, pcm16: bytes, priority: int, prompt: str | None = None, quick: bool = False, ticket: Ticket | None = None
    ) -> Transcript:
        """What the fake recogniser reads, after `asr_delay_s`."""
        self.recognitions.append((priority, prompt, quick))
        await self.clock.sleep(self.asr_delay_s)
        samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / INT16_SCALE
        return self.recognizer.transcribe(samples, prompt, quick)

    async def readings(self, pcm16: bytes, priority: int, prompt: str | None = None) -> list[str]:
        """The next of `alternatives` (scripted n-best lists), after `asr_delay_s`; none when it is empty."""
        self.rereads.append(prompt)
        self.reread_at.append(self.clock.now())
        await self.clock.sleep(self.asr_delay_s if self.readings_delay_s is None else self.readings_delay_s)
        return self.alternatives.pop(0) if self.alternatives else []

    def has_room(self) -> bool:
        """Always."""
        return True

    def promote(self, ticket: Ticket, priority: int) -> bool:
        """Nothing queues."""
        return False


# ---- a scripted agent ------------------------------------------------------------------------------


@dataclass
class Answer:
    """What the scripted agent says to one caller turn, and what it expects next."""

    reply: str
    state: str = "idle"
    expect: Expectation = field(default_factory=lambda: Expectation("open"))
    intent: str | None = None
    outcome: str | None = None  # set: the conversation ends (or escalates) with this outcome
    delay_s: float = 0.0  # the agent thinks (a connector) before the reply's last sentence


class _Agent:
    def __init__(self, voice: VoiceSettings) -> None:
        self.voice = voice


class _Trace:
    def __init__(self) -> None:
        self.turns: list[tuple[dict[str, float], dict[str, Any]]] = []

    def voice_turn(self, timing: dict[str, float], attributes: dict[str, Any]) -> None:
        self.turns.append((timing, attributes))


class ScriptedSession:
    """A conversation that answers by script (the parts of `runtime.session.Session` a call uses)."""

    def __init__(self, runtime: ScriptedRuntime, session_id: str | None) -> None:
        self.runtime = runtime
        self.id = session_id or "scripted"
        self.state = "new"
        self.ended = False
        self.outcome: str | None = None
        self.escalation: dict[str, Any] | None = None
        self.expect = Expectation("open")
        self.trace = _Trace()
        self.heard: list[tuple[str, bool]] = []  # (text, dtmf) of every caller turn
        self.silences = 0
        self.unheard_count = 0
        self.closed_with: str | None = None
        self.voice_turns: list[Mapping[str, Any]] = []

    async def start(self) -> TurnResult:
        """The greeting."""
        self.state = "idle"
        out = TurnResult(user=None)
        out.say(self.runtime.voice.greeting)
        return out

    def expecting(self) -> Expectation:
        """What the script said comes next."""
        return Expectation("ended") if self.ended else self.expect

    async def handle(
        self, text: str, *, dtmf: bool = False, on_reply: Callable[[str], None] | None = None
    ) -> TurnResult:
        """The scripted answer to `text` (sentences told to `on_reply` as they are said)."""
        self.heard.append((text, dtmf))
        answer = self.runtime.answer(text)
        out = TurnResult(user=text, listener=on_reply, intent=answer.intent)
        sentences = [s for s in _SENTENCE.split(answer.reply) if s]
        for sentence in sentences[:-1]:
            out.say(sentence)
        if answer.delay_s:
            await self.runtime.clock.sleep(answer.delay_s)
        for sentence in sentences[-1:]:
            out.say(sentence)
        self.state, self.expect = answer.state, answer.expect
        if answer.outcome is not None:
            self.ended, self.outcome = True, answer.outcome
            if answer.outcome == "escalated":
                self.escalation = {"reason": "scripted"}
        out.state, out.ended, out.outcome = self.state, self.ended, self.outcome
        return out

    async def unheard(self) -> TurnResult:
        """Speech without words: ask again."""
        self.unheard_count += 1
        out = TurnResult(user=None)
        out.say("Sorry, I didn't catch that.")
        return out

    async def no_input(self) -> TurnResult:
        """Silence: reprompt, then give up."""
        self.silences += 1
        out = TurnResult(user=None)
        voice = self.runtime.voice
        if self.silences > voice.silence_reprompts:
            out.say(voice.no_input_goodbye)
            self.ended, self.outcome = True, "abandoned"
            out.ended, out.outcome = True, "abandoned"
        else:
            out.say(voice.no_input_message)
        return out

    def record_voice_turn(self, timing: Mapping[str, Any]) -> None:
        """Keep a voice turn's timings."""
        self.voice_turns.append(timing)

    async def close(self, reason: str = "hangup") -> str:
        """The call is over."""
        self.closed_with = reason
        return self.outcome or reason


class ScriptedRuntime:
    """An agent runtime whose sessions answer by script: `answers` maps words the caller says (a
    regular expression searched in the turn's text) to an `Answer`; anything else gets `fallback`.
    Intents: `understood` words predict an intent, nothing else does."""

    def __init__(
        self,
        clock: MonotonicClock,
        answers: Mapping[str, Answer],
        *,
        voice: VoiceSettings | None = None,
        fallback: Answer | None = None,
        understood: Iterable[str] = (),
    ) -> None:
        self.clock = clock
        self.voice = voice or VoiceSettings()
        self.agent = _Agent(self.voice)
        self.answers = dict(answers)
        self.fallback = fallback or Answer("Sorry, I didn't understand.")
        self.understood = set(understood)
        self.sessions: list[ScriptedSession] = []
        self.predictions: list[str] = []

    def new_session(self, **kwargs: Any) -> ScriptedSession:
        """A scripted session."""
        session = ScriptedSession(self, kwargs.get("session_id"))
        self.sessions.append(session)
        return session

    def answer(self, text: str) -> Answer:
        """The scripted answer to one caller turn."""
        for pattern, answer in self.answers.items():
            if re.search(pattern, text, re.IGNORECASE):
                return answer
        return self.fallback

    async def predict(self, text: str) -> IntentPrediction:
        """An intent for understood words only."""
        self.predictions.append(text)
        known = text.lower().strip(" .?!") in self.understood
        return IntentPrediction(
            intent="known" if known else None,
            confidence=1.0 if known else 0.0,
            scores={},
            out_of_scope=not known,
            margin=0.0,
        )
