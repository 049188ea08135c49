"""The recorder port: where sessions hand their records (runtime/records.py).

The runtime defines what it reports and never how it is stored: a worker plugs in
``compliance.recorder.RedactingRecorder`` (redaction, privacy keep-lists, the audit chain, then the
store's rows); tests, gates and ``voxgate chat`` without a database use :class:`MemoryRecorder`.
"""

from __future__ import annotations

from typing import Any, Protocol

from voxgate.runtime.records import (
    ActionCalled,
    CallerVerified,
    HandedOff,
    SecurityEvent,
    SessionEnded,
    SessionRecord,
    SessionStarted,
    TurnTaken,
    VoiceTurnTimed,
)


class Recorder(Protocol):
    """Receives a session's records, one call per record, in the order they happened."""

    async def session_started(self, record: SessionStarted) -> None:
        """A conversation started."""

    async def turn(self, record: TurnTaken) -> None:
        """A turn was taken."""

    async def identity(self, record: CallerVerified) -> None:
        """The caller was verified."""

    async def security_event(self, record: SecurityEvent) -> None:
        """Something was refused or looked suspicious."""

    async def handoff(self, record: HandedOff) -> None:
        """The conversation was escalated with its context packet."""

    async def session_ended(self, record: SessionEnded) -> None:
        """The conversation ended."""

    async def voice_turn(self, record: VoiceTurnTimed) -> None:
        """A voice turn's timings."""

    async def action_call(self, record: ActionCalled) -> None:
        """A connector was called."""


SessionRecorder = Recorder  # the name the channels and the API know it by


async def deliver(recorder: Recorder, record: SessionRecord) -> None:
    """Hand one record to the recorder method for its kind."""
    match record:
        case SessionStarted():
            await recorder.session_started(record)
        case TurnTaken():
            await recorder.turn(record)
        case CallerVerified():
            await recorder.identity(record)
        case SecurityEvent():
            await recorder.security_event(record)
        case HandedOff():
            await recorder.handoff(record)
        case SessionEnded():
            await recorder.session_ended(record)
        case VoiceTurnTimed():
            await recorder.voice_turn(record)
        case ActionCalled():
            await recorder.action_call(record)


class MemoryRecorder:
    """Keeps every record in a list: for tests, gates and for `voxgate chat` without a database."""

    def __init__(self) -> None:
        self.records: list[SessionRecord] = []

    async def session_started(self, record: SessionStarted) -> None:
        """Keep it."""
        self.records.append(record)

    async def turn(self, record: TurnTaken) -> None:
        """Keep it."""
        self.records.append(record)

    async def identity(self, record: CallerVerified) -> None:
        """Keep it."""
        self.records.append(record)

    async def security_event(self, record: SecurityEvent) -> None:
        """Keep it."""
        self.records.append(record)

    async def handoff(self, record: HandedOff) -> None:
        """Keep it."""
        self.records.append(record)

    async def session_ended(self, record: SessionEnded) -> None:
        """Keep it."""
        self.records.append(record)

    async def voice_turn(self, record: VoiceTurnTimed) -> None:
        """Keep it."""
        self.records.append(record)

    async def action_call(self, record: ActionCalled) -> None:
        """Keep it."""
        self.records.append(record)

    # ---- views by kind, as tuples of plain values ---------------------------------------------

    @property
    def turns(self) -> list[TurnTaken]:
        """Every turn kept."""
        return [r for r in self.records if isinstance(r, TurnTaken)]

    @property
    def security(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(session id, kind, detail) of every security event."""
        return [(r.facts.session_id, r.kind, dict(r.detail)) for r in self.records if isinstance(r, SecurityEvent)]

    @property
    def handoffs(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(session id, queue, reason, packet) of every escalation."""
        return [
            (r.facts.session_id, r.queue, r.reason, dict(r.packet)) for r in self.records if isinstance(r, HandedOff)
        ]

    @property
    def ended(self) -> list[tuple[str, str | None]]:
        """(session id, outcome) of every conversation that ended."""
        return [(r.facts.session_id, r.outcome) for r in self.records if isinstance(r, SessionEnded)]

    @property
    def voice_turns(self) -> list[VoiceTurnTimed]:
        """Every voice turn's timings."""
        return [r for r in self.records if isinstance(r, VoiceTurnTimed)]

    @property
    def action_calls(self) -> list[tuple[str, str, str]]:
        """(session id, action, status) of every connector call."""
        return [(r.facts.session_id, r.action, r.status) for r in self.records if isinstance(r, ActionCalled)]
