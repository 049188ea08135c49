"""A call's audio kept for its recording: both sides on the caller's timeline, written as a μ-law WAV.

The audio path captures a call here (``CallRecording``, what ``voice.call.ports.CallRecorder``
describes); when the call ends, the WAV goes to ``compliance.recording.RecordingVault``, which
encrypts and stores it.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import numpy.typing as npt

from voxgate.compliance.recording import MAX_SECONDS, STORED_RATE, RecordingFormatError
from voxgate.voice.codec import mulaw_decode, mulaw_encode, resample
from voxgate.voice.types import SAMPLE_RATE

RATE = SAMPLE_RATE  # the pipeline's audio: 16 kHz int16 mono
WAVE_FORMAT_MULAW = 7
MS_PER_S = 1000

Samples = npt.NDArray[np.int16]


class CallRecording:
    """Both sides of one call on the caller's timeline, kept in memory until the call ends.

    The caller's audio arrives in real time, so its position is simply how much has arrived.
    The agent's audio is sent ahead of playback; it lands at the later of "now" on the caller's
    timeline and the end of what was already queued. A cleared playback (barge-in) drops what
    the caller never heard.
    """

    def __init__(self, environment: str, max_seconds: int = MAX_SECONDS):
        self.environment = environment
        self._limit = max_seconds * RATE
        self._caller: list[Samples] = []
        self._caller_len = 0
        self._agent: list[tuple[int, Samples]] = []  # (start sample, samples)
        self._agent_end = 0

    @property
    def caller_samples(self) -> int:
        """How much caller audio has arrived (samples at 16 kHz)."""
        return self._caller_len

    def caller(self, pcm16: bytes) -> None:
        """Caller audio, as it arrives."""
        if self._caller_len >= self._limit:
            return
        samples = np.frombuffer(pcm16, dtype=np.int16).copy()
        self._caller.append(samples)
        self._caller_len += samples.size

    def agent(self, pcm16: bytes) -> None:
        """Agent audio, as it is sent: it plays after what is queued, and not before now."""
        start = max(self._caller_len, self._agent_end)
        if start >= self._limit:
            return
        samples = np.frombuffer(pcm16, dtype=np.int16).copy()
        self._agent.append((start, samples))
        self._agent_end = start + samples.size

    def clear(self) -> None:
        """Playback was cleared: the caller heard the agent only up to now."""
        now = self._caller_len
        kept: list[tuple[int, Samples]] = []
        for start, samples in self._agent:
            if start < now:
                kept.append((start, samples[: now - start]))
        self._agent = kept
        self._agent_end = min(self._agent_end, now)

    @property
    def duration_ms(self) -> int:
        """The length of the recording so far."""
        return int(max(self._caller_len, self._agent_end) * MS_PER_S / RATE)

    def wav(self) -> bytes:
        """The call as a stereo 8 kHz μ-law WAV: caller on the left, agent on the right."""
        length = max(self._caller_len, self._agent_end)
        left = np.zeros(length, dtype=np.int16)
        if self._caller:
            caller = np.concatenate(self._caller)
            left[: caller.size] = caller
        right = np.zeros(length, dtype=np.int16)
        for start, samples in self._agent:
            right[start : start + samples.size] = samples[: max(0, length - start)]
        channels = []
        for track in (left, right):
            pcm = resample(track, RATE, STORED_RATE) if length else np.zeros(0, dtype=np.int16)
            channels.append(np.frombuffer(mulaw_encode(pcm.astype("<i2").tobytes()), dtype=np.uint8))
        frames = min(c.size for c in channels)
        interleaved = np.empty(frames * 2, dtype=np.uint8)
        interleaved[0::2], interleaved[1::2] = channels[0][:frames], channels[1][:frames]
        return mulaw_wav(interleaved.tobytes(), channels=2, rate=STORED_RATE)


def mulaw_wav(data: bytes, *, channels: int, rate: int) -> bytes:
    """A WAVE_FORMAT_MULAW file (fmt with cbSize 0, fact, data), readable by sox and players."""
    frames = len(data) // channels
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_MULAW, channels, rate, rate * channels, channels, 8, 0)
    out = io.BytesIO()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, frames)
    body += b"data" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
    out.write(b"RIFF" + struct.pack("<I", len(body)) + body)
    return out.getvalue()


def read_mulaw_wav(wav: bytes) -> tuple[int, int, Samples]:
    """(channels, rate, int16 samples shaped frames × channels) of a μ-law WAV made by `mulaw_wav`."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise RecordingFormatError("not a WAV file")
    pos, channels, rate, data = 12, 0, 0, b""
    while pos + 8 <= len(wav):
        chunk, size = wav[pos : pos + 4], struct.unpack("<I", wav[pos + 4 : pos + 8])[0]
        body = wav[pos + 8 : pos + 8 + size]
        if chunk == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            if tag != WAVE_FORMAT_MULAW:
                raise RecordingFormatError(f"WAV format {tag} is not μ-law")
        elif chunk == b"data":
            data = body
        pos += 8 + size + (size % 2)
    pcm = np.frombuffer(mulaw_decode(data), dtype=np.int16)
    return channels, rate, pcm.reshape(-1, channels) if channels else pcm
