"""SQLAlchemy tables: conversations (sessions, turns, handoffs, security events, voice timings) and governance
(users, tokens, role bindings, signing keys, bundles, releases, publish requests, DLP exceptions, audit chain)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from voxgate.clock import utcnow


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, dt.datetime: DateTime(timezone=True)}


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent: Mapped[str] = mapped_column(String(100), index=True)
    agent_version: Mapped[str] = mapped_column(String(50))
    bundle_digest: Mapped[str | None] = mapped_column(String(80))
    environment: Mapped[str] = mapped_column(String(40), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    ended_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(20), index=True)
    end_reason: Mapped[str | None] = mapped_column(String(40))
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    customer_id: Mapped[str | None] = mapped_column(String(100), index=True)
    escalation_reason: Mapped[str | None] = mapped_column(String(40))
    turn_count: Mapped[int] = mapped_column(Integer, default=0)
    # liveness: the worker that holds the session (workers.id) and its last turn or audio
    worker_id: Mapped[str | None] = mapped_column(String(64), index=True)
    last_activity_at: Mapped[dt.datetime | None]

    turns: Mapped[list[TurnRow]] = relationship(back_populates="session", order_by="TurnRow.seq")


class TurnRow(Base):
    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    user_text: Mapped[str | None] = mapped_column(Text)
    agent_text: Mapped[str] = mapped_column(Text, default="")
    intent: Mapped[str | None] = mapped_column(String(100), index=True)
    confidence: Mapped[float | None] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(60))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    session: Mapped[SessionRow] = relationship(back_populates="turns")


class HandoffRow(Base):
    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    queue: Mapped[str] = mapped_column(String(100), index=True)
    reason: Mapped[str] = mapped_column(String(40))
    # waiting -> offered -> accepted -> wrapped_up, or fallback_callback | fallback_message | failed
    status: Mapped[str] = mapped_column(String(20), default="waiting", index=True)
    packet: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # the live-agent desk (handoff/desk.py): who took the caller, how it ended, and why it failed
    accepted_by: Mapped[str | None] = mapped_column(String(32))  # a user id
    accepted_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    disposition: Mapped[str | None] = mapped_column(String(40))
    disposition_note: Mapped[str | None] = mapped_column(Text)  # redacted before storage
    failure_reason: Mapped[str | None] = mapped_column(String(40), index=True)
    events: Mapped[list[Any] | None] = mapped_column(JSON)  # [{status, at, ...}] every transition


class SecurityEventRow(Base):
    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(60), index=True)
    agent: Mapped[str | None] = mapped_column(String(100))
    environment: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VerificationFailureRow(Base):
    """One failed caller verification, counted against a pseudonymous subject (a keyed hash of the
    account or phone number, never the value itself) across sessions, channels and workers."""

    __tablename__ = "verification_failures"
    __table_args__ = (Index("ix_verification_failures_subject_created", "environment", "subject", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(40))
    agent: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(20))
    session_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VerificationLockRow(Base):
    """A subject locked out of verification until `locked_until` (a cooling-off period)."""

    __tablename__ = "verification_locks"
    __table_args__ = (Index("ix_verification_locks_subject_until", "environment", "subject", "locked_until"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(40))
    agent: Mapped[str] = mapped_column(String(100))
    failures: Mapped[int] = mapped_column(Integer)
    locked_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[dt.datetime]


class WorkerRow(Base):
    """A worker process: it heartbeats while it serves; sessions it held are orphans once it is gone."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    environment: Mapped[str] = mapped_column(String(40), index=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[dt.datetime | None]


