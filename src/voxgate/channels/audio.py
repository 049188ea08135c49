"""A call's audio between the socket's format (its rate and encoding) and the pipeline's 16 kHz PCM16
frames of 20 ms, both ways."""

from __future__ import annotations

from voxgate.channels.dialect import Encoding
from voxgate.voice import codec
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE


def frames(pcm16: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """`pcm16` cut into frames of `frame_bytes` (the last one may be shorter)."""
    return [pcm16[i : i + frame_bytes] for i in range(0, len(pcm16), frame_bytes)]


class InboundAudio:
    """Caller audio in the socket's format → the pipeline's frames (decoded, resampled, reframed)."""

    def __init__(self, sample_rate: int, encoding: Encoding):
        self.mulaw = encoding == "mulaw"
        self.up = codec.Resampler(sample_rate, SAMPLE_RATE) if sample_rate != SAMPLE_RATE else None
        self.reframer = codec.Reframer(FRAME_BYTES)

    def frames(self, audio: bytes) -> list[bytes]:
        """The whole pipeline frames `audio` completes (a partial one waits for the next audio)."""
        pcm = codec.mulaw_decode(audio) if self.mulaw else audio
        return self.reframer.push(self.up.process(pcm) if self.up is not None else pcm)


class OutboundAudio:
    """The pipeline's 16 kHz PCM16 → audio in the socket's format."""

    def __init__(self, sample_rate: int, encoding: Encoding):
        self.mulaw = encoding == "mulaw"
        self.down = codec.Resampler(SAMPLE_RATE, sample_rate) if sample_rate != SAMPLE_RATE else None

    def encode(self, pcm16: bytes) -> bytes:
        """`pcm16` in the socket's format (empty while the resampler holds it back)."""
        out = self.down.process(pcm16) if self.down is not None else pcm16
        return codec.mulaw_encode(out) if self.mulaw else out
