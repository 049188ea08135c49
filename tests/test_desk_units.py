"""Small pieces of the live-agent desk: the generated hold audio, read-back of numbers, queue settings."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from voxgate.bundle.models import Queue
from voxgate.handoff.bridge import HOLD_NOTES_HZ, hold_audio, spoken_number


def _share(x: np.ndarray, freq: float) -> float:
    k = np.arange(x.size)
    spectrum = np.dot(x, np.exp(-2j * np.pi * freq * k / 16000))
    return float(2 * abs(spectrum) ** 2 / (x.size * np.dot(x, x)))


def test_hold_audio_is_a_soft_chime_on_its_own_notes() -> None:
    audio = np.frombuffer(hold_audio(), dtype="<i2").astype(np.float64)
    assert 0 < np.abs(audio).max() < 0.2 * 32767  # soft, never clipping
    note = audio[: int(0.4 * 16000)]  # the first note
    assert _share(note, HOLD_NOTES_HZ[0]) > 0.8
    assert _share(note, 660.0) < 0.01 and _share(note, 1000.0) < 0.01
    assert np.abs(audio[int(2.0 * 16000) :]).max() == 0  # then quiet until the next cycle


def test_a_callback_number_is_read_back_in_groups() -> None:
    assert spoken_number("+14155550198") == "4 1 5, 5 5 5, 0 1 9 8"
    assert spoken_number("+447700900123") == "4 4 7, 7 0 0, 9 0 0, 1 2 3"


def test_queue_settings_are_checked() -> None:
    assert Queue().fallback == "callback" and Queue().timeout_s == 60
    with pytest.raises(ValidationError):
        Queue(fallback="voicemail")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Queue(timeout_s=0)
