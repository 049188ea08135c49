"""The Twilio Media Streams messages a caller's side sends, as pydantic models (see Twilio's documentation
of bidirectional streams). Each model accepts what a look-alike gateway may send as well; what it
refuses fails with the reason the call is closed with (`validated` raises ProtocolError with it)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from voxgate.channels.throttle import calling_number_of
from voxgate.channels.wire import ProtocolError, utf8_safe

TWILIO_RATE = 8000
MAX_PAYLOAD_BYTES = 8000  # one second of μ-law: far more than the 160-byte frames Twilio sends
MAX_PAYLOAD_CHARS = MAX_PAYLOAD_BYTES * 4 // 3 + 4  # as base64
MULAW_NAMES = {"audio/x-mulaw", "audio/mulaw", "audio/pcmu", "pcmu", "mulaw", "g711_ulaw"}
DtmfDigit = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#"]
DTMF_DIGITS = frozenset("0123456789*#")

M = TypeVar("M", bound=BaseModel)


def _refused(reason: str) -> PydanticCustomError:
    """A validation error whose message is the close reason itself (a lone surrogate from the input
    written as its escape, as the close reason writes it: pydantic keeps its messages in UTF-8)."""
    return PydanticCustomError("twilio_message", "{reason}", {"reason": utf8_safe(reason)})


def validated(model: type[M], message: dict[str, Any]) -> M:
    """`message` as `model`, or ProtocolError with the reason the call is closed with."""
    try:
        return model.model_validate(message)
    except ValidationError as exc:
        errors = exc.errors()
        raise ProtocolError(errors[0]["msg"] if errors else "malformed message") from None


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True)  # fields not named here are ignored; fields go by their wire names


class Envelope(_Message):
    """What every message has: the event it is."""

    event: str

    @model_validator(mode="before")
    @classmethod
    def _a_string(cls, message: object) -> object:
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise _refused("message must be a JSON object with an 'event' string")
        return message


class MediaFormat(_Message):
    """`start.mediaFormat`: only 8 kHz μ-law mono is spoken here (under any of the codec's usual names)."""

    encoding: JsonValue = "audio/x-mulaw"
    sample_rate: JsonValue = Field(TWILIO_RATE, alias="sampleRate")
    channels: JsonValue = 1

    @model_validator(mode="after")
    def _mulaw_8k_mono(self) -> MediaFormat:
        # Twilio writes audio/x-mulaw; look-alike gateways and clients write the same codec otherwise
        mulaw = isinstance(self.encoding, str) and self.encoding.lower() in MULAW_NAMES
        if not mulaw or str(self.sample_rate) != str(TWILIO_RATE) or str(self.channels) != "1":
            raise _refused(
                f"unsupported media format {self.encoding} {self.sample_rate} Hz x{self.channels}; "
                "expected audio/x-mulaw 8000 Hz mono"
            )
        return self


class StartBody(_Message):
    """`start`: the stream, its format, and the TwiML's `<Parameter>`s (the calling number among them)."""

    stream_sid: JsonValue = Field(None, alias="streamSid")
    media_format: MediaFormat = Field(default_factory=MediaFormat, alias="mediaFormat")
    custom_parameters: dict[str, JsonValue] = Field(default_factory=dict, alias="customParameters")
    gateway_from: JsonValue = Field(None, alias="from")  # a look-alike gateway's own caller field

    @field_validator("media_format", mode="before")
    @classmethod
    def _an_object(cls, value: object) -> object:
        if not value:
            return {}  # absent or empty: Twilio's format
        if not isinstance(value, dict):
            raise _refused("start.mediaFormat must be an object")
        return value

    @field_validator("custom_parameters", mode="before")
    @classmethod
    def _parameters(cls, value: object) -> object:
        return value if isinstance(value, dict) else {}  # anything else carries no parameters

    @property
    def calling_number(self) -> str | None:
        """The caller's number (digits and a leading +), or None for an anonymous caller."""
        return calling_number_of(self.custom_parameters, self.gateway_from)


class StartMessage(_Message):
    """`start`: the stream begins."""

    stream_sid: JsonValue = Field(None, alias="streamSid")
    start: StartBody

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, message: object) -> object:
        value = message.get("start") if isinstance(message, dict) else None
        if not isinstance(value, dict):
            raise _refused("start message without a start object")
        return message

    @model_validator(mode="after")
    def _has_a_stream(self) -> StartMessage:
        if not self.sid:
            raise _refused("start message without streamSid")
        return self

    @property
    def sid(self) -> str:
        """The stream's id, from the message or its `start` (a gateway may write either)."""
        return str(self.stream_sid or self.start.stream_sid or "")


class MediaBody(_Message):
    """`media`: one chunk of caller audio (base64 μ-law)."""

    payload: bytes

    @field_validator("payload", mode="before")
    @classmethod
    def _decoded(cls, value: object) -> object:
        if not isinstance(value, str):
            raise _refused("media message without media.payload")
        if len(value) > MAX_PAYLOAD_CHARS:
            raise _refused("media payload larger than one second of audio")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _refused("media payload is not valid base64") from None


class MediaMessage(_Message):
    """`media`: caller audio."""

    media: MediaBody

    @model_validator(mode="before")
    @classmethod
    def _with_a_payload(cls, message: object) -> object:
        value = message.get("media") if isinstance(message, dict) else None
        if not isinstance(value, dict) or not isinstance(value.get("payload"), str):
            raise _refused("media message without media.payload")
        return message


class DtmfBody(_Message):
    """`dtmf`: the key pressed."""

    digit: DtmfDigit


class DtmfMessage(_Message):
    """`dtmf`: the caller pressed a key."""

    dtmf: DtmfBody

    @model_validator(mode="before")
    @classmethod
    def _a_digit(cls, message: object) -> object:
        value = message.get("dtmf") if isinstance(message, dict) else None
        digit = value.get("digit") if isinstance(value, dict) else None
        if not isinstance(digit, str) or digit not in DTMF_DIGITS:
            raise _refused(f"invalid dtmf digit {digit!r}")
        return message


class MarkBody(_Message):
    """`mark`: the name of a mark this side sent."""

    name: str


class MarkMessage(_Message):
    """`mark`: the caller has heard the audio sent before the mark."""

    mark: MarkBody

    @model_validator(mode="before")
    @classmethod
    def _named(cls, message: object) -> object:
        value = message.get("mark") if isinstance(message, dict) else None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise _refused("mark message without mark.name")
        return message
