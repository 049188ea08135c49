"""Account-level protection against guessing a caller's PIN (or date of birth) across sessions.

A session limits attempts within itself; a caller who simply starts a new session gets new
attempts. So failed verifications are also counted per *subject* — a keyed, pseudonymous hash of
the account or phone number the caller gave, never the number itself — across sessions, channels,
agents and workers of one environment. After the agent's `authentication.lockout.max_failures`
within `window_minutes` the subject is locked for `lock_minutes`: verification is refused
without asking the back end, even with the right secret.

The counting sits behind `VerificationGuard`, so where it is kept can change (the database
today, shared live state across workers later) without touching the conversation engine. The
decision itself is `decide`, a pure function of the failure times, the last lock and the clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from voxgate.bundle.models import Lockout
from voxgate.clock import Clock, utcnow


@dataclass(frozen=True)
class LockoutPolicy:
    """N failures within `window` lock the subject for `lock_for`."""

    max_failures: int = 5
    window: dt.timedelta = dt.timedelta(minutes=15)
    lock_for: dt.timedelta = dt.timedelta(minutes=15)

    @classmethod
    def of(cls, spec: Lockout) -> LockoutPolicy:
        """From an agent's `authentication.lockout`."""
        return cls(
            max_failures=spec.max_failures,
            window=dt.timedelta(minutes=spec.window_minutes),
            lock_for=dt.timedelta(minutes=spec.lock_minutes),
        )


@dataclass(frozen=True)
class LockSpan:
    """A lock on a subject: from `locked_at` until `locked_until`."""

    locked_at: dt.datetime
    locked_until: dt.datetime


@dataclass(frozen=True)
class Decision:
    """What one more failure means: how many count now, and the lock it places (if any)."""

    counted: int
    lock: LockSpan | None = None


@dataclass(frozen=True)
class Verdict:
    """A subject's standing: its pseudonymous reference, failures counted, and any lock in force."""

    subject: str
    failures: int = 0
    locked_until: dt.datetime | None = None
    newly_locked: bool = False  # this very failure placed the lock

    @property
    def locked(self) -> bool:
        """Whether a lock is in force on the subject."""
        return self.locked_until is not None


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def active_lock(locks: Sequence[LockSpan], now: dt.datetime) -> LockSpan | None:
    """The lock in force at `now` (the one lasting longest), if any."""
    now = as_utc(now)
    live = [lock for lock in locks if as_utc(lock.locked_at) <= now < as_utc(lock.locked_until)]
    return max(live, key=lambda lock: as_utc(lock.locked_until)) if live else None


def decide(
    failures: Sequence[dt.datetime], last_lock: LockSpan | None, now: dt.datetime, policy: LockoutPolicy
) -> Decision:
    """Given every failure of a subject (this one included) and its latest lock: lock it now?

    Failures count within the window and only after the latest lock began, so an expired lock
    gives the subject a fresh count rather than locking again at the next slip. While a lock is
    in force nothing new is placed (the caller is refused before any failure can happen)."""
    now = as_utc(now)
    since = now - policy.window

    def counts(at: dt.datetime) -> bool:
        return since <= at <= now

    if last_lock is not None:
        locked_at = as_utc(last_lock.locked_at)
        if locked_at <= now < as_utc(last_lock.locked_until):
            return Decision(counted=0)
        if locked_at >= since:  # the failure that placed it (stamped at locked_at) counts no more

            def counts(at: dt.datetime) -> bool:
                return locked_at < at <= now

    counted = sum(1 for at in failures if counts(as_utc(at)))
    if counted >= policy.max_failures:
        return Decision(counted=counted, lock=LockSpan(now, now + policy.lock_for))
    return Decision(counted=counted)


class VerificationGuard(Protocol):
    """Counts failed verifications per subject and says when a subject is locked.

    `identifier` is what the caller gave (an account or phone number); `kind` says which. It
    never leaves the guard: what comes back, and what is stored, is the keyed `subject`."""

    async def check(self, *, environment: str, kind: str, identifier: str) -> Verdict:
        """The subject's standing now: failures counted and any lock in force."""
        ...

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
        """Count a failed verification; the verdict says whether it locked the subject."""
        ...


def keyed_subject(key: bytes, kind: str, identifier: str) -> str:
    """A keyed hash of an identifier for guards without the installation's privacy salt."""
    return hmac.new(key, f"{kind}={identifier}".encode(), hashlib.sha256).hexdigest()


@dataclass
class MemoryVerificationGuard:
    """In-process guard: one worker, no database (local chat, tests). Forgets on restart."""

    clock: Clock = utcnow
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _failures: dict[tuple[str, str], list[dt.datetime]] = field(default_factory=dict)
    _locks: dict[tuple[str, str], LockSpan] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def check(self, *, environment: str, kind: str, identifier: str) -> Verdict:
        """The subject's standing now: failures counted and any lock in force."""
        subject = keyed_subject(self.key, kind, identifier)
        lock = self._locks.get((environment, subject))
        current = active_lock([lock] if lock else [], self.clock())
        return Verdict(
            subject, len(self._failures.get((environment, subject), [])), current.locked_until if current else None
        )

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
        """Count a failed verification; the verdict says whether it locked the subject."""
        subject = keyed_subject(self.key, kind, identifier)
        key = (environment, subject)
        async with self._lock:
            now = as_utc(self.clock())
            last = self._locks.get(key)
            current = active_lock([last] if last else [], now)
            if current is not None:
                return Verdict(subject, 0, current.locked_until)
            times = [t for t in self._failures.get(key, []) if t >= now - policy.window] + [now]
            self._failures[key] = times
            decision = decide(times, last, now, policy)
            if decision.lock is not None:
                self._locks[key] = decision.lock
                return Verdict(subject, decision.counted, decision.lock.locked_until, newly_locked=True)
            return Verdict(subject, decision.counted)
