"""Shared audio types and the small Protocols that speech providers implement."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

#: Inside voxgate every call's audio is 16-bit PCM, mono, 16 kHz, in 20 ms frames.
SAMPLE_RATE = 16000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 320
SAMPLE_BYTES = 2  # int16
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_BYTES  # 640
BYTES_PER_MS = SAMPLE_RATE * SAMPLE_BYTES // 1000  # 32
#: the largest int16 sample, as the scale of float audio in [-1, 1]
INT16_SCALE = 32768.0


def audio_ms(pcm16: bytes | bytearray | int) -> float:
    """How many ms of call audio `pcm16` holds (or a byte count does)."""
    return (pcm16 if isinstance(pcm16, int) else len(pcm16)) / BYTES_PER_MS


@dataclass(frozen=True)
class Transcript:
    """A final recognition result for one utterance."""

    text: str
    audio_ms: float
    compute_ms: float
    model: str
    no_speech_prob: float | None = None
    avg_logprob: float | None = None


@runtime_checkable
class SpeechRecognizer(Protocol):
    """Batch recognition of one utterance. Blocking: call it through the speech pool."""

    name: str

    def transcribe(self, audio: np.ndarray, prompt: str | None = None, quick: bool = False) -> Transcript:
        """`audio`: float32 mono samples at 16 kHz in [-1, 1]; `prompt`: words likely to be said
        (providers that cannot use it ignore it); `quick`: favour speed over a second attempt."""
        ...


@runtime_checkable
class StreamingRecognizer(Protocol):
    """Cheap incremental recognition for early decisions (e.g. confirming a barge-in)."""

    def start(self) -> None:
        """Begin a new utterance."""
        ...

    def feed(self, pcm16: bytes) -> str:
        """Add 16 kHz int16 audio; return the current partial hypothesis (may be empty)."""
        ...

    def finish(self) -> str:
        """End the utterance; return the final hypothesis."""
        ...


@runtime_checkable
class SpeechSynthesizer(Protocol):
    """Text to speech, streamed in chunks. Blocking generator: iterate it in the speech pool."""

    name: str
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield int16 mono chunks at `sample_rate` as soon as each is ready."""
        ...


@dataclass
class ModelRecord:
    """Which model files a provider loaded, for logs and release evidence."""

    role: str
    name: str
    package: str
    version: str
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
