"""Where sessions report what happened; a Protocol so the store (or Redis later) can plug in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from voxgate.runtime.connectors import ActionResult
    from voxgate.runtime.events import TurnResult
    from voxgate.runtime.session import Session


class SessionRecorder(Protocol):
    async def session_started(self, session: Session) -> None: ...

    async def turn(self, session: Session, result: TurnResult) -> None: ...

    async def identity(self, session: Session) -> None: ...

    async def security_event(self, session: Session, kind: str, detail: dict[str, Any]) -> None: ...

    async def handoff(self, session: Session, queue: str, reason: str, packet: dict[str, Any]) -> None: ...

    async def session_ended(self, session: Session, reason: str) -> None: ...

    async def voice_turn(self, session: Session, timing: dict[str, Any]) -> None: ...

    async def action_call(self, session: Session, result: ActionResult) -> None: ...


class MemoryRecorder:
    """Keeps everything in lists: for tests and for `voxgate chat` without a database."""

    def __init__(self) -> None:
        self.turns: list[tuple[str, TurnResult]] = []
        self.security: list[tuple[str, str, dict[str, Any]]] = []
        self.handoffs: list[tuple[str, str, str, dict[str, Any]]] = []
        self.ended: list[tuple[str, str | None]] = []
        self.voice_turns: list[tuple[str, dict[str, Any]]] = []
        self.action_calls: list[tuple[str, str, str]] = []

    async def session_started(self, session: Session) -> None:
        return None

    async def turn(self, session: Session, result: TurnResult) -> None:
        self.turns.append((session.id, result))

    async def identity(self, session: Session) -> None:
        return None

    async def security_event(self, session: Session, kind: str, detail: dict[str, Any]) -> None:
        self.security.append((session.id, kind, detail))

    async def handoff(self, session: Session, queue: str, reason: str, packet: dict[str, Any]) -> None:
        self.handoffs.append((session.id, queue, reason, packet))

    async def session_ended(self, session: Session, reason: str) -> None:
        self.ended.append((session.id, session.outcome))

    async def voice_turn(self, session: Session, timing: dict[str, Any]) -> None:
        self.voice_turns.append((session.id, timing))

    async def action_call(self, session: Session, result: ActionResult) -> None:
        self.action_calls.append((session.id, result.action, result.status))
