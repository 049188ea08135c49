"""Audio format conversion at the call edges: G.711 μ-law, PCM16/float, streaming resampling, WAV/raw files.

Inside voxgate every call's audio is 16 kHz mono int16 in 20 ms frames (see
:mod:`voxgate.voice.types`). The edges speak other formats:

* Twilio Media Streams: 8 kHz G.711 μ-law, 160 bytes per 20 ms frame, both ways.
* Browsers: 48 kHz or 44.1 kHz, float32 (WebAudio) or int16.
* TTS engines: Piper renders 22.05 kHz, Pico 16 kHz.

μ-law is done with two lookup tables built from the reference algorithm (Sun's
``g711.c``, which is also what CPython's ``audioop`` implements), so it is bit-exact
with G.711 as Twilio uses it and does not depend on ``audioop`` (deprecated in 3.11,
removed in 3.13).

Resampling uses libsoxr through ``soxr.ResampleStream``. Measured on this project's
2-core box with 20 ms frames, its default constant-rate engine emits audio in bursts
and holds back up to 115 ms (HQ, 8k→16k) or 61 ms (LQ); the variable-rate engine
(``vr=True``) returns a steady frame per frame with a fixed lag of 30 ms (8k→16k),
15 ms (16k→8k), 12.5 ms (48k→16k) and 27 ms (22.05k→8k), at >110 dB SNR in the
passband and >120 dB stop-band rejection, so :class:`Resampler` uses it by default.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Literal

import numpy as np
import soxr

from voxgate.voice.types import FRAME_MS, SAMPLE_RATE

#: Twilio's media format: 8 kHz μ-law, one byte per sample, 20 ms per message.
MULAW_RATE = 8000
MULAW_FRAME_BYTES = MULAW_RATE * FRAME_MS // 1000  # 160

_BIAS = 0x84
_CLIP = 8159  # in the 14-bit domain the reference encoder works in
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_decode_table() -> np.ndarray:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = ((u & 0x0F) << 3) + _BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def _build_encode_table() -> np.ndarray:
    # Indexed by the int16 sample reinterpreted as uint16 (so the lookup is one take()).
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    val = pcm >> 2  # arithmetic shift, as the C reference does on a short
    mask = np.where(val < 0, 0x7F, 0xFF)
    val = np.minimum(np.abs(val), _CLIP) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END, val, side="left")  # first segment whose end >= val
    # Past the last segment (only at full scale) the reference returns the maximum code.
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((val >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


_ULAW_TO_PCM = _build_decode_table()
_PCM_TO_ULAW = _build_encode_table()


def mulaw_decode(mulaw: bytes) -> bytes:
    """G.711 μ-law bytes to 16-bit little-endian PCM bytes at the same rate."""
    return _ULAW_TO_PCM[np.frombuffer(mulaw, dtype=np.uint8)].astype("<i2").tobytes()


def mulaw_encode(pcm16: bytes) -> bytes:
    """16-bit little-endian PCM bytes to G.711 μ-law bytes at the same rate."""
    samples = np.frombuffer(pcm16, dtype="<i2").view(np.uint16)
    return _PCM_TO_ULAW[samples].tobytes()


# The names the channel adapters use.
mulaw_to_pcm16 = mulaw_decode
pcm16_to_mulaw = mulaw_encode


def pcm16_to_float(pcm16: bytes | np.ndarray) -> np.ndarray:
    """Int16 PCM (bytes or array) to float32 samples in [-1, 1)."""
    samples = np.frombuffer(pcm16, dtype="<i2") if isinstance(pcm16, (bytes, bytearray, memoryview)) else pcm16
    return samples.astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to int16 little-endian PCM bytes (clipped, rounded)."""
    return float_to_int16(samples).astype("<i2").tobytes()


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to an int16 array (clipped, rounded)."""
    scaled = np.rint(np.asarray(samples, dtype=np.float32) * 32768.0)
    clipped: np.ndarray = np.clip(scaled, -32768, 32767).astype(np.int16)
    return clipped


class Resampler:
    """Streaming int16 resampler for one continuous stream (one call leg, one direction).

    Keeps the filter state across calls to :meth:`process`, so 20 ms frames come out
    as one continuous signal without clicks at frame boundaries. Output sizes follow
    the rate ratio with a fixed lag (see the module docstring); :meth:`flush` returns
    the held-back tail at the end of the stream and makes the object ready for a new
    stream.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ", low_latency: bool = True) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self.low_latency = low_latency
        # Equal rates: pass through rather than pay for (and delay by) a filter.
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality, vr=low_latency)

    def process_array(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next int16 block of the stream; may return fewer samples than the ratio suggests."""
        samples = np.ascontiguousarray(samples, dtype=np.int16)
        if self._stream is None:
            return samples.copy()
        return np.asarray(self._stream.resample_chunk(samples), dtype=np.int16)

    def process(self, pcm16: bytes) -> bytes:
        """Resample the next int16 little-endian block of the stream."""
        return self.process_array(np.frombuffer(pcm16, dtype="<i2")).astype("<i2").tobytes()

    def flush_array(self) -> np.ndarray:
        """End the stream: return the samples still held in the filter, then start afresh."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        tail = np.asarray(self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True), dtype=np.int16)
        self._stream.clear()
        return tail

    def flush(self) -> bytes:
        """End the stream: return the held-back tail as bytes, then start afresh."""
        return self.flush_array().astype("<i2").tobytes()

    def reset(self) -> None:
        """Drop the filter state without emitting the tail (e.g. after a barge-in ``clear``)."""
        if self._stream is not None:
            self._stream.clear()


class Reframer:
    """Cuts a byte stream of varying block sizes into fixed-size frames (e.g. 160-byte μ-law, 640-byte PCM)."""

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError("frame_bytes must be positive")
        self.frame_bytes = frame_bytes
        self._buffer = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete frame now available."""
        self._buffer.extend(data)
        n = len(self._buffer) // self.frame_bytes
        frames = [bytes(self._buffer[i * self.frame_bytes : (i + 1) * self.frame_bytes]) for i in range(n)]
        del self._buffer[: n * self.frame_bytes]
        return frames

    def flush(self, pad: bytes | None = None) -> list[bytes]:
        """Return the partial last frame, padded to full size with the `pad` byte pattern if given."""
        if not self._buffer:
            return []
        rest = bytes(self._buffer)
        self._buffer.clear()
        if pad:
            missing = self.frame_bytes - len(rest)
            rest += (pad * (missing // len(pad) + 1))[:missing]
        return [rest]

    @property
    def pending(self) -> int:
        """Bytes waiting for a full frame."""
        return len(self._buffer)


#: One μ-law byte of silence (0 → 0xFF), for padding the last frame sent to Twilio.
MULAW_SILENCE = b"\xff"


def mulaw8k_to_pcm16k(mulaw: bytes, resampler: Resampler) -> bytes:
    """Twilio inbound: 8 kHz μ-law bytes → 16 kHz int16 bytes through the leg's 8k→16k `resampler`."""
    return resampler.process(mulaw_decode(mulaw))


def pcm_to_mulaw8k(pcm16: bytes, resampler: Resampler | None) -> bytes:
    """Twilio outbound: int16 bytes at the resampler's input rate → 8 kHz μ-law bytes.

    Pass ``None`` when the audio is already at 8 kHz. Use one resampler per stream
    (e.g. 22050→8000 for Piper, 16000→8000 for Pico or the internal rate).
    """
    if resampler is not None and resampler.out_rate != MULAW_RATE:
        raise ValueError(f"resampler must output {MULAW_RATE} Hz, not {resampler.out_rate}")
    pcm8k = resampler.process(pcm16) if resampler is not None else pcm16
    return mulaw_encode(pcm8k)


def pcm16k_to_mulaw8k(pcm16: bytes, resampler: Resampler) -> bytes:
    """16 kHz int16 bytes → 8 kHz μ-law bytes through a 16k→8k `resampler`."""
    return pcm_to_mulaw8k(pcm16, resampler)


BrowserFormat = Literal["f32", "s16"]


def browser_to_pcm16k(data: bytes, resampler: Resampler, fmt: BrowserFormat = "f32") -> bytes:
    """Browser inbound: little-endian float32 (WebAudio) or int16 mono at the resampler's input rate → 16 kHz int16."""
    if resampler.out_rate != SAMPLE_RATE:
        raise ValueError(f"resampler must output {SAMPLE_RATE} Hz, not {resampler.out_rate}")
    if fmt == "f32":
        samples = float_to_int16(np.frombuffer(data, dtype="<f4"))
    elif fmt == "s16":
        samples = np.frombuffer(data, dtype="<i2")
    else:
        raise ValueError(f"unknown browser sample format {fmt!r} (expected 'f32' or 's16')")
    return resampler.process_array(samples).astype("<i2").tobytes()


def resample(samples: np.ndarray, in_rate: int, out_rate: int, quality: str = "HQ") -> np.ndarray:
    """One-shot int16 resampling of a whole recording (files, benches); not for live streams."""
    samples = np.ascontiguousarray(samples, dtype=np.int16)
    if in_rate == out_rate:
        return samples.copy()
    return np.asarray(soxr.resample(samples, in_rate, out_rate, quality=quality), dtype=np.int16)


def telephone_degrade(samples16k: np.ndarray) -> np.ndarray:
    """What a 16 kHz recording sounds like after a phone leg: 16k → 8 kHz μ-law → 16k (int16 in, int16 out).

    Offline, so it uses one-shot resampling: the output is sample-aligned with the input.
    """
    pcm8k = resample(np.ascontiguousarray(samples16k, dtype=np.int16), SAMPLE_RATE, MULAW_RATE)
    decoded = np.frombuffer(mulaw_decode(mulaw_encode(pcm8k.astype("<i2").tobytes())), dtype="<i2")
    return resample(decoded.astype(np.int16), MULAW_RATE, SAMPLE_RATE)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file as (int16 mono samples, sample rate); channels are averaged.

    Accepts 8-, 16-, 24- and 32-bit integer PCM (what the stdlib ``wave`` module reads).
    """
    with wave.open(str(path), "rb") as wav:
        channels = wav.getnchannels()
        width = wav.getsampwidth()
        rate = wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 16  # sign-extend, keep the top 16 bits
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.int64) >> 16
    else:
        raise ValueError(f"{path}: unsupported sample width {width} bytes")
    if channels > 1:
        data = data[: len(data) - len(data) % channels].reshape(-1, channels).mean(axis=1)
    return np.clip(np.rint(data), -32768, 32767).astype(np.int16), rate


def write_wav(path: str | Path, pcm16: bytes | np.ndarray, rate: int) -> None:
    """Write mono int16 samples (bytes or array) as a PCM WAV file."""
    data = pcm16 if isinstance(pcm16, (bytes, bytearray)) else np.asarray(pcm16, dtype=np.int16).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(data)


def read_raw(path: str | Path) -> np.ndarray:
    """Read a headerless 16-bit little-endian mono file (the pocketsphinx ``.raw`` test files: 16 kHz)."""
    raw = Path(path).read_bytes()
    return np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2").astype(np.int16)


def read_audio_16k(path: str | Path) -> np.ndarray:
    """Read a WAV (any rate/channels) or 16 kHz ``.raw`` file as 16 kHz int16 mono."""
    if str(path).lower().endswith(".raw"):
        return read_raw(path)
    samples, rate = read_wav(path)
    if rate == SAMPLE_RATE:
        return samples
    resampler = Resampler(rate, SAMPLE_RATE)
    return np.concatenate([resampler.process_array(samples), resampler.flush_array()])


def rms(samples: np.ndarray) -> float:
    """Root-mean-square level of int16 samples, in int16 units (0.0 for none)."""
    if not samples.size:
        return 0.0
    x = samples.astype(np.float64)
    return float(np.sqrt(np.dot(x, x) / x.size))
