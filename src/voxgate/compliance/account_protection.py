"""The store-backed verification guard: failed caller verifications and locks in the database.

Subjects are the keyed hash a data-subject request computes for an account or a phone number named
alone (`privacy.subject_hash` with the installation's privacy salt, not a new key), so the stored
rows hold nothing a reader could reverse and an operator who is given the number can find them.
Every worker of an environment shares the database, so failures count across them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session as OrmSession

from voxgate.bundle.models import LOCKOUT_MAX_WINDOW_MINUTES
from voxgate.clock import Clock, utcnow
from voxgate.compliance.privacy import PrivacyError, Subject, load_salt, subject_hash
from voxgate.runtime.lockout import LockoutPolicy, LockSpan, Verdict, active_lock, as_utc, decide, keyed_subject
from voxgate.store.db import Database
from voxgate.store.models import VerificationFailureRow, VerificationLockRow

log = logging.getLogger("voxgate.compliance.account_protection")
#: how often a guard drops what can no longer count for any subject (each subject's own rows go
#: as it is counted; this catches the numbers nobody tries again)
SWEEP_EVERY_S = 3600.0
_KEEP = dt.timedelta(minutes=LOCKOUT_MAX_WINDOW_MINUTES)


def subject_of(salt: bytes, kind: str, identifier: str) -> str:
    """The pseudonymous subject for an account or phone number (64 hex characters)."""
    try:
        named = Subject(phone=identifier) if kind == "phone" else Subject(account_number=identifier)
    except (ValidationError, PrivacyError):
        return keyed_subject(salt, kind, identifier)  # not a shape a privacy request could name
    return subject_hash(named, salt)


class StoreVerificationGuard:
    """VerificationGuard on the `verification_failures` and `verification_locks` tables."""

    def __init__(
        self, db: Database, *, salt: bytes | None = None, salt_path: Path | None = None, clock: Clock = utcnow
    ):
        if salt is None and salt_path is None:
            raise ValueError("give the privacy salt or the path it is kept at")
        self.db = db
        self.clock = clock
        self._salt = salt
        self._salt_path = salt_path or Path()
        self._salt_lock = threading.Lock()
        self._swept_at = float("-inf")

    def _subject(self, kind: str, identifier: str) -> str:
        salt = self._salt
        if salt is None:
            with self._salt_lock:  # read (or created) once, on first use: the file may not exist yet
                salt = self._salt = self._salt or load_salt(self._salt_path)
        return subject_of(salt, kind, identifier)

    def _locks(self, orm: OrmSession, environment: str, subject: str) -> list[LockSpan]:
        rows = orm.execute(
            select(VerificationLockRow.locked_at, VerificationLockRow.locked_until)
            .where(VerificationLockRow.environment == environment, VerificationLockRow.subject == subject)
            .order_by(VerificationLockRow.locked_at.desc())
            .limit(5)
        )
        return [LockSpan(as_utc(at), as_utc(until)) for at, until in rows]  # SQLite forgets the zone

    def sweep(self, now: dt.datetime) -> None:
        """Drop every failure older than the longest window an agent may set, and every lock over
        for longer than that: neither can count again."""
        with self.db.orm() as orm, orm.begin():
            orm.execute(delete(VerificationFailureRow).where(VerificationFailureRow.created_at < now - _KEEP))
            orm.execute(delete(VerificationLockRow).where(VerificationLockRow.locked_until < now - _KEEP))

    def _check(self, environment: str, kind: str, identifier: str) -> Verdict:
        subject = self._subject(kind, identifier)
        with self.db.orm() as orm:
            lock = active_lock(self._locks(orm, environment, subject), self.clock())
        return Verdict(subject, locked_until=lock.locked_until if lock else None)

    def _failed(
        self,
        environment: str,
        agent: str,
        channel: str,
        session_id: str | None,
        kind: str,
        identifier: str,
        policy: LockoutPolicy,
    ) -> Verdict:
        subject = self._subject(kind, identifier)
        now = as_utc(self.clock())
        if time.monotonic() - self._swept_at >= SWEEP_EVERY_S:
            self._swept_at = time.monotonic()
            self.sweep(now)
        # the failure is committed before it is counted: of two workers failing the same subject at
        # once, the later to commit sees both (at worst both lock, which is harmless)
        with self.db.orm() as orm, orm.begin():
            lock = active_lock(self._locks(orm, environment, subject), now)
            if lock is not None:  # locked meanwhile by another session: refused, not counted
                return Verdict(subject, locked_until=lock.locked_until)
            orm.add(
                VerificationFailureRow(
                    subject=subject,
                    environment=environment,
                    agent=agent,
                    channel=channel[:20],
                    session_id=session_id,
                    created_at=now,
                )
            )
            # what can no longer count is dropped as it goes (for this subject)
            orm.execute(
                delete(VerificationFailureRow).where(
                    VerificationFailureRow.environment == environment,
                    VerificationFailureRow.subject == subject,
                    VerificationFailureRow.created_at < now - policy.window,
                )
            )
            orm.execute(
                delete(VerificationLockRow).where(
                    VerificationLockRow.environment == environment,
                    VerificationLockRow.subject == subject,
                    VerificationLockRow.locked_until < now - policy.window,
                )
            )
        with self.db.orm() as orm, orm.begin():
            locks = self._locks(orm, environment, subject)
            lock = active_lock(locks, now)
            if lock is not None:
                return Verdict(subject, locked_until=lock.locked_until)
            times = list(
                orm.scalars(
                    select(VerificationFailureRow.created_at).where(
                        VerificationFailureRow.environment == environment,
                        VerificationFailureRow.subject == subject,
                        VerificationFailureRow.created_at >= now - policy.window,
                    )
                )
            )
            last = max(locks, key=lambda span: span.locked_at, default=None)
            decision = decide(times, last, now, policy)
            if decision.lock is None:
                return Verdict(subject, decision.counted)
            orm.add(
                VerificationLockRow(
                    subject=subject,
                    environment=environment,
                    agent=agent,
                    failures=decision.counted,
                    locked_at=decision.lock.locked_at,
                    locked_until=decision.lock.locked_until,
                )
            )
        log.warning(
            "verification locked for subject %s… in %s after %d failures (until %s)",
            subject[:12],
            environment,
            decision.counted,
            decision.lock.locked_until.isoformat(timespec="seconds"),
        )
        return Verdict(subject, decision.counted, decision.lock.locked_until, newly_locked=True)

    async def check(self, *, environment: str, kind: str, identifier: str) -> Verdict:
        return await asyncio.to_thread(self._check, environment, kind, identifier)

    async def failed(
        self,
        *,
        environment: str,
        agent: str,
        channel: str,
        session_id: str | None,
        kind: str,
        identifier: str,
        policy: LockoutPolicy,
    ) -> Verdict:
        return await asyncio.to_thread(self._failed, environment, agent, channel, session_id, kind, identifier, policy)
