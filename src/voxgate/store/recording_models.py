"""Encrypted call recordings and the wrapped per-caller keys that decrypt them (compliance/recording.py)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from voxgate.clock import utcnow
from voxgate.store.models import Base


class RecordingKeyRow(Base):
    """A caller's data key, wrapped (AES-GCM) by the environment's master key; never stored in clear."""

    __tablename__ = "recording_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    caller_ref: Mapped[str] = mapped_column(String(80), unique=True)  # keyed hash, see recording.caller_ref
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)  # nonce (12 bytes) + ciphertext + tag
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RecordingRow(Base):
    """One call's audio, encrypted with its caller's data key; goes with its session."""

    __tablename__ = "recordings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    environment: Mapped[str] = mapped_column(String(40), index=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    format: Mapped[str] = mapped_column(String(40))
    duration_ms: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
