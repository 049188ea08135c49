"""What a session reports to its recorder: plain, frozen records, captured when something happened.

A record holds facts, never the live session: whoever stores it (``compliance.recorder`` redacts
and hands rows to the store) needs nothing else from the runtime. Records compare by identity
(``eq=False``), so a recorder may remember which of them it has already written part of.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voxgate.bundle.models import Agent, Topic

#: the session channels that are phone calls (the others are chats): the Twilio and native voice sockets
VOICE_CHANNELS = frozenset({"twilio", "voice", "native"})

# the timing fields of a voice turn that are stored as they are (milliseconds, None when unknown)
VOICE_TIMING_FIELDS = (
    "speech_end_audio_ms",
    "endpoint_ms",
    "asr_final_ms",
    "asr_compute_ms",
    "intent_ms",
    "first_tts_ms",
    "voice_to_voice_ms",
)


@dataclass(frozen=True, eq=False)
class SessionFacts:
    """Who and what a record is about: the session, its agent and bundle, and what the caller is known to be."""

    session_id: str
    agent: Agent
    topics: tuple[Topic, ...]
    bundle_digest: str | None
    environment: str
    channel: str
    customer_id: str | None = None
    customer_name: str | None = None
    account_numbers: tuple[str, ...] = ()
    phone: str | None = None

    @property
    def agent_name(self) -> str:
        """The agent's name."""
        return self.agent.name

    @property
    def agent_version(self) -> str:
        """The agent's version."""
        return self.agent.version


@dataclass(frozen=True, eq=False)
class SessionStarted:
    """A conversation started."""

    facts: SessionFacts
    at: dt.datetime


@dataclass(frozen=True, eq=False)
class TurnTaken:
    """One turn: the caller's words (as the transcript keeps them), the reply and the turn's data."""

    facts: SessionFacts
    seq: int
    at: dt.datetime
    user_text: str | None
    agent_text: str
    intent: str | None
    confidence: float | None
    state: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class CallerVerified:
    """The caller was verified as ``facts.customer_id``."""

    facts: SessionFacts


@dataclass(frozen=True, eq=False)
class SecurityEvent:
    """Something refused or suspicious (a failed verification, another customer's data asked for)."""

    facts: SessionFacts
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ActionCalled:
    """A connector call and how it went (never its arguments or answer)."""

    facts: SessionFacts
    action: str
    status: str
    http_status: int | None = None
    error: str | None = None
    customer_scoped: bool = False  # the action may only touch the verified caller's records

    @property
    def verified(self) -> bool:
        """Whether the session had a verified caller when the call was made."""
        return self.facts.customer_id is not None


@dataclass(frozen=True, eq=False)
class HandedOff:
    """The conversation was escalated to a queue with its context packet."""

    facts: SessionFacts
    queue: str
    reason: str
    packet: Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class SessionEnded:
    """The conversation ended with an outcome."""

    facts: SessionFacts
    outcome: str | None
    reason: str
    turns: int
    at: dt.datetime


@dataclass(frozen=True, eq=False)
class VoiceTurnTimed:
    """The timing record of one voice turn (milliseconds; None where a stage did not happen)."""

    facts: SessionFacts
    seq: int
    timings_ms: Mapping[str, float | None]
    speculative_hit: bool = False
    interrupted: bool = False
    dtmf: bool = False

    @classmethod
    def of(cls, facts: SessionFacts, seq: int, timing: Mapping[str, Any]) -> VoiceTurnTimed:
        """The record of a voice pipeline's turn summary."""
        return cls(
            facts=facts,
            seq=seq,
            timings_ms={name: timing.get(name) for name in VOICE_TIMING_FIELDS},
            speculative_hit=bool(timing.get("speculative_hit")),
            interrupted=bool(timing.get("interrupted")),
            dtmf=bool(timing.get("dtmf")),
        )


SessionRecord = (
    SessionStarted
    | TurnTaken
    | CallerVerified
    | SecurityEvent
    | ActionCalled
    | HandedOff
    | SessionEnded
    | VoiceTurnTimed
)
