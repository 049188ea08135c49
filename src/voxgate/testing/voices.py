"""Caller voices for simulated calls: speech that sounds unlike the agent, at 16 kHz int16 mono.

The agent speaks with Piper "joe"; a test caller that used the same voice would flatter the
recogniser, so callers use other engines: Pico (py_nanotts, en-GB / en-US), and espeak-ng and
flite when their command-line programs are installed. Every voice returns the same format as
voxgate's pipeline (16 kHz, int16, mono) so callers, degraders and protocol encoders never
need to know which engine made the audio.

Also here: the G.711 μ-law codec both call protocols use on the wire (implemented in numpy so the
test client does not share code with the server it is testing), WAV reading/writing that
tolerates streamed headers, and an optional telephone degradation (band-limit through 8 kHz
μ-law, then noise at a chosen SNR from a seeded generator).
"""

from __future__ import annotations

import functools
import io
import shutil
import struct
import subprocess  # nosec B404: runs the local speech engines with an argv list, no shell
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
TELEPHONE_RATE = 8000

# ---- G.711 μ-law ----------------------------------------------------------------------------

_MULAW_BIAS = 0x84
_MULAW_CLIP_14 = 8159  # 14-bit magnitude limit of the encoder


def _build_decode_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.int16)
    for byte in range(256):
        u = ~byte & 0xFF
        sign = u & 0x80
        exponent = (u >> 4) & 0x07
        mantissa = u & 0x0F
        sample = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
        table[byte] = -sample if sign else sample
    return table


_MULAW_DECODE = _build_decode_table()
#: μ-law byte for digital silence (decodes to 0): what a quiet phone line carries.
MULAW_SILENCE = 0xFF


def mulaw_encode(pcm16: np.ndarray) -> bytes:
    """int16 samples → G.711 μ-law bytes, vectorised.

    Bit-exact with the classic Sun/CCITT reference (the one Python's `audioop.lin2ulaw` uses):
    samples are taken as 14-bit, negatives by magnitude, segment = position of the top bit.
    """
    x = np.asarray(pcm16, dtype=np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(x), _MULAW_CLIP_14) + (_MULAW_BIAS >> 2)
    high = magnitude >> 6
    segment = np.where(high > 0, np.floor(np.log2(np.maximum(high, 1))).astype(np.int32) + 1, 0)
    value = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    value = np.where(segment >= 8, 0x7F, value)  # beyond the last segment: the loudest code
    return ((value ^ mask) & 0xFF).astype(np.uint8).tobytes()


def mulaw_decode(data: bytes) -> np.ndarray:
    """G.711 μ-law bytes → int16 samples."""
    return _MULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


