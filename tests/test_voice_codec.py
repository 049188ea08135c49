"""Tests for the audio codecs at the call edges: μ-law, streaming resampling, framing, WAV/raw files."""

from __future__ import annotations

import warnings
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr

from voxgate.voice import codec
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE

DATA = Path("/usr/share/pocketsphinx/test/data")


def _sine(freq: float, rate: int, seconds: float, amp: float = 16000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _stream(resampler: codec.Resampler, samples: np.ndarray, frame: int) -> np.ndarray:
    out = [resampler.process_array(samples[i : i + frame]) for i in range(0, samples.size, frame)]
    out.append(resampler.flush_array())
    return np.concatenate(out)


# ---- μ-law ----------------------------------------------------------------------------------


def test_mulaw_known_values() -> None:
    decoded = np.frombuffer(codec.mulaw_decode(bytes([0x00, 0x80, 0xFF, 0x7F, 0x0F, 0x8F])), dtype="<i2")
    assert decoded.tolist() == [-32124, 32124, 0, 0, -16764, 16764]
    pcm = np.array([0, -1, 1, 32767, -32768, 100, -100], dtype="<i2").tobytes()
    assert codec.mulaw_encode(pcm) == bytes([0xFF, 0x7E, 0xFF, 0x80, 0x00, 0xF2, 0x72])


def test_mulaw_is_bit_exact_with_audioop_for_every_sample() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    every = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert codec.mulaw_encode(every) == audioop.lin2ulaw(every, 2)
    codes = bytes(range(256))
    assert codec.mulaw_decode(codes) == audioop.ulaw2lin(codes, 2)


def test_mulaw_round_trip() -> None:
    codes = bytes(c for c in range(256) if c != 0x7F)  # 0x7F is "negative zero" and re-encodes as 0xFF
    assert codec.mulaw_encode(codec.mulaw_decode(codes)) == codes
    x = np.arange(-32768, 32768, 7, dtype=np.int16)
    y = np.frombuffer(codec.mulaw_decode(codec.mulaw_encode(x.tobytes())), dtype="<i2").astype(int)
    # G.711 keeps about 4 bits of mantissa: error within 1/16 of the magnitude plus the smallest step
    assert np.all(np.abs(y - x.astype(int)) <= np.abs(x.astype(int)) / 16 + 8)


def test_channel_adapter_aliases() -> None:
    assert codec.pcm16_to_mulaw is codec.mulaw_encode
    assert codec.mulaw_to_pcm16 is codec.mulaw_decode


def test_float_conversions_clip_and_round() -> None:
    pcm = codec.float_to_pcm16(np.array([0.0, 0.5, -0.5, 1.5, -1.5], dtype=np.float32))
    assert np.frombuffer(pcm, dtype="<i2").tolist() == [0, 16384, -16384, 32767, -32768]
    back = codec.pcm16_to_float(pcm)
    assert back.dtype == np.float32 and back[1] == pytest.approx(0.5)


# ---- resampling -----------------------------------------------------------------------------


def test_streaming_resampler_matches_one_shot_without_frame_boundary_clicks() -> None:
    x = _sine(1000, 8000, 1.0)
    streamed = _stream(codec.Resampler(8000, SAMPLE_RATE), x, 160)  # 20 ms Twilio frames
    one_shot = soxr.resample(x, 8000, SAMPLE_RATE, quality="HQ")
    assert streamed.size == one_shot.size == 16000
    mid = slice(800, 15200)  # away from the filter's start/end transients
    assert np.max(np.abs(streamed[mid].astype(int) - one_shot[mid].astype(int))) <= 8
    # a click at a 20 ms boundary would show as a spike in the second difference
    assert np.max(np.abs(np.diff(streamed[mid].astype(int), 2))) <= 1.02 * np.max(
        np.abs(np.diff(one_shot[mid].astype(int), 2))
    )


@pytest.mark.parametrize(
    "in_rate,out_rate", [(8000, 16000), (16000, 8000), (48000, 16000), (44100, 16000), (22050, 8000), (22050, 16000)]
)
def test_resampler_keeps_length_and_emits_every_frame(in_rate: int, out_rate: int) -> None:
    resampler = codec.Resampler(in_rate, out_rate)
    frame = in_rate // 50
    x = _sine(440, in_rate, 2.0)
    sizes = [resampler.process_array(x[i : i + frame]).size for i in range(0, x.size, frame)]
    total = sum(sizes) + resampler.flush_array().size
    assert abs(total - round(x.size * out_rate / in_rate)) <= 2
    # low-latency mode: after the filter has filled, every 20 ms frame yields ~20 ms of output
    expected = out_rate // 50
    assert all(abs(s - expected) <= 2 for s in sizes[5:])


def test_resampler_flush_starts_a_new_stream_and_equal_rates_pass_through() -> None:
    r = codec.Resampler(8000, SAMPLE_RATE)
    first = _stream(r, _sine(300, 8000, 0.5), 160)
    second = _stream(r, _sine(300, 8000, 0.5), 160)
    assert first.size == second.size and np.max(np.abs(first.astype(int) - second.astype(int))) <= 2
    same = codec.Resampler(SAMPLE_RATE, SAMPLE_RATE)
    pcm = _sine(300, SAMPLE_RATE, 0.02).tobytes()
    assert same.process(pcm) == pcm and same.flush() == b""


def test_twilio_edge_frames() -> None:
    up = codec.Resampler(8000, SAMPLE_RATE)
    down = codec.Resampler(SAMPLE_RATE, 8000)
    speech = codec.read_raw(DATA / "goforward.raw")
    mulaw = codec.pcm_to_mulaw8k(speech.tobytes(), down) + codec.mulaw_encode(down.flush())
    assert abs(len(mulaw) - speech.size // 2) <= 2
    framer = codec.Reframer(codec.MULAW_FRAME_BYTES)
    frames = framer.push(mulaw) + framer.flush(pad=codec.MULAW_SILENCE)
    assert all(len(f) == 160 for f in frames)
    pcm = b"".join(codec.mulaw8k_to_pcm16k(f, up) for f in frames) + up.flush()
    inbound = codec.Reframer(FRAME_BYTES).push(pcm)
    assert abs(len(inbound) - len(frames)) <= 1  # 160 μ-law bytes in ↔ 640 PCM bytes out
    back = np.frombuffer(pcm, dtype="<i2").astype(float)
    reference = codec.resample(codec.resample(speech, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE).astype(float)
    # same signal, band-limited to 4 kHz and μ-law quantised; the low-latency filters lag < 1 ms
    n = min(back.size, reference.size) - 32
    corr = max(np.corrcoef(back[16 + lag : 16 + lag + n], reference[16 : 16 + n])[0, 1] for lag in range(-16, 17))
    assert corr > 0.95


def test_browser_edge_float32_48k() -> None:
    r = codec.Resampler(48000, SAMPLE_RATE)
    x = (_sine(440, 48000, 0.5).astype(np.float32) / 32768.0).astype("<f4")
    out = (
        b"".join(codec.browser_to_pcm16k(x[i : i + 960].tobytes(), r, "f32") for i in range(0, x.size, 960)) + r.flush()
    )
    assert abs(len(out) // 2 - 8000) <= 2
    with pytest.raises(ValueError):
        codec.browser_to_pcm16k(b"\x00" * 8, codec.Resampler(48000, 8000))


def test_telephone_degrade_keeps_length_and_content() -> None:
    speech = codec.read_raw(DATA / "goforward.raw")
    phone = codec.telephone_degrade(speech)
    assert abs(phone.size - speech.size) <= 2
    band_limited = codec.resample(codec.resample(speech, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
    n = min(phone.size, band_limited.size)
    assert np.corrcoef(phone[:n].astype(float), band_limited[:n].astype(float))[0, 1] > 0.95


def test_reframer() -> None:
    f = codec.Reframer(4)
    assert f.push(b"abcdef") == [b"abcd"] and f.pending == 2
    assert f.push(b"gh") == [b"efgh"]
    f.push(b"x")
    assert f.flush(pad=b"\x00") == [b"x\x00\x00\x00"] and f.flush() == []


# ---- files ----------------------------------------------------------------------------------


def test_wav_round_trip_and_stereo_downmix(tmp_path: Path) -> None:
    mono = _sine(440, 22050, 0.1)
    codec.write_wav(tmp_path / "m.wav", mono, 22050)
    read, rate = codec.read_wav(tmp_path / "m.wav")
    assert rate == 22050 and np.array_equal(read, mono)

    stereo = np.stack([mono, np.zeros_like(mono)], axis=1)
    with wave.open(str(tmp_path / "s.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(stereo.astype("<i2").tobytes())
    down, rate = codec.read_wav(tmp_path / "s.wav")
    assert rate == 44100 and np.max(np.abs(down.astype(int) - mono.astype(int) // 2)) <= 1


def test_wav_8_and_24_bit(tmp_path: Path) -> None:
    x = _sine(440, 8000, 0.05)
    with wave.open(str(tmp_path / "u8.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(((x.astype(int) >> 8) + 128).astype(np.uint8).tobytes())
    with wave.open(str(tmp_path / "s24.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(8000)
        v = x.astype(np.int32) << 8
        w.writeframes(np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes())
    u8, _ = codec.read_wav(tmp_path / "u8.wav")
    s24, _ = codec.read_wav(tmp_path / "s24.wav")
    assert np.max(np.abs(u8.astype(int) - x.astype(int))) <= 256
    assert np.array_equal(s24, x)


def test_read_raw_and_read_audio_16k(tmp_path: Path) -> None:
    raw = codec.read_raw(DATA / "goforward.raw")
    assert raw.dtype == np.int16 and raw.size == (DATA / "goforward.raw").stat().st_size // 2
    codec.write_wav(tmp_path / "8k.wav", codec.resample(raw, SAMPLE_RATE, 8000), 8000)
    back = codec.read_audio_16k(tmp_path / "8k.wav")
    assert abs(back.size - raw.size) <= 2
    assert np.array_equal(codec.read_audio_16k(DATA / "goforward.raw"), raw)


def test_rms_of_a_full_cycle_sine_and_of_nothing() -> None:
    t = np.arange(16000) / 16000
    tone = (10000 * np.sin(2 * np.pi * 100 * t)).astype(np.int16)
    assert codec.rms(tone) == pytest.approx(10000 / np.sqrt(2), rel=1e-3)
    assert codec.rms(np.zeros(0, dtype=np.int16)) == 0.0
    assert codec.rms(np.full(320, -32768, dtype=np.int16)) == 32768.0  # no int16 overflow
