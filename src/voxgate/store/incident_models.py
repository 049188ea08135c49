"""The incidents table: opened by alerts, moved through open → acknowledged → mitigated → resolved."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from voxgate.clock import utcnow
from voxgate.store.models import Base


class IncidentRow(Base):
    __tablename__ = "incidents"
    # at most one unresolved incident per environment, agent and rule: evaluators on several workers
    # that see one breach at once open one incident between them (migration 0011)
    __table_args__ = (
        Index(
            "ux_incidents_unresolved",
            "environment",
            "agent",
            "rule",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
            sqlite_where=text("status <> 'resolved'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    environment: Mapped[str] = mapped_column(String(40), index=True)
    agent: Mapped[str] = mapped_column(String(100), index=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)  # open | acknowledged | mitigated | resolved
    summary: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    fired_count: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None]
    timeline: Mapped[list[Any]] = mapped_column(JSON, default=list)  # {at, kind, actor, note}
    sessions: Mapped[list[Any]] = mapped_column(JSON, default=list)  # ids of sessions in the window that fired
