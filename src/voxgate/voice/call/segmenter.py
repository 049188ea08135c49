"""The segmenter: caller audio cut into utterances by the VAD, with preroll before the onset, the
pause watched frame by frame (so recognition can start before the VAD confirms the pause), and the
end of speech put at the last loud frame rather than where the VAD's smoothing reports it."""

from __future__ import annotations

from collections import deque

import numpy as np

from voxgate.voice import codec
from voxgate.voice.call.events import (
    NO_EVENTS,
    QUIET_SPELL,
    VOICE_BACK,
    SegmentEvent,
    SpeechEnded,
    SpeechStarted,
)
from voxgate.voice.call.ports import Vad
from voxgate.voice.types import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, audio_ms

PREROLL_MS = 300  # audio kept from before the detected onset, so first syllables are not cut
MAX_UTTERANCE_MS = 30000  # a caller who never pauses still gets an answer
QUIET_FRACTION = 0.06  # of the caller's own speech level: below it a frame is a pause
LEVEL_DECAY = 0.998  # per frame: the caller's speech level follows them getting quieter, slowly
EARLY_ASR_QUIET_MS = 80  # quiet this long starts recognition early
EARLY_ASR_MIN_MS = PREROLL_MS + 200  # an utterance shorter than this is not worth guessing at
MAX_END_REFINEMENT_MS = 250  # the last loud frame is never put further back than this before the VAD's end
LOUD_PERCENTILE = 95  # an utterance's level: the frame level this percentile of its frames stay under

_QUIET_ONLY: tuple[SegmentEvent, ...] = (QUIET_SPELL,)
_VOICE_BACK_ONLY: tuple[SegmentEvent, ...] = (VOICE_BACK,)


class Segmenter:
    """One caller's audio as utterances: what is buffered where, and when speech starts and ends."""

    def __init__(self, vad: Vad) -> None:
        self.vad = vad
        self.audio_ms = 0.0  # caller audio taken so far
        self.preroll: deque[bytes] = deque(maxlen=PREROLL_MS // FRAME_MS)
        self.utterance = bytearray()
        self.gap = bytearray()  # audio after a pause; joins the utterance only if the caller speaks again
        self.speech_level = 0.0
        self.quiet_frames = 0
        self.in_speech = False
        self.pending = False  # an utterance ended and waits for the end-of-turn decision
        self.speech_start_ms = 0.0
        self.speech_end_ms = 0.0

    def on_frame(self, pcm16: bytes) -> tuple[SegmentEvent, ...]:
        """Take one frame: the pause watch's event, then the VAD's onsets and offsets, in order."""
        self.audio_ms += audio_ms(pcm16)
        events = NO_EVENTS
        if self.in_speech:
            self.utterance.extend(pcm16)
            events = self._watch_for_a_pause(pcm16)
        elif self.pending:
            self.gap.extend(pcm16)
        else:
            self.preroll.append(pcm16)
        for window in self.vad.feed(pcm16):
            at = window.event_ms if window.event_ms is not None else self.audio_ms
            if window.event == "onset":
                events = (*events, self._start(at))
            elif window.event == "offset":
                events = (*events, self.end(at))
        return events

    def _watch_for_a_pause(self, pcm16: bytes) -> tuple[SegmentEvent, ...]:
        """Quiet relative to the caller's own level, before the VAD confirms the pause.

        The VAD's offset lags the last word by 50-150 ms; the frame energy does not.
        """
        level = rms(pcm16)
        self.speech_level = max(self.speech_level * LEVEL_DECAY, level)
        if level >= QUIET_FRACTION * self.speech_level:
            self.quiet_frames = 0
            return _VOICE_BACK_ONLY
        self.quiet_frames += 1
        if self.quiet_frames * FRAME_MS >= EARLY_ASR_QUIET_MS and audio_ms(self.utterance) >= EARLY_ASR_MIN_MS:
            return _QUIET_ONLY
        return NO_EVENTS

    def _start(self, onset_ms: float) -> SpeechStarted:
        self.in_speech = True
        self.quiet_frames = 0
        if self.pending:
            self.utterance.extend(self.gap)
        else:
            self.speech_level = 0.0
            self.utterance = bytearray(b"".join(self.preroll))
            self.speech_start_ms = self.audio_ms - audio_ms(self.utterance)
        self.gap = bytearray()
        self.preroll.clear()
        self.pending = False
        return SpeechStarted(onset_ms)

    def end(self, vad_ms: float) -> SpeechEnded:
        """Speech ended where the VAD says (`vad_ms`); the pause is counted from the last loud frame."""
        self.in_speech = False
        self.gap = bytearray()
        self.speech_end_ms = last_loud_ms(self.utterance, self.audio_ms, vad_ms)
        self.pending = True
        return SpeechEnded(vad_ms, self.speech_end_ms)

    def overlong(self) -> SpeechEnded | None:
        """End an utterance that has gone on for `MAX_UTTERANCE_MS` without a pause."""
        if self.in_speech and audio_ms(self.utterance) > MAX_UTTERANCE_MS:
            return self.end(self.audio_ms)
        return None

    @property
    def silence_ms(self) -> float:
        """Caller audio since the end of the pending utterance's speech."""
        return self.audio_ms - self.speech_end_ms

    def take(self) -> bytes:
        """The pending utterance, which is now the caller's turn (or dropped)."""
        audio = bytes(self.utterance)
        self.drop()
        return audio

    def drop(self) -> None:
        """Forget the pending utterance (a noise, a backchannel, or taken as the turn)."""
        self.pending = False
        self.utterance = bytearray()
        self.gap = bytearray()


def rms(pcm16: bytes) -> float:
    """The RMS level of int16 audio."""
    return codec.rms(np.frombuffer(pcm16, dtype=np.int16))


def is_quiet(pcm16: bytes, level: float) -> bool:
    """Whether every frame of `pcm16` is quiet relative to the speech `level`."""
    return all(rms(pcm16[i : i + FRAME_BYTES]) < QUIET_FRACTION * level for i in range(0, len(pcm16), FRAME_BYTES))


def last_loud_ms(utterance: bytes | bytearray, utterance_end_ms: float, vad_end_ms: float) -> float:
    """Audio time just after the last 20 ms frame of the utterance that still carries speech energy.

    "Loud" is relative to the utterance itself (6 % of its 95th-percentile frame level), so
    it follows the caller's volume; the result is never more than MAX_END_REFINEMENT_MS
    before the VAD's own estimate.
    """
    samples = np.frombuffer(bytes(utterance), dtype=np.int16)
    n = samples.size // FRAME_SAMPLES
    if n < 3:
        return vad_end_ms
    frames = samples[samples.size - n * FRAME_SAMPLES :].reshape(n, FRAME_SAMPLES).astype(np.float64)
    levels = np.sqrt((frames * frames).mean(axis=1))
    level = float(np.percentile(levels, LOUD_PERCENTILE))
    if level <= 0:
        return vad_end_ms
    loud = np.flatnonzero(levels > QUIET_FRACTION * level)
    if loud.size == 0:
        return vad_end_ms
    end = utterance_end_ms - (n - 1 - int(loud[-1])) * FRAME_MS
    return max(min(end, vad_end_ms), vad_end_ms - MAX_END_REFINEMENT_MS)