# ---- resampling and WAV I/O -------------------------------------------------------------------


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """int16 mono at `rate_in` → int16 mono at `rate_out` (soxr, high quality)."""
    audio = np.asarray(audio, dtype=np.int16)
    if rate_in == rate_out or audio.size == 0:
        return audio.copy()
    import soxr

    out = soxr.resample(audio.astype(np.float32) / 32768.0, rate_in, rate_out, quality="HQ")
    resampled: np.ndarray = (np.clip(out, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)
    return resampled


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a PCM WAV (8/16/32-bit int or 32-bit float, any channels) to (int16 mono, rate).

    Written by hand rather than with `wave` because `espeak-ng --stdout` writes a streamed
    header whose data size is a placeholder; the data chunk then runs to the end of the file.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    pcm: bytes | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body_start = pos + 8
        if chunk_id == b"data" and (size == 0 or size == 0xFFFFFFFF or body_start + size > len(data)):
            size = len(data) - body_start
        body = data[body_start : body_start + size]
        if chunk_id == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag is in the GUID
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            pcm = body
            break
        pos = body_start + size + (size & 1)
    if fmt is None or pcm is None:
        raise ValueError("WAV file without fmt or data chunk")
    tag, channels, rate, bits = fmt
    if tag == 1 and bits == 16:
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    elif tag == 1 and bits == 8:
        samples = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == 1 and bits == 32:
        samples = np.frombuffer(pcm[: len(pcm) // 4 * 4], dtype="<i4").astype(np.float32) / 2147483648.0
    elif tag == 3 and bits == 32:
        samples = np.frombuffer(pcm[: len(pcm) // 4 * 4], dtype="<f4").astype(np.float32)
    elif tag == 7 and bits == 8:
        samples = mulaw_decode(pcm).astype(np.float32) / 32768.0
    else:
        raise ValueError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)")
    if channels > 1:
        samples = samples[: samples.size // channels * channels].reshape(-1, channels).mean(axis=1)
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype(np.int16), rate


def read_wav(path: Path | str, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A WAV file as int16 mono at `rate` (resampled when needed)."""
    audio, file_rate = parse_wav(Path(path).read_bytes())
    return resample(audio, file_rate, rate)


def write_wav(path: Path | str, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write int16 mono PCM as a standard WAV file (parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.asarray(audio, dtype=np.int16).tobytes())


# ---- voices -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallerVoice:
    """One caller voice: which engine makes it and with what engine-specific voice name."""

    name: str
    engine: str  # "pico" | "espeak-ng" | "flite"
    engine_voice: str
    description: str


VOICES: dict[str, CallerVoice] = {
    v.name: v
    for v in (
        CallerVoice("pico-en-GB", "pico", "en-GB", "SVOX Pico, British English, female"),
        CallerVoice("pico-en-US", "pico", "en-US", "SVOX Pico, American English, female"),
        CallerVoice("espeak-en-us-f3", "espeak-ng", "en-us+f3", "espeak-ng, American English, female variant 3"),
        CallerVoice("espeak-en-gb-m3", "espeak-ng", "en-gb+m3", "espeak-ng, British English, male variant 3"),
        CallerVoice("flite-slt", "flite", "slt", "flite, American English, female (slt)"),
        CallerVoice("flite-rms", "flite", "rms", "flite, American English, male (rms)"),
    )
}


def _pico_available() -> bool:
    try:
        import py_nanotts  # noqa: F401
    except ImportError:
        return False
    return True


def engine_available(engine: str) -> bool:
    """Whether this machine can run a caller-voice engine."""
    if engine == "pico":
        return _pico_available()
    return shutil.which(engine) is not None


def available_voices() -> list[str]:
    """Names of the caller voices this machine can synthesise, Pico first."""
    return [name for name, voice in VOICES.items() if engine_available(voice.engine)]


@functools.lru_cache(maxsize=1)
def _nanotts() -> object:
    # one engine instance per process: it loads its language data once
    from py_nanotts import NanoTTS

    return NanoTTS()


def _pico(text: str, lang: str) -> np.ndarray:
    pcm = _nanotts().speak(text, voice=lang)  # type: ignore[attr-defined]
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)  # already 16 kHz mono


def _run_engine(args: list[str], timeout_s: float = 30.0) -> bytes:
    result = subprocess.run(args, capture_output=True, timeout=timeout_s, check=False)  # nosec B603: argv built from a fixed engine table and a text argument, no shell
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.decode(errors='replace')[:300]}")
    return result.stdout


def _espeak(text: str, voice: str) -> np.ndarray:
    # "--" so a sentence starting with "-" is not read as an option
    audio, rate = parse_wav(_run_engine(["espeak-ng", "--stdout", "-v", voice, "--", text]))
    return resample(audio, rate, SAMPLE_RATE)


def _flite(text: str, voice: str) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="voxgate-flite-") as tmp:
        out = Path(tmp) / "out.wav"
        _run_engine(["flite", "-voice", voice, "-t", text, "-o", str(out)])
        audio, rate = parse_wav(out.read_bytes())
    return resample(audio, rate, SAMPLE_RATE)


_ENGINES: dict[str, Callable[[str, str], np.ndarray]] = {"pico": _pico, "espeak-ng": _espeak, "flite": _flite}


@functools.lru_cache(maxsize=1024)
def _synthesize_cached(text: str, voice: str) -> np.ndarray:
    spec = VOICES.get(voice)
    if spec is None:
        raise ValueError(f"unknown caller voice '{voice}' (known: {', '.join(VOICES)})")
    if not engine_available(spec.engine):
        raise RuntimeError(f"caller voice '{voice}' needs {spec.engine}, which is not installed")
    audio = _ENGINES[spec.engine](text, spec.engine_voice)
    audio = np.ascontiguousarray(audio, dtype=np.int16)
    # cached arrays are shared by every call that says this line: make accidental edits fail loudly
    audio.setflags(write=False)
    return audio


def synthesize_caller(text: str, voice: str = "pico-en-GB") -> np.ndarray:
    """Speak `text` in a caller voice: int16 mono at 16 kHz, cached (read-only array).

    The cache means a load test synthesises each distinct utterance once, before calls start,
    instead of spending CPU that belongs to the server under test.
    """
    text = " ".join(text.split())
    if not text:
        raise ValueError("nothing to say")
    return _synthesize_cached(text, voice)


def clear_cache() -> None:
    """Forget every synthesised utterance (tests; long-lived processes)."""
    _synthesize_cached.cache_clear()


# ---- telephone degradation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Degradation:
    """How to make clean synthetic speech sound like a phone line."""

    telephone: bool = True  # band-limit through an 8 kHz μ-law round trip
    snr_db: float | None = None  # add white noise at this speech-to-noise ratio
    seed: int = 0
    noise_dbfs: float | None = None  # add white noise at this absolute level (a line's noise floor)


def telephone_band(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Round-trip through 8 kHz μ-law: the bandwidth and quantisation of a PSTN call."""
    narrow = resample(audio, rate, TELEPHONE_RATE)
    return resample(mulaw_decode(mulaw_encode(narrow)), TELEPHONE_RATE, rate)


def speech_power(audio: np.ndarray, rate: int = SAMPLE_RATE, floor_db: float = -40.0) -> float:
    """Mean power of the frames that carry speech (within `floor_db` of the loudest frame).

    SNR is defined over speech, not over the whole clip, so leading and trailing silence in a
    synthesised utterance do not make the noise quieter than intended.
    """
    x = np.asarray(audio, dtype=np.float64)
    frame = max(1, rate // 50)
    n = x.size // frame
    if n == 0:
        return float(np.mean(x**2)) if x.size else 0.0
    powers = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    peak = float(powers.max())
    if peak <= 0:
        return 0.0
    active = powers[powers >= peak * 10 ** (floor_db / 10)]
    return float(active.mean())


def add_noise(audio: np.ndarray, snr_db: float, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """White Gaussian noise at `snr_db` below the speech power, from a seeded generator."""
    power = speech_power(audio, rate)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(np.asarray(audio).size) * np.sqrt(power / 10 ** (snr_db / 10))
    out = np.asarray(audio, dtype=np.float64) + noise
    noisy: np.ndarray = np.clip(np.round(out), -32768, 32767).astype(np.int16)
    return noisy


def degrade(audio: np.ndarray, how: Degradation, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Apply a `Degradation` (band-limit first, then noise, as on a real line)."""
    out = np.asarray(audio, dtype=np.int16)
    if how.telephone:
        out = telephone_band(out, rate)
    if how.snr_db is not None:
        out = add_noise(out, how.snr_db, how.seed, rate)
    if how.noise_dbfs is not None:
        out = np.clip(out.astype(np.int32) + line_noise(out.size, how.noise_dbfs, how.seed), -32768, 32767).astype(
            np.int16
        )
    return out


def line_noise(samples: int, dbfs: float, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Telephone-band Gaussian noise whose RMS is `dbfs` relative to int16 full scale (seeded).

    White at 8 kHz, then brought to `rate`, so its level is the same on the 8 kHz wire as here. A
    quiet phone line sits around -60 to -45 dBFS; the space between a caller's words carries it
    too, unlike the digital silence a synthesised caller sends by default.
    """
    rms = 32768.0 * 10 ** (dbfs / 20)
    draw = np.random.default_rng(seed).standard_normal(samples * TELEPHONE_RATE // rate + 1) * rms
    narrow = np.clip(np.round(draw), -32768, 32767).astype(np.int16)
    noise = resample(narrow, TELEPHONE_RATE, rate)[:samples]
    return np.pad(noise, (0, samples - noise.size))


def noisy_line(dbfs: float | None) -> Degradation | None:
    """The degradation of a caller's words on a line with a `dbfs` noise floor (None: a clean line)."""
    return None if dbfs is None else Degradation(telephone=False, noise_dbfs=dbfs)


def to_wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """int16 mono → WAV bytes (for tools that want a file-like object)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.asarray(audio, dtype=np.int16).tobytes())
    return buf.getvalue()
