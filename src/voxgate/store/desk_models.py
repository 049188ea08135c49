"""Tables of the live-agent desk: desk agents' skills, and the callback requests and messages
the handoff fallback takes when no person could take a caller."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from voxgate.clock import utcnow
from voxgate.store.models import Base


class DeskAgentRow(Base):
    """A desk agent's routing profile: the skills an operator gave them (availability is live, per worker)."""

    __tablename__ = "desk_agents"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(32))


class CallbackRequestRow(Base):
    """A caller the desk could not take: the number to call back on, or the message they left.

    `callback_number` is the caller's personal data in a column of its own (E.164): `voxgate privacy
    find/erase --phone` resolve the subject's sessions through it, and the row goes with its session.
    `message` is redacted before it is stored.
    """

    __tablename__ = "callback_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    handoff_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("handoffs.id", ondelete="SET NULL"), index=True)
    agent: Mapped[str] = mapped_column(String(100))
    environment: Mapped[str] = mapped_column(String(40), index=True)
    queue: Mapped[str] = mapped_column(String(100), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))  # callback | message
    reason: Mapped[str] = mapped_column(String(40))  # why no person took the caller (a handoff failure reason)
    callback_number: Mapped[str | None] = mapped_column(String(40))
    message: Mapped[str | None] = mapped_column(Text)
    redactions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="open", index=True)  # open | done
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    completed_at: Mapped[dt.datetime | None]
    completed_by: Mapped[str | None] = mapped_column(String(32))
