"""A simulated phone caller for voxgate: real-time audio over the Twilio or native voice socket.

The caller behaves like a phone, not like a file uploader:

* it streams 20 ms frames continuously from connect to hang-up, paced by the clock (absolute
  schedule, so no drift; never faster than real time), silence when it is not speaking;
* it models what the caller *hears*: agent audio plays in arrival order from the moment it
  arrives, one chunk after the other (`PlaybackClock`); a `clear` drops what has not been
  played yet; each `mark` is echoed only once the audio queued before it has been played, as
  Twilio does; so the server sees realistic playback progress and barge-in timing;
* it waits for the greeting and each reply to finish playing plus `gap_ms` before it speaks;
* it measures, at the caller side, voice-to-voice latency: from the send time of the last
  non-silent frame of its utterance to the arrival of the first audible agent frame after it.

Everything that can go wrong on the wire (refused connection, bad JSON, an unexpected close,
a server error message) ends up in `CallReport.error`; `run_call` does not raise for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from pydantic import BaseModel, Field

from voxgate.errors import InvalidError
from voxgate.testing.voices import (
    MULAW_SILENCE,
    SAMPLE_RATE,
    TELEPHONE_RATE,
    Degradation,
    degrade,
    line_noise,
    mulaw_decode,
    mulaw_encode,
    noisy_line,
    read_wav,
    resample,
    synthesize_caller,
    write_wav,
)

log = logging.getLogger("voxgate.testing.caller")

ProtocolName = Literal["native", "twilio"]

FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
#: A caller frame is speech when its RMS is within this many dB of the utterance's loudest frame.
SPEECH_FLOOR_DB = -30.0
#: Agent audio is audible when a frame's RMS reaches this (int16 units, about -44 dBFS): TTS
#: leading silence and μ-law idle codes stay below it, the first phoneme does not.
AGENT_AUDIBLE_RMS = 200.0
DTMF_GAP_S = 0.1
#: The pacer rebases its schedule instead of bursting when it falls this far behind: a phone
#: never sends audio faster than real time, even after a stall.
MAX_SEND_LAG_S = 0.1
POLL_S = 0.02
#: voxgate names the mark after a reply's last chunk "<n>:last"; once a server has used that
#: convention the caller waits (at most this long) for it before deciding a reply is over, so a
#: slow second sentence is not mistaken for the end of the reply.
LAST_MARK_WAIT_S = 5.0
_VOXGATE_MARK = re.compile(r"^\d+:(\d+|last)$")


# ---- reports --------------------------------------------------------------------------------------


class TurnReport(BaseModel):
    """One caller turn and the agent's reply to it, measured at the caller."""

    index: int
    said: str | None = Field(None, description="What the caller said (text, or the WAV file name).")
    dtmf: str | None = Field(None, description="Digits keyed instead of speaking.")
    speech_start_s: float | None = Field(None, description="First non-silent frame sent (s after connect).")
    speech_end_s: float | None = Field(None, description="Last non-silent frame sent (or last digit).")
    first_reply_audio_s: float | None = Field(None, description="First audible agent frame after speech end.")
    voice_to_voice_ms: float | None = Field(None, description="first_reply_audio_s - speech_end_s, in ms.")
    reply_audio_ms: float = Field(0.0, description="Agent audio heard for this reply (cleared parts excluded).")
    reply_received_ms: float = Field(0.0, description="Agent audio received for this reply, played or not.")
    reply_text: str | None = Field(None, description="Caller-side transcription of the reply as heard.")
    server_heard: str | None = Field(None, description="What the server recognised (native protocol only).")
    server_reply_text: str | None = Field(None, description="What the server says it spoke (native only).")
    interrupted: bool = Field(False, description="A clear cut this reply short.")
    replied: bool = Field(False, description="Audible agent audio arrived after the caller's turn.")
    cut_in: bool = Field(
        False,
        description="The agent cut in: audible agent audio began arriving while this utterance still had voiced "
        "frames to send, the agent having been silent when the caller started it.",
    )


class CallTimings(BaseModel):
    """Whole-call figures, mostly for judging the caller itself (pacing health) and set-up cost."""

    connect_ms: float | None = None
    started_ms: float | None = Field(None, description="native: start sent → 'started' received.")
    greeting_first_audio_ms: float | None = Field(None, description="start sent → first greeting audio.")
    greeting_audio_ms: float = 0.0
    duration_s: float = 0.0
    frames_sent: int = 0
    max_send_lag_ms: float = 0.0
    pacer_rebases: int = 0
    marks_received: int = 0
    marks_echoed: int = 0
    clears: int = 0
    agent_audio_received_ms: float = 0.0
    agent_audio_heard_ms: float = 0.0


class CallReport(BaseModel):
    """Everything one simulated call observed."""

    url: str
    protocol: ProtocolName
    agent: str
    voice: str
    session_id: str | None = None
    stream_sid: str | None = None
    turns: list[TurnReport] = Field(default_factory=list)
    greeting_text: str | None = None
    greeting_server_text: str | None = None
    outcome: str | None = Field(None, description="native: the server's 'ended' outcome.")
    ended_reason: str | None = None
    error: str | None = None
    refused: bool = Field(False, description="The server played a busy message or refused the connection.")
    closed_by: Literal["caller", "server"] | None = None
    close_code: int | None = None
    close_reason: str | None = None
    notes: list[str] = Field(default_factory=list, description="Non-fatal oddities seen on the wire.")
    timings: CallTimings = Field(default_factory=CallTimings)

    @property
    def ok(self) -> bool:
        """No error, not refused, and every turn got an audible reply."""
        return self.error is None and not self.refused and all(t.replied for t in self.turns)


