"""What a session reports: one TurnResult per caller turn, holding replies and typed events."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from voxgate.bundle.models import EventType


@dataclass
class Event:
    """Something that happened in a turn, with its data and time."""

    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """The event as a flat dict: type, time and data."""
        return {"type": self.type, "at": self.at, **self.data}


@dataclass
class TurnResult:
    """What one turn produced: the agent's replies, the intent and slots, actions taken and events."""

    user: str | None
    replies: list[str] = field(default_factory=list)
    intent: str | None = None
    confidence: float | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    citations: list[str] = field(default_factory=list)
    state: str = "idle"
    ended: bool = False
    outcome: str | None = None
    packet: dict[str, Any] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    # told each reply as it is said, before the turn is over (a voice channel starts speaking
    # the first sentence while the session still waits on a connector for the next)
    listener: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        """The replies joined into what the agent says."""
        return " ".join(r.strip() for r in self.replies if r.strip())

    def say(self, text: str) -> None:
        """Add a reply (blank text is dropped) and pass it to the listener."""
        if text.strip():
            self.replies.append(text.strip())
            if self.listener is not None:
                self.listener(text.strip())

    def emit(self, type: EventType, **data: Any) -> Event:
        """Add an event of `type` with `data` to the turn; returns it."""
        ev = Event(type, data)
        self.events.append(ev)
        return ev

    def as_dict(self) -> dict[str, Any]:
        """The turn as a JSON-ready dict."""
        d = {
            "user": self.user,
            "agent": self.text,
            "intent": self.intent,
            "confidence": None if self.confidence is None else round(self.confidence, 3),
            "slots": self.slots,
            "actions": self.actions,
            "citations": self.citations,
            "state": self.state,
            "ended": self.ended,
            "outcome": self.outcome,
            "events": [e.as_dict() for e in self.events],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
        if self.packet is not None:
            d["packet"] = self.packet
        return d


def plain(value: Any) -> Any:
    """JSON-friendly copy of slot values (dates, decimals) for events and packets."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return plain(asdict(value))
    return value
