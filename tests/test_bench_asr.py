"""The noisy phone line of bench/asr.py: the noise is at the SNR asked for, telephone-band noise stays
in the band, and a draw is reproducible (the voxgate-vs-bare comparison runs on the same audio)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.paths import bench_module
from voxgate.voice import codec
from voxgate.voice.types import SAMPLE_RATE

asr_bench = bench_module("asr")


def speech_like(seconds: float = 2.0) -> np.ndarray:
    """A voiced sound: harmonics of 140 Hz under a syllable-rate envelope, int16 at 16 kHz."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return (voice * envelope / np.max(np.abs(voice)) * 8000).astype(np.int16)


def on_the_line(samples16k: np.ndarray) -> np.ndarray:
    return codec.resample(samples16k, SAMPLE_RATE, asr_bench.LINE_RATE).astype(np.float64)


@pytest.mark.parametrize("snr_db", [20.0, 15.0, 10.0])
@pytest.mark.parametrize("band", [False, True])
def test_the_noise_is_at_the_snr_asked_for(snr_db: float, band: bool) -> None:
    speech = speech_like()
    clean = on_the_line(asr_bench.noisy_phone_line(speech, None, 1))
    noisy = on_the_line(asr_bench.noisy_phone_line(speech, snr_db, 1, band))
    measured = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert measured == pytest.approx(snr_db, abs=1.0)  # μ-law and resampling add a little of their own


def test_telephone_band_noise_stays_in_the_band_and_white_noise_does_not() -> None:
    silence = np.zeros(SAMPLE_RATE * 2, dtype=np.int16)
    silence[::400] = 3000  # something to set the noise level against

    def outside_share(band: bool) -> float:
        line = on_the_line(asr_bench.noisy_phone_line(silence, 0.0, 3, band))
        spectrum = np.abs(np.fft.rfft(line - on_the_line(asr_bench.noisy_phone_line(silence, None, 3)))) ** 2
        freqs = np.fft.rfftfreq(line.size, 1.0 / asr_bench.LINE_RATE)
        low, high = asr_bench.PHONE_BAND_HZ
        return float(spectrum[(freqs < low - 50) | (freqs > high + 50)].sum() / spectrum.sum())

    assert outside_share(band=True) < 0.02
    assert outside_share(band=False) > 0.1  # white noise spreads over the whole line


def test_a_draw_is_reproducible_and_another_seed_is_another_draw() -> None:
    speech = speech_like(1.0)
    a, b = asr_bench.noisy_phone_line(speech, 15.0, 7), asr_bench.noisy_phone_line(speech, 15.0, 7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, asr_bench.noisy_phone_line(speech, 15.0, 8))
    assert a.dtype == np.int16 and abs(a.size - speech.size) <= 2


def test_the_vad_figures_are_measured_on_the_pipeline_s_detector() -> None:
    """The VAD cost the bench prints: every window of the audio scored, and both timings measured."""
    audio = speech_like(1.0)
    result = asr_bench.bench_vad(audio)
    assert result["windows"] == (10 * SAMPLE_RATE // audio.size) * audio.size // 512
    assert result["us_per_window_streaming"] > 0 and result["us_per_window_model"] > 0
