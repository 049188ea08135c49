"""A voice socket's dialect: how its messages become typed call events, and how the call's audio,
marks and events are written back on it. One `serve_call` loop (channels/serve.py) drives a call in
any dialect: voxgate's own (`native.NativeDialect`) or Twilio Media Streams (`twilio.TwilioDialect`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

Encoding = Literal["pcm16", "mulaw"]
#: a frame to send on the socket: text (JSON) or binary
Frame = str | bytes


@dataclass(frozen=True)
class Received:
    """One message received on the socket: a text frame or a binary frame."""

    text: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Start:
    """The caller's valid `start`: the call's audio format, and what the dialect knows of the caller."""

    sample_rate: int
    encoding: Encoding
    stream_sid: str = ""  # the media stream's id (Twilio), echoed on every message back
    calling_number: str | None = None  # digits and a leading + (Twilio's `<Parameter>`s), for the throttle


@dataclass(frozen=True)
class Media:
    """Caller audio in the call's format (`Start.sample_rate`, `Start.encoding`), not yet decoded."""

    audio: bytes


@dataclass(frozen=True)
class Dtmf:
    """A key the caller pressed."""

    digit: str


@dataclass(frozen=True)
class Mark:
    """The caller has heard the audio sent before the mark of this name."""

    name: str


@dataclass(frozen=True)
class Stop:
    """The caller ends the call."""


CallEvent = Start | Media | Dtmf | Mark | Stop


class Dialect(Protocol):
    """One voice socket protocol. `parse` raises `wire.ProtocolError` (with the reason the call is
    closed with) for anything that is not a valid message at this point of the call."""

    @property
    def channel(self) -> str:
        """The channel name the handshake checks know it by (native, twilio)."""
        ...

    @property
    def session_channel(self) -> str:
        """The channel a call's conversation is recorded with (voice, twilio)."""
        ...

    def parse(self, received: Received, start: Start | None) -> CallEvent | None:
        """The event a received message carries (None: nothing to act on); `start` is the call's start, if any."""
        ...

    def audio(self, start: Start, payload: bytes) -> Frame:
        """Agent audio, already in the call's format, as a frame to send."""
        ...

    def clear(self, start: Start) -> Frame:
        """Drop the audio queued at the caller (barge-in)."""
        ...

    def mark(self, start: Start, name: str) -> Frame:
        """Ask to be told when the caller has heard everything sent so far."""
        ...

    def event(self, start: Start, event: dict[str, Any]) -> Frame | None:
        """A call event (started, transcript, turn, ended) as a frame; None where the dialect has no place for it."""
        ...

    def error(self, reason: str) -> Frame | None:
        """The last frame before the call is closed for bad input (None: just the close)."""
        ...