class BargeInReport(BaseModel):
    """What `barge_in_probe` measured: how fast speech over the agent stopped its playback."""

    after_ms: int
    said: str
    reply_started_s: float | None = Field(None, description="First audio of the reply barged into.")
    speech_onset_s: float | None = Field(None, description="First non-silent frame of the barge-in sent.")
    agent_playing_at_onset: bool = False
    clear_s: float | None = None
    onset_to_clear_ms: float | None = None
    call: CallReport


# ---- audio helpers ------------------------------------------------------------------------------------


def frame_rms(audio: np.ndarray, frame_samples: int) -> np.ndarray:
    """RMS per whole-or-padded frame of int16 audio."""
    x = np.asarray(audio, dtype=np.float64)
    n = max(1, math.ceil(x.size / frame_samples))
    padded = np.zeros(n * frame_samples)
    padded[: x.size] = x
    rms: np.ndarray = np.sqrt(np.mean(padded.reshape(n, frame_samples) ** 2, axis=1))
    return rms


def voiced_frames(audio: np.ndarray, rate: int = SAMPLE_RATE, floor_db: float = SPEECH_FLOOR_DB) -> np.ndarray:
    """Boolean per 20 ms frame: within `floor_db` of the utterance's loudest frame.

    Relative to the peak (not absolute) so quiet and loud voices, and degraded audio with a
    noise floor below the threshold, are judged the same way.
    """
    rms = frame_rms(audio, rate * FRAME_MS // 1000)
    peak = float(rms.max()) if rms.size else 0.0
    if peak <= 0:
        return np.zeros(rms.size, dtype=bool)
    return rms >= peak * 10 ** (floor_db / 20)


def speech_bounds(
    audio: np.ndarray, rate: int = SAMPLE_RATE, floor_db: float = SPEECH_FLOOR_DB
) -> tuple[int, int] | None:
    """(first, last) index of the 20 ms frames that carry speech, or None for silence."""
    voiced = np.flatnonzero(voiced_frames(audio, rate, floor_db))
    if voiced.size == 0:
        return None
    return int(voiced[0]), int(voiced[-1])


# ---- the real-time pacer -------------------------------------------------------------------------------


class RealtimePacer:
    """Yields once per frame period on an absolute schedule: frame n is due at origin + n·period.

    Sleeping a fixed period per frame would drift by the loop's overhead every frame; an
    absolute schedule does not. A frame is never released before it is due (never faster than
    real time); if the caller falls more than `max_lag_s` behind (a stalled event loop), the
    schedule restarts from now instead of bursting the backlog out.
    """

    def __init__(
        self,
        period_s: float = FRAME_S,
        *,
        max_lag_s: float = MAX_SEND_LAG_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.period_s = period_s
        self.max_lag_s = max_lag_s
        self.clock = clock
        self.sleep = sleep
        self.origin: float | None = None
        self.index = 0  # frames released so far
        self.rebases = 0
        self.max_lag_s_seen = 0.0

    async def wait(self) -> float:
        """Wait until the next frame is due; return the time it was released."""
        now = self.clock()
        if self.origin is None:
            self.origin = now
        due = self.origin + self.index * self.period_s
        while now < due:
            await self.sleep(due - now)
            now = self.clock()
        lag = now - due
        if lag > self.max_lag_s:
            self.rebases += 1
            self.origin = now - self.index * self.period_s
        else:
            self.max_lag_s_seen = max(self.max_lag_s_seen, lag)
        self.index += 1
        return now


# ---- the playback model ---------------------------------------------------------------------------------


@dataclass
class _Segment:
    start: float  # when it starts playing (clock seconds)
    audio: np.ndarray  # int16 at the clock's rate
    reply: int


@dataclass
class PlaybackClock:
    """What the caller hears when: agent audio plays back to back from its arrival.

    A chunk arriving at `now` starts at max(now, end of what is queued), so while the server
    stays ahead of real time the end of playback is first arrival + total audio received; an
    underrun leaves a silent gap, as on a real line. Marks fall due when the audio queued before
    them has played; `clear` truncates at `now`, drops the rest and returns every pending mark
    (Twilio sends those back at once).
    """

    rate: int
    play_end: float = 0.0
    first_arrival: float | None = None
    segments: list[_Segment] = field(default_factory=list)
    marks: deque[tuple[float, str]] = field(default_factory=deque)
    received_samples: dict[int, int] = field(default_factory=dict)
    cleared_samples: int = 0

    def add_audio(self, now: float, samples: np.ndarray, reply: int = 0) -> float:
        """Queue a chunk; return when it starts playing."""
        if self.first_arrival is None:
            self.first_arrival = now
        start = max(now, self.play_end)
        self.play_end = start + samples.size / self.rate
        self.received_samples[reply] = self.received_samples.get(reply, 0) + samples.size
        if samples.size:
            self.segments.append(_Segment(start, np.asarray(samples, dtype=np.int16), reply))
        return start

    def add_mark(self, now: float, name: str) -> float:
        """Queue a mark; return when it falls due (now, if nothing is left to play)."""
        due = max(now, self.play_end)
        self.marks.append((due, name))
        return due

    def due_marks(self, now: float) -> list[str]:
        """Pop the marks whose audio has been played by `now`, in order."""
        out: list[str] = []
        while self.marks and self.marks[0][0] <= now:
            out.append(self.marks.popleft()[1])
        return out

    def clear(self, now: float) -> tuple[list[str], set[int]]:
        """Drop unplayed audio; return (pending marks to echo now, replies that lost audio)."""
        cut: set[int] = set()
        kept: list[_Segment] = []
        for seg in self.segments:
            end = seg.start + seg.audio.size / self.rate
            if end <= now:
                kept.append(seg)
            elif seg.start >= now:
                self.cleared_samples += seg.audio.size
                cut.add(seg.reply)
            else:
                played = int(round((now - seg.start) * self.rate))
                self.cleared_samples += seg.audio.size - played
                cut.add(seg.reply)
                kept.append(_Segment(seg.start, seg.audio[:played], seg.reply))
        self.segments = kept
        self.play_end = min(self.play_end, now)
        marks = [name for _, name in self.marks]
        self.marks.clear()
        return marks, cut

    def playing(self, now: float) -> bool:
        return now < self.play_end

    def heard_samples(self, reply: int | None = None, until: float | None = None) -> int:
        """Samples played (or to be played by `until`) for one reply or all."""
        total = 0
        for seg in self.segments:
            if reply is not None and seg.reply != reply:
                continue
            n = seg.audio.size
            if until is not None:
                n = max(0, min(n, int(round((until - seg.start) * self.rate))))
            total += n
        return total

    def heard_audio(self, reply: int, until: float | None = None) -> np.ndarray:
        """The reply as heard (up to `until`), its chunks joined without the gaps between them."""
        parts = []
        for seg in self.segments:
            if seg.reply != reply:
                continue
            n = seg.audio.size if until is None else max(0, int(round((until - seg.start) * self.rate)))
            parts.append(seg.audio[:n])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def render(self, t0: float, t_end: float) -> np.ndarray:
        """Everything heard from t0 to t_end as one track, silence where nothing played."""
        total = max(0, int(round((t_end - t0) * self.rate)))
        track = np.zeros(total, dtype=np.int16)
        for seg in self.segments:
            at = int(round((seg.start - t0) * self.rate))
            if at >= total:
                continue
            piece = seg.audio[: total - at]
            track[at : at + piece.size] = piece
        return track


# ---- caller utterances on the wire ----------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One thing the caller says, pre-encoded into wire frames (so load runs spend no CPU on it)."""

    label: str
    frames: tuple[bytes | str, ...]  # pcm16 bytes (native) or base64 μ-law payloads (twilio)
    first_voiced: int
    last_voiced: int
    duration_ms: float


def wire_frames(audio16k: np.ndarray, protocol: ProtocolName) -> tuple[bytes | str, ...]:
    """16 kHz int16 audio as 20 ms frames for `protocol` (the tail is padded with silence)."""
    return _encode(np.asarray(audio16k, dtype=np.int16), protocol)[0]


def _encode(audio16k: np.ndarray, protocol: ProtocolName) -> tuple[tuple[bytes | str, ...], np.ndarray, int]:
    """(frames, the audio as the server will decode it, its rate)."""
    if protocol == "twilio":
        wire = resample(audio16k, SAMPLE_RATE, TELEPHONE_RATE)
        step = TELEPHONE_RATE * FRAME_MS // 1000
        n = math.ceil(wire.size / step)
        padded = np.zeros(n * step, dtype=np.int16)
        padded[: wire.size] = wire
        encoded = mulaw_encode(padded)
        frames: tuple[bytes | str, ...] = tuple(
            base64.b64encode(encoded[i * step : (i + 1) * step]).decode("ascii") for i in range(n)
        )
        return frames, mulaw_decode(encoded), TELEPHONE_RATE
    step = SAMPLE_RATE * FRAME_MS // 1000
    n = math.ceil(audio16k.size / step)
    padded = np.zeros(n * step, dtype=np.int16)
    padded[: audio16k.size] = audio16k
    raw = padded.tobytes()
    return tuple(raw[i * step * 2 : (i + 1) * step * 2] for i in range(n)), padded, SAMPLE_RATE


def prepare_audio(audio16k: np.ndarray, protocol: ProtocolName, label: str = "") -> Utterance:
    """Split 16 kHz int16 audio into 20 ms wire frames for `protocol`, and find where speech is.

    Speech bounds are judged on the audio as sent (for Twilio: 8 kHz μ-law), because that is all
    the server can hear: a final "s" above 4 kHz is not speech to it.
    """
    audio16k = np.asarray(audio16k, dtype=np.int16)
    frames, heard, rate = _encode(audio16k, protocol)
    n = len(frames)
    bounds = speech_bounds(heard, rate)
    if bounds is None or n == 0:
        raise ValueError(f"utterance {label!r} is silent")
    first, last = bounds
    return Utterance(label, frames, min(first, n - 1), min(last, n - 1), n * FRAME_MS)


@functools.lru_cache(maxsize=2048)
def prepare_utterance(
    text: str, voice: str, protocol: ProtocolName, degradation: Degradation | None = None
) -> Utterance:
    """Synthesise (cached) and encode one line for `protocol`; cached per (text, voice, protocol)."""
    audio = synthesize_caller(text, voice)
    if degradation is not None:
        audio = degrade(audio, degradation)
    return prepare_audio(audio, protocol, label=text)


def prepare_wav(path: Path, protocol: ProtocolName, degradation: Degradation | None = None) -> Utterance:
    audio = read_wav(path, SAMPLE_RATE)
    if degradation is not None:
        audio = degrade(audio, degradation)
    return prepare_audio(audio, protocol, label=Path(path).name)


# ---- the two protocols ------------------------------------------------------------------------------


@dataclass
class WireEvent:
    """A server message, protocol-neutral."""

    kind: str  # audio | mark | clear | started | busy | transcript | turn | ended | error | ignored
    audio: np.ndarray | None = None
    name: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class WireError(InvalidError):
    """The server sent something the protocol does not allow."""


class Wire(Protocol):
    """One socket dialect, caller side: how the call opens, carries audio and events, and reads replies."""

    @property
    def rate(self) -> int:
        """Sample rate of the audio on the wire."""
        ...

    @property
    def silence(self) -> bytes | str:
        """One frame of silence as the wire carries it."""
        ...

    def opening(self) -> list[str]: ...

    def media(self, frame: bytes | str) -> str | bytes: ...

    def dtmf(self, digit: str) -> str: ...

    def mark(self, name: str) -> str: ...

    def stop(self) -> str: ...

    def parse(self, message: str | bytes) -> WireEvent: ...


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class TwilioWire:
    """Twilio Media Streams, caller side: JSON text messages, base64 8 kHz μ-law, 20 ms media."""

    rate = TELEPHONE_RATE

    def __init__(self, agent: str, custom_parameters: dict[str, str] | None = None) -> None:
        self.account_sid = _sid("AC")
        self.call_sid = _sid("CA")
        self.stream_sid = _sid("MZ")
        self.custom_parameters = dict(custom_parameters or {"agent": agent, "caller": "voxgate-testing"})
        self.sequence = 0
        self.chunk = 0
        self.silence = base64.b64encode(bytes([MULAW_SILENCE]) * (TELEPHONE_RATE * FRAME_MS // 1000)).decode("ascii")

    def _next_seq(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def opening(self) -> list[str]:
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        start = {
            "event": "start",
            "sequenceNumber": self._next_seq(),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": TELEPHONE_RATE, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }
        return [json.dumps(connected), json.dumps(start)]

    def media(self, frame: bytes | str) -> str:
        self.chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next_seq(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    # media time since the stream started, which is what Twilio reports
                    "timestamp": str((self.chunk - 1) * FRAME_MS),
                    "payload": frame,
                },
                "streamSid": self.stream_sid,
            }
        )

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_seq(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def mark(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    def parse(self, message: str | bytes) -> WireEvent:
        if isinstance(message, bytes):
            raise WireError("binary WebSocket frame (media streams are JSON text)")
        try:
            msg = json.loads(message)
        except ValueError as exc:
            raise WireError(f"invalid JSON from server: {exc}") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            raise WireError("server message is not a JSON object with an 'event'")
        event = msg["event"]
        if msg.get("streamSid") not in (None, self.stream_sid):
            raise WireError(f"'{event}' for another streamSid {msg.get('streamSid')!r}")
        if event == "media":
            media = msg.get("media")
            if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
                raise WireError("media message without media.payload")
            try:
                raw = base64.b64decode(media["payload"], validate=True)
            except (binascii.Error, ValueError):
                raise WireError("media payload is not valid base64") from None
            return WireEvent("audio", audio=mulaw_decode(raw))
        if event == "mark":
            mark = msg.get("mark")
            if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
                raise WireError("mark message without mark.name")
            return WireEvent("mark", name=mark["name"])
        if event == "clear":
            return WireEvent("clear")
        return WireEvent("ignored", data=msg)


class NativeWire:
    """voxgate's native voice socket, caller side: JSON control + binary 16 kHz pcm16 frames."""

    rate = SAMPLE_RATE

    def __init__(self) -> None:
        self.silence = bytes(SAMPLE_RATE * FRAME_MS // 1000 * 2)

    def opening(self) -> list[str]:
        return [json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "encoding": "pcm16"})]

    def media(self, frame: bytes | str) -> bytes:
        assert isinstance(frame, bytes)  # nosec B101: type narrowing (test tooling)
        return frame

    def dtmf(self, digit: str) -> str:
        return json.dumps({"type": "dtmf", "digit": digit})

    def mark(self, name: str) -> str:
        return json.dumps({"type": "mark", "name": name})

    def stop(self) -> str:
        return json.dumps({"type": "stop"})

    def parse(self, message: str | bytes) -> WireEvent:
        if isinstance(message, bytes):
            if len(message) % 2:
                raise WireError(f"agent audio frame of {len(message)} bytes is not whole pcm16 samples")
            return WireEvent("audio", audio=np.frombuffer(message, dtype="<i2").astype(np.int16))
        try:
            msg = json.loads(message)
        except ValueError as exc:
            raise WireError(f"invalid JSON from server: {exc}") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise WireError("server message is not a JSON object with a 'type'")
        kind = msg["type"]
        if kind == "mark":
            if not isinstance(msg.get("name"), str):
                raise WireError("mark without a name")
            return WireEvent("mark", name=msg["name"])
        if kind in ("clear", "started", "busy", "transcript", "turn", "ended", "error"):
            return WireEvent(kind, data=msg)
        return WireEvent("ignored", data=msg)


def voice_url(url: str, protocol: ProtocolName, agent: str) -> str:
    """The socket URL: http(s) becomes ws(s); a bare host gets the protocol's path for `agent`."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path
    if path in ("", "/"):
        path = f"/twilio/{agent}" if protocol == "twilio" else f"/ws/voice/{agent}"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


# ---- one call ------------------------------------------------------------------------------------------


@dataclass
class _Turn:
    """A scripted caller turn: speech (an Utterance) or DTMF digits."""

    utterance: Utterance | None = None
    dtmf: str | None = None


@dataclass
class _Reply:
    """What the caller observed for one reply (index -1 is the greeting)."""

    speech_start: float | None = None
    speech_end: float | None = None
    first_audio: float | None = None  # first agent audio of any level for this reply
    first_audible: float | None = None  # first audible frame after speech end
    talked_over: bool = False  # the agent was still playing when the caller's speech began
    cut_in: float | None = None  # audible agent audio arrived while the caller was still speaking
    interrupted: bool = False
    server_heard: list[str] = field(default_factory=list)
    server_text: list[str] = field(default_factory=list)


def build_turns(says: Sequence[Utterance], dtmf: dict[int, str] | None) -> list[_Turn]:
    """Merge spoken lines and DTMF into one script: DTMF takes turn index k, speech fills the rest in order."""
    dtmf = dict(dtmf or {})
    total = len(says) + len(dtmf)
    bad = [k for k in dtmf if not 0 <= k < total]
    if bad:
        raise ValueError(f"dtmf turn index {bad[0]} is outside 0..{total - 1} for {total} turns")
    for k, digits in dtmf.items():
        if not digits or any(d not in "0123456789*#" for d in digits):
            raise ValueError(f"dtmf for turn {k} must be digits 0-9, * or #, got {digits!r}")
    spoken = iter(says)
    return [_Turn(dtmf=dtmf[k]) if k in dtmf else _Turn(utterance=next(spoken)) for k in range(total)]


class SimulatedCall:
    """One live call: a paced sender, a receiver and a script, sharing a playback model."""

    def __init__(
        self,
        url: str,
        *,
        protocol: ProtocolName,
        agent: str,
        voice: str,
        gap_ms: int,
        custom_parameters: dict[str, str] | None = None,
        line_noise_dbfs: float | None = None,
    ) -> None:
        self.url = voice_url(url, protocol, agent)
        self.protocol = protocol
        self.gap_s = gap_ms / 1000
        self.wire: Wire = TwilioWire(agent, custom_parameters) if protocol == "twilio" else NativeWire()
        self.clock = PlaybackClock(self.wire.rate)
        self.pacer = RealtimePacer(clock=self._now)
        self.report = CallReport(url=self.url, protocol=protocol, agent=agent, voice=voice)
        if isinstance(self.wire, TwilioWire):
            self.report.stream_sid = self.wire.stream_sid
        self.ws: Any = None
        self.t0 = 0.0
        self.start_sent_at: float | None = None
        self.replies: dict[int, _Reply] = {-1: _Reply()}
        self.reply_index = -1
        self.speaking: Utterance | None = None
        self.speak_pos = 0
        self.server_closed = asyncio.Event()
        self.finished = False
        self.uses_last_marks = False
        self.last_mark = ""
        self.cut = False  # a clear ended the current reply: no ':last' mark will follow
        self.ended_at: float | None = None
        self.last_arrival = 0.0
        self.clears: list[float] = []
        self._send_lock = asyncio.Lock()
        # what the line carries while the caller is not speaking: digital silence, or a noise floor
        # (4 s of it, cycled; built per call from a seed so concurrent callers differ)
        self._idle: tuple[bytes | str, ...] = (
            (self.wire.silence,)
            if line_noise_dbfs is None
            else wire_frames(line_noise(4 * SAMPLE_RATE, line_noise_dbfs, seed=secrets.randbits(32)), protocol)
        )
        self._idle_pos = 0

    # -- time --

    @staticmethod
    def _now() -> float:
        return time.monotonic()

    def rel(self, t: float | None) -> float | None:
        return None if t is None else round(t - self.t0, 4)

    # -- sending --

    async def _send(self, message: str | bytes) -> bool:
        if self.finished or self.server_closed.is_set():
            return False
        from websockets.exceptions import ConnectionClosed

        async with self._send_lock:
            try:
                await self.ws.send(message)
                return True
            except ConnectionClosed:
                return False

    async def _echo(self, names: list[str]) -> None:
        for name in names:
            if await self._send(self.wire.mark(name)):
                self.report.timings.marks_echoed += 1

    async def sender(self) -> None:
        """Stream one frame per 20 ms for the whole call; speech when an utterance is queued."""
        while not self.finished and not self.server_closed.is_set():
            await self.pacer.wait()
            now = self._now()
            await self._echo(self.clock.due_marks(now))
            utt, pos = self.speaking, self.speak_pos
            if utt is not None:
                frame = utt.frames[pos]
            else:
                frame = self._idle[self._idle_pos % len(self._idle)]
                self._idle_pos += 1
            if not await self._send(self.wire.media(frame)):
                return
            self.report.timings.frames_sent += 1
            if utt is not None:
                reply = self.replies[self.reply_index]
                if pos == utt.first_voiced:
                    reply.speech_start = now
                    reply.talked_over = self.clock.playing(now)
                if pos == utt.last_voiced:
                    reply.speech_end = now
                self.speak_pos += 1
                if self.speak_pos >= len(utt.frames):
                    self.speaking = None
        self.report.timings.max_send_lag_ms = round(self.pacer.max_lag_s_seen * 1000, 1)

    async def say(self, utterance: Utterance) -> None:
        """Queue an utterance into the paced stream and wait until its last frame has gone."""
        self.speak_pos = 0
        self.speaking = utterance
        await self.wait_for(lambda now: self.speaking is None, len(utterance.frames) * FRAME_S + 5.0)

    async def key(self, digits: str) -> None:
        """Send DTMF digits 100 ms apart; the turn's 'speech end' is the last digit."""
        reply = self.replies[self.reply_index]
        for i, digit in enumerate(digits):
            if i:
                await asyncio.sleep(DTMF_GAP_S)
            if not await self._send(self.wire.dtmf(digit)):
                return
            now = self._now()
            if reply.speech_start is None:
                reply.speech_start = now
            reply.speech_end = now

    # -- receiving --

    async def receiver(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.ws:
                try:
                    self._on_message(message)
                except WireError as exc:
                    # our side of the protocol is broken: stop reading; the script sees the
                    # error and the caller hangs up
                    self.report.error = f"protocol error: {exc}"
                    return
        except ConnectionClosed:
            pass
        if not self.finished:
            self._on_close()

    def _on_close(self) -> None:
        self.report.closed_by = self.report.closed_by or "server"
        self.report.close_code = self.ws.close_code
        self.report.close_reason = self.ws.close_reason or None
        if self.report.close_reason == "busy":
            self.report.refused = True
        code = self.ws.close_code
        if code not in (1000, 1001):
            reason = f": {self.ws.close_reason}" if self.ws.close_reason else ""
            closed = f"server closed the call with code {code}{reason}"
            self.report.error = f"{self.report.error} ({closed})" if self.report.error else closed
        self.server_closed.set()

    def _on_message(self, message: str | bytes) -> None:
        now = self._now()
        event = self.wire.parse(message)
        reply = self.replies[self.reply_index]
        if event.kind == "audio":
            samples = event.audio if event.audio is not None else np.zeros(0, dtype=np.int16)
            self.clock.add_audio(now, samples, self.reply_index)
            self.last_arrival = now
            if reply.first_audio is None:
                reply.first_audio = now
            audible = (
                bool(samples.size) and float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) >= AGENT_AUDIBLE_RMS
            )
            if (
                audible
                and reply.cut_in is None
                and not reply.talked_over
                and self.speaking is not None
                and reply.speech_start is not None
                and reply.speech_end is None
            ):
                reply.cut_in = now  # the agent began before the caller's last word had gone
            if reply.first_audible is None and (reply.speech_end is not None or self.reply_index == -1) and audible:
                reply.first_audible = now
        elif event.kind == "mark":
            assert event.name is not None  # nosec B101: type narrowing (test tooling)
            self.report.timings.marks_received += 1
            self.last_mark = event.name
            if _VOXGATE_MARK.match(event.name):
                self.uses_last_marks = True
            self.clock.add_mark(now, event.name)
            names = self.clock.due_marks(now)
            if names:
                asyncio.get_running_loop().create_task(self._echo(names))
        elif event.kind == "clear":
            self.report.timings.clears += 1
            self.clears.append(now)
            names, cut = self.clock.clear(now)
            self.cut = True
            for index in cut:
                self.replies.setdefault(index, _Reply()).interrupted = True
            if names:
                asyncio.get_running_loop().create_task(self._echo(names))
        elif event.kind == "started":
            self.report.session_id = str(event.data.get("session_id") or "") or None
            if self.start_sent_at is not None:
                self.report.timings.started_ms = round((now - self.start_sent_at) * 1000, 1)
        elif event.kind == "busy":
            self.report.refused = True
        elif event.kind == "transcript":
            text = str(event.data.get("text") or "")
            if event.data.get("role") == "user":
                reply.server_heard.append(text)
            else:
                reply.server_text.append(text)
        elif event.kind == "ended":
            self.report.outcome = event.data.get("outcome")
            self.report.ended_reason = event.data.get("reason")
        elif event.kind == "error":
            self.report.error = f"server error: {event.data.get('error')}"
        elif event.kind == "ignored":
            note = f"ignored server message {str(event.data)[:120]}"
            if len(self.report.notes) < 20 and note not in self.report.notes:
                self.report.notes.append(note)

    # -- waiting --

    async def wait_for(self, predicate: Callable[[float], bool], timeout_s: float) -> bool:
        """Poll `predicate(now)` each frame period; False on timeout, server close or error."""
        deadline = self._now() + timeout_s
        while True:
            now = self._now()
            if predicate(now):
                return True
            if self.server_closed.is_set() or self.report.error is not None or now >= deadline:
                return False
            await asyncio.sleep(POLL_S)

    def reply_settled(self, now: float) -> bool:
        """The reply has played out, its marks are back, and the caller has paused for gap_ms."""
        if self.clock.playing(now) or self.clock.marks:
            return False
        quiet_since = max(self.clock.play_end, self.last_arrival)
        if (
            self.uses_last_marks
            and not self.cut
            and not self.last_mark.endswith(":last")
            and now - quiet_since < LAST_MARK_WAIT_S
        ):
            return False  # more chunks of this reply are still being synthesised
        return now - quiet_since >= self.gap_s

    async def wait_reply(self, index: int, timeout_s: float) -> bool:
        """Wait for an audible reply to turn `index` to start, then to finish plus the gap."""
        reply = self.replies[index]
        started = await self.wait_for(lambda now: reply.first_audible is not None, timeout_s)
        if not started:
            return False
        return await self.wait_for(self.reply_settled, timeout_s + 120.0)

    def begin_turn(self, index: int) -> _Reply:
        self.reply_index = index
        self.last_mark = ""
        self.cut = False
        return self.replies.setdefault(index, _Reply())

    # -- connect / hang up --

    async def connect(self, open_timeout_s: float) -> bool:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        self.t0 = self._now()
        try:
            # proxy=None: a loopback test must never be routed through an HTTP proxy from the env;
            # compression off: Twilio does not deflate media, and it would cost CPU in load runs
            self.ws = await connect(
                self.url,
                proxy=None,
                compression=None,
                open_timeout=open_timeout_s,
                max_size=2**22,
                ping_interval=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.report.refused = status in (429, 503)
            self.report.error = f"connection refused by server: HTTP {status}"
            return False
        except (TimeoutError, OSError, WebSocketException) as exc:
            self.report.error = f"cannot connect to {self.url}: {type(exc).__name__}: {exc}"
            return False
        self.report.timings.connect_ms = round((self._now() - self.t0) * 1000, 1)
        for message in self.wire.opening():
            if not await self._send(message):
                break  # the receiver will read the close frame and report why
        self.start_sent_at = self._now()
        return True

    async def hang_up(self) -> None:
        """Caller hangs up: `stop`, then close the socket (unless the server already closed)."""
        if self.ws is None:
            return
        if self.report.error and self.report.error.startswith("server error"):
            # the server said why and is closing the socket itself: let it, so the close code is seen
            try:
                await asyncio.wait_for(self.server_closed.wait(), 1.0)
            except TimeoutError:
                pass
        if self.server_closed.is_set():
            return
        await self._send(self.wire.stop())
        self.report.closed_by = "caller"
        self.finished = True
        try:
            await asyncio.wait_for(self.ws.close(1000, "caller hung up"), 5.0)
        except (TimeoutError, OSError):
            pass
        self.report.close_code = self.ws.close_code
        self.report.close_reason = self.ws.close_reason or None

    # -- finishing the report --

    def finish(self, ended_at: float) -> None:
        report, timings = self.report, self.report.timings
        timings.duration_s = round(ended_at - self.t0, 3)
        timings.max_send_lag_ms = round(self.pacer.max_lag_s_seen * 1000, 1)
        timings.pacer_rebases = self.pacer.rebases
        rate = self.clock.rate
        timings.agent_audio_received_ms = round(sum(self.clock.received_samples.values()) / rate * 1000, 1)
        timings.agent_audio_heard_ms = round(self.clock.heard_samples(until=ended_at) / rate * 1000, 1)
        greeting = self.replies[-1]
        if greeting.first_audio is not None and self.start_sent_at is not None:
            timings.greeting_first_audio_ms = round((greeting.first_audio - self.start_sent_at) * 1000, 1)
        timings.greeting_audio_ms = round(self.clock.heard_samples(-1, until=ended_at) / rate * 1000, 1)
        report.greeting_server_text = " ".join(greeting.server_text) or None
        for turn in report.turns:
            reply = self.replies.get(turn.index, _Reply())
            turn.speech_start_s = self.rel(reply.speech_start)
            turn.speech_end_s = self.rel(reply.speech_end)
            turn.first_reply_audio_s = self.rel(reply.first_audible)
            if reply.first_audible is not None and reply.speech_end is not None:
                turn.voice_to_voice_ms = round((reply.first_audible - reply.speech_end) * 1000, 1)
            turn.replied = reply.first_audible is not None
            turn.reply_audio_ms = round(self.clock.heard_samples(turn.index, until=ended_at) / rate * 1000, 1)
            turn.reply_received_ms = round(self.clock.received_samples.get(turn.index, 0) / rate * 1000, 1)
            turn.interrupted = reply.interrupted
            turn.cut_in = reply.cut_in is not None
            turn.server_heard = " ".join(reply.server_heard) or None
            turn.server_reply_text = " ".join(reply.server_text) or None


# ---- transcription of what was heard -------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _recognizer() -> Any:
    # imported lazily: the recogniser is heavy and only needed after a call, never in load runs
    from voxgate.voice.asr import WhisperRecognizer

    return WhisperRecognizer(model="tiny.en", threads=1)


def transcribe_audio(audio: np.ndarray, rate: int) -> str:
    """Caller-side transcription of agent audio (int16 at `rate`) with the project's recogniser."""
    if audio.size < rate // 10:
        return ""
    pcm16k = resample(audio, rate, SAMPLE_RATE)
    result = _recognizer().transcribe(pcm16k.astype(np.float32) / 32768.0)
    return str(getattr(result, "text", result)).strip()


def _transcribe_replies(call: SimulatedCall) -> None:
    rate = call.clock.rate
    until = call.ended_at
    call.report.greeting_text = transcribe_audio(call.clock.heard_audio(-1, until), rate) or None
    for turn in call.report.turns:
        turn.reply_text = transcribe_audio(call.clock.heard_audio(turn.index, until), rate) or None


async def _postprocess(call: SimulatedCall, ended_at: float, transcribe: bool, record_path: Path | None) -> None:
    call.ended_at = ended_at
    call.finish(ended_at)
    if record_path is not None:
        track = call.clock.render(call.t0, ended_at)
        await asyncio.to_thread(write_wav, record_path, resample(track, call.clock.rate, SAMPLE_RATE), SAMPLE_RATE)
    if transcribe and call.clock.segments:
        try:
            await asyncio.to_thread(_transcribe_replies, call)
        except ImportError as exc:
            call.report.notes.append(f"transcription unavailable: {exc}")
        except Exception as exc:  # a broken recogniser must not lose the call's measurements
            call.report.notes.append(f"transcription failed: {type(exc).__name__}: {exc}")


# ---- public entry points ---------------------------------------------------------------------------


def _utterances(
    says: Sequence[str] | None,
    wavs: Sequence[Path] | None,
    voice: str,
    protocol: ProtocolName,
    degradation: Degradation | None,
) -> list[Utterance]:
    out = [prepare_utterance(" ".join(s.split()), voice, protocol, degradation) for s in (says or [])]
    out += [prepare_wav(Path(p), protocol, degradation) for p in (wavs or [])]
    return out


async def _run(
    call: SimulatedCall,
    script: Callable[[SimulatedCall], Awaitable[None]],
    *,
    timeout_s: float,
    hangup_after: bool,
) -> float:
    """Connect, run sender + receiver + script under one deadline, hang up; return the end time."""
    deadline = call._now() + timeout_s
    if not await call.connect(min(10.0, timeout_s)):
        return call._now()
    tasks = [asyncio.create_task(call.sender()), asyncio.create_task(call.receiver())]
    try:
        async with asyncio.timeout(max(0.0, deadline - call._now())):
            await script(call)
            if call.report.error is None and not call.server_closed.is_set():
                if not hangup_after:
                    await call.server_closed.wait()  # keep the line open until the agent hangs up
    except TimeoutError:
        if call.report.error is None:
            call.report.error = f"call did not finish within {timeout_s:g} s"
    except Exception as exc:  # the report must come back whatever happened on the wire
        log.exception("simulated call failed")
        call.report.error = call.report.error or f"{type(exc).__name__}: {exc}"
    finally:
        await call.hang_up()
        call.finished = True
        ended_at = call._now()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return ended_at


async def run_call(
    url: str,
    says: list[str] | None = None,
    wavs: list[Path] | None = None,
    protocol: ProtocolName = "twilio",
    agent: str = "harbor-support",
    voice: str = "pico-en-GB",
    dtmf: dict[int, str] | None = None,
    gap_ms: int = 600,
    timeout_s: float = 60,
    transcribe: bool = True,
    hangup_after: bool = True,
    *,
    record_path: Path | None = None,
    degradation: Degradation | None = None,
    reply_timeout_s: float = 15.0,
    greeting_timeout_s: float = 30.0,
    custom_parameters: dict[str, str] | None = None,
    line_noise_dbfs: float | None = None,
    prepared: Sequence[Utterance] | None = None,
) -> CallReport:
    """Place one simulated call and report what the caller heard and when.

    `says` (then `wavs`, then `prepared`: utterances already encoded for `protocol`) are spoken in order; `dtmf` {turn index: digits} puts keyed digits at
    that turn instead of speech, and the spoken lines fill the other turns. The caller waits for
    the greeting and for each reply to play out, pauses `gap_ms`, then takes its next turn;
    after the last reply it hangs up (`hangup_after`) unless the server hung up first.
    A turn whose reply does not start within `reply_timeout_s` is reported with `replied=False`
    and the script goes on. `url` may be a bare server (ws://host:port): the protocol's path
    for `agent` is added.
    """
    call = SimulatedCall(
        url,
        protocol=protocol,
        agent=agent,
        voice=voice,
        gap_ms=gap_ms,
        custom_parameters=custom_parameters,
        line_noise_dbfs=line_noise_dbfs,
    )
    degradation = degradation or noisy_line(line_noise_dbfs)  # the words carry the line's noise too
    try:
        turns = build_turns([*_utterances(says, wavs, voice, protocol, degradation), *(prepared or ())], dtmf)
    except (ValueError, RuntimeError, OSError) as exc:
        call.report.error = f"cannot prepare the caller's audio: {exc}"
        return call.report
    for k, turn in enumerate(turns):
        call.report.turns.append(
            TurnReport(index=k, said=turn.utterance.label if turn.utterance else None, dtmf=turn.dtmf)
        )

    async def script(c: SimulatedCall) -> None:
        if not await c.wait_reply(-1, greeting_timeout_s):
            if c.report.error is None and not c.server_closed.is_set() and c.replies[-1].first_audible is None:
                c.report.error = f"no greeting within {greeting_timeout_s:g} s"
            return
        for k, turn in enumerate(turns):
            if c.server_closed.is_set() or c.report.error is not None:
                return
            c.begin_turn(k)
            if turn.utterance is not None:
                await c.say(turn.utterance)
            else:
                await c.key(turn.dtmf or "")
            await c.wait_reply(k, reply_timeout_s)

    ended_at = await _run(call, script, timeout_s=timeout_s, hangup_after=hangup_after)
    await _postprocess(call, ended_at, transcribe, record_path)
    return call.report


async def barge_in_probe(
    url: str,
    barge: str = "sorry, can I talk to a person please",
    *,
    says: list[str] | None = None,
    after_ms: int = 800,
    protocol: ProtocolName = "twilio",
    agent: str = "harbor-support",
    voice: str = "pico-en-GB",
    gap_ms: int = 600,
    timeout_s: float = 60,
    clear_wait_s: float = 5.0,
    reply_timeout_s: float = 15.0,
    transcribe: bool = False,
    record_path: Path | None = None,
) -> BargeInReport:
    """Speak `barge` over the agent, `after_ms` after its reply audio starts arriving.

    The caller first plays `says` as an ordinary conversation; it then barges into the reply to
    the last of them (into the greeting when `says` is empty). Reported: the time from the
    barge-in's speech onset (first non-silent frame sent) to the server's `clear`, or None if no
    clear came within `clear_wait_s` after the utterance ended. `agent_playing_at_onset` says
    whether the agent was still audible when the caller started: if not, the probe measured
    nothing and should be rerun with a smaller `after_ms` or a longer reply.
    """
    call = SimulatedCall(url, protocol=protocol, agent=agent, voice=voice, gap_ms=gap_ms)
    result = BargeInReport(after_ms=after_ms, said=barge, call=call.report)
    try:
        lines = _utterances(says, None, voice, protocol, None)
        interruption = prepare_utterance(" ".join(barge.split()), voice, protocol, None)
    except (ValueError, RuntimeError, OSError) as exc:
        call.report.error = f"cannot prepare the caller's audio: {exc}"
        return result
    for k, utt in enumerate([*lines, interruption]):
        call.report.turns.append(TurnReport(index=k, said=utt.label))

    async def script(c: SimulatedCall) -> None:
        target = -1
        if not await c.wait_for(lambda now: c.replies[-1].first_audible is not None, reply_timeout_s * 2):
            c.report.error = c.report.error or "no greeting"
            return
        for k, utt in enumerate(lines):
            if not await c.wait_for(c.reply_settled, reply_timeout_s + 120.0):
                return
            c.begin_turn(k)
            await c.say(utt)
            target = k

            def replied(_now: float, turn: int = k) -> bool:
                return c.replies[turn].first_audible is not None

            if not await c.wait_for(replied, reply_timeout_s):
                c.report.error = c.report.error or f"no reply to turn {k}; nothing to barge into"
                return
        reply = c.replies[target]
        assert reply.first_audio is not None  # nosec B101: type narrowing (test tooling)
        at = reply.first_audio + after_ms / 1000
        if not await c.wait_for(lambda now: now >= at, after_ms / 1000 + 1.0):
            return
        barge_turn = len(lines)
        c.begin_turn(barge_turn)
        onset_clears = len(c.clears)
        c.speak_pos = 0
        c.speaking = interruption
        await c.wait_for(lambda now: c.replies[barge_turn].speech_start is not None, 5.0)
        onset = c.replies[barge_turn].speech_start
        result.speech_onset_s = c.rel(onset)
        result.agent_playing_at_onset = onset is not None and c.clock.playing(onset)
        await c.wait_for(lambda now: c.speaking is None, len(interruption.frames) * FRAME_S + 5.0)
        await c.wait_for(lambda now: len(c.clears) > onset_clears, clear_wait_s)
        if len(c.clears) > onset_clears and onset is not None:
            clear_at = c.clears[onset_clears]
            result.clear_s = c.rel(clear_at)
            result.onset_to_clear_ms = round((clear_at - onset) * 1000, 1)
        await c.wait_reply(barge_turn, reply_timeout_s)

    ended_at = await _run(call, script, timeout_s=timeout_s, hangup_after=True)
    target_index = len(says or []) - 1
    first = call.replies.get(target_index, _Reply()).first_audio
    result.reply_started_s = call.rel(first)
    await _postprocess(call, ended_at, transcribe, record_path)
    return result