class VoiceTurnRow(Base):
    """Stage timings of one voice turn, measured by the call pipeline (milliseconds)."""

    __tablename__ = "voice_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    speech_end_audio_ms: Mapped[float | None] = mapped_column(Float)
    endpoint_ms: Mapped[float | None] = mapped_column(Float)
    asr_final_ms: Mapped[float | None] = mapped_column(Float)
    asr_compute_ms: Mapped[float | None] = mapped_column(Float)
    intent_ms: Mapped[float | None] = mapped_column(Float)
    first_tts_ms: Mapped[float | None] = mapped_column(Float)
    voice_to_voice_ms: Mapped[float | None] = mapped_column(Float)
    speculative_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    dtmf: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# ---- governance -----------------------------------------------------------------------------------


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiTokenRow(Base):
    """An API token: only its sha256 is stored; `prefix` lets a user tell tokens apart."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    expires_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class ConsoleSessionRow(Base):
    """A console sign-in: the cookie carries a random token, the table its sha256."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class RoleBindingRow(Base):
    """A role held by a user in one environment ("*": every environment)."""

    __tablename__ = "role_bindings"
    __table_args__ = (UniqueConstraint("user_id", "environment", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    environment: Mapped[str] = mapped_column(String(40), index=True)
    role: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(32))


class SigningKeyRow(Base):
    """An Ed25519 public key that may sign bundles (a builder's) or audit checkpoints (the server's)."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    purpose: Mapped[str] = mapped_column(String(20))  # bundle | audit
    public_key: Mapped[str] = mapped_column(String(100))  # base64 raw 32 bytes
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]


class BundleRow(Base):
    """An immutable, content-addressed agent bundle: the archive, its manifest and signature."""

    __tablename__ = "bundles"

    digest: Mapped[str] = mapped_column(String(80), primary_key=True)  # sha256:<hex>
    agent: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[str] = mapped_column(String(50))
    author_id: Mapped[str] = mapped_column(String(32), index=True)
    built_for: Mapped[str] = mapped_column(String(40))  # the environment whose DLP policy it was checked against
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(200))  # base64 Ed25519 over the digest
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    archive: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReleaseRow(Base):
    """One change of what an environment serves: deploy, promote, publish or rollback.

    `digest` is null when the change withdrew the agent (a rollback of its first release, or a
    rehearsal of one): nothing is active afterwards and new callers hear it is unavailable."""

    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(40), index=True)
    agent: Mapped[str] = mapped_column(String(100), index=True)
    digest: Mapped[str | None] = mapped_column(String(80))
    previous_digest: Mapped[str | None] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    request_id: Mapped[str | None] = mapped_column(String(32))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class ActiveBundleRow(Base):
    """Which bundle an environment serves for an agent: one row, swapped atomically."""

    __tablename__ = "active_bundles"

    environment: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent: Mapped[str] = mapped_column(String(100), primary_key=True)
    digest: Mapped[str] = mapped_column(ForeignKey("bundles.digest"))
    release_id: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PublishRequestRow(Base):
    __tablename__ = "publish_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agent: Mapped[str] = mapped_column(String(100), index=True)
    digest: Mapped[str] = mapped_column(ForeignKey("bundles.digest"))
    source_environment: Mapped[str] = mapped_column(String(40))
    target_environment: Mapped[str] = mapped_column(String(40))
    requested_by: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(
        String(20), default="pending", index=True
    )  # pending|approved|rejected|published
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decision_comment: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[dt.datetime | None]
    published_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DlpExceptionRow(Base):
    """A time-limited exception to an environment's DLP policy for one connector."""

    __tablename__ = "dlp_exceptions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    environment: Mapped[str] = mapped_column(String(40), index=True)
    agent: Mapped[str | None] = mapped_column(String(100))
    connector: Mapped[str] = mapped_column(String(100))
    rule: Mapped[str] = mapped_column(String(40))  # which check it lifts: mixing | blocked | endpoint
    host: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    approver_id: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class AuditEventRow(Base):
    """One link of the append-only audit chain: hash = sha256(prev_hash || canonical(event)).

    `at` is kept as the exact ISO text that was hashed; `data` as the exact canonical JSON.
    No code path updates or deletes these rows (on PostgreSQL a trigger refuses it).
    """

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40), index=True)
    actor: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(60), index=True)
    resource: Mapped[str] = mapped_column(String(200))
    environment: Mapped[str] = mapped_column(String(40), default="")
    outcome: Mapped[str] = mapped_column(String(20))
    data: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointRow(Base):
    """A signed statement "the chain's hash at `seq` was `hash`", made every N events."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(200))


class GateRunRow(Base):
    """Evidence: one run of one pre-production gate against one exact bundle digest."""

    __tablename__ = "gate_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(String(80), index=True)
    agent: Mapped[str] = mapped_column(String(100), index=True)
    target_environment: Mapped[str] = mapped_column(String(40), index=True)  # the environment it qualifies for
    ran_in: Mapped[str] = mapped_column(String(40))  # the environment whose runtime and policies it ran against
    gate: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(20))  # passed | failed | error
    actor_id: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    results: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# ---- privacy: legal holds and data-subject requests -------------------------------------------------


class LegalHoldRow(Base):
    """A legal hold: the subject's records are kept from retention purge and erasure until released.

    While active, `identifiers` holds the subject's identifiers (needed to find what is held);
    on release they are cleared and only `subject_hash` (a keyed hash) remains.
    """

    __tablename__ = "legal_holds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject_hash: Mapped[str] = mapped_column(String(64), index=True)
    identifiers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    released_at: Mapped[dt.datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(100))
    release_reason: Mapped[str | None] = mapped_column(Text)


class PrivacyRequestRow(Base):
    """The receipt of a data-subject erasure: a keyed hash of the subject and counts, never the identifiers."""

    __tablename__ = "privacy_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # erase
    subject_hash: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20))  # completed | refused
    requested_by: Mapped[str] = mapped_column(String(100))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
