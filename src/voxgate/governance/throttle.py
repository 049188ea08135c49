"""Sign-in throttling: exponential back-off, then a temporary lock, per username and per client address.

Every failed sign-in counts against the username tried (whoever tries it, from wherever: guessing
one account's password from many addresses) and against the client address (one address trying
many usernames). The first `free_failures` failures of a key cost nothing; each one after that
makes the key wait `base_delay_s`, doubling (1, 2, 4, 8 s …), and at `lock_after` failures the key
is locked for `lock_s`. While a key waits, every attempt on it is refused before the password is
looked at, the right password included, so a guesser learns nothing from the answer. A key's
failures are forgotten `lock_s` after its last one.

A successful sign-in forgets the username's failures and the failures that address made on that
username, not the address's failures on other usernames (signing in to one's own account does
not reset a password-spraying budget).

`LoginAttempts` is the port the sign-in route uses: one atomic step per attempt (`attempt`: refused
without being counted, or counted as a failure before the password is looked at, so guesses sent all
at once are counted like guesses in a row) and `forgive` on success. `InMemoryLoginThrottle` keeps
the counts in this process (a worker's own; it also has the synchronous `LoginThrottle` form).
`SharedLoginThrottle` counts in a store every worker of a cluster shares (`LoginCounts`: Redis, in
`voxgate.cluster.counters`), with the same rules. Time comes from an injected clock.

A shared store that cannot be reached raises `UnavailableError` from `attempt`, and the sign-in is
refused (503) without looking at the password: throttling fails closed, so a guesser never gets
unlimited tries while the count is away. A `forgive` that cannot be reached leaves the failures to
lapse on their own.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, cast

Scope = Literal["username", "address"]


@dataclass(frozen=True)
class Refusal:
    """Why an attempt may not be tried now: which key waits, for how long, and whether it is locked."""

    scope: Scope
    retry_after_s: int
    locked: bool


@dataclass(frozen=True)
class Failure:
    """What a failed attempt led to: a lock that starts now (to audit), if any."""

    locked: tuple[Scope, ...] = ()
    lock_s: int = 0


class LoginThrottle(Protocol):
    """Who may try to sign in now; failures and successes are reported back."""

    def check(self, username: str, address: str) -> Refusal | None:
        """None if the attempt may be tried, else why not (the longest wait of the two keys)."""

    def failed(self, username: str, address: str) -> Failure:
        """Count a failed attempt (an attempt may be counted before it is checked, and forgiven
        by `succeeded` if it was right)."""

    def succeeded(self, username: str, address: str) -> None:
        """Forget the username's failures and those of this address on it."""


class LoginAttempts(Protocol):
    """Who may try to sign in now, decided and counted in one step; successes are reported back."""

    async def attempt(self, username: str, address: str) -> Refusal | Failure:
        """A Refusal (the attempt may not be tried now; nothing is counted), or the attempt counted
        as a failure (and the locks it starts): a right password is forgiven by `forgive`."""
        ...

    async def forgive(self, username: str, address: str) -> None:
        """The attempt was right: forget the username's failures and those of this address on it."""
        ...


@dataclass
class _Key:
    failures: int = 0
    last_failure: dt.datetime | None = None
    blocked_until: dt.datetime | None = None
    locked: bool = False


class InMemoryLoginThrottle:
    """`LoginThrottle` and `LoginAttempts` in this process's memory, at most `max_keys` keys of each kind
    (the least recently failed are dropped first)."""

    def __init__(
        self,
        *,
        free_failures: int = 5,
        base_delay_s: float = 1.0,
        lock_after: int = 10,
        lock_s: float = 900.0,
        clock: Callable[[], dt.datetime],
        max_keys: int = 10_000,
    ) -> None:
        if lock_after <= free_failures:
            raise ValueError("lock_after must be more than free_failures")
        self.free_failures = free_failures
        self.base_delay_s = base_delay_s
        self.lock_after = lock_after
        self.lock_s = lock_s
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.RLock()
        self._keys: dict[Scope, OrderedDict[str, _Key]] = {"username": OrderedDict(), "address": OrderedDict()}
        self._pairs: OrderedDict[tuple[str, str], int] = OrderedDict()  # (username, address) → failures

    def check(self, username: str, address: str) -> Refusal | None:
        """None if the attempt may be tried, else why not (the longest wait of the two keys)."""
        now = self._clock()
        worst: Refusal | None = None
        with self._lock:
            for scope, name in self._scopes(username, address):
                key = self._live(scope, name, now)
                if key is None or key.blocked_until is None or key.blocked_until <= now:
                    continue
                wait = max(1, math.ceil((key.blocked_until - now).total_seconds()))
                if worst is None or wait > worst.retry_after_s:
                    worst = Refusal(scope=scope, retry_after_s=wait, locked=key.locked)
        return worst

    def failed(self, username: str, address: str) -> Failure:
        """Count a failed attempt against the username and the address, delaying or locking each; returns new locks."""
        now = self._clock()
        locked: list[Scope] = []
        with self._lock:
            for scope, name in self._scopes(username, address):
                key = self._live(scope, name, now) or _Key()
                key.failures += 1
                key.last_failure = now
                if key.failures >= self.lock_after:
                    if not key.locked:
                        locked.append(scope)
                    key.locked = True
                    key.blocked_until = now + dt.timedelta(seconds=self.lock_s)
                elif key.failures > self.free_failures:
                    delay = self.base_delay_s * 2 ** (key.failures - self.free_failures - 1)
                    key.blocked_until = now + dt.timedelta(seconds=min(delay, self.lock_s))
                self._store(self._keys[scope], name, key)
            pair = (username, address)
            self._store(self._pairs, pair, self._pairs.get(pair, 0) + 1)
        return Failure(locked=tuple(locked), lock_s=int(self.lock_s) if locked else 0)

    def succeeded(self, username: str, address: str) -> None:
        """Forget the username's failures and those of this address on it."""
        with self._lock:
            self._keys["username"].pop(username, None)
            forgiven = self._pairs.pop((username, address), 0)
            key = self._keys["address"].get(address)
            if key is not None and forgiven:
                key.failures = max(0, key.failures - forgiven)
                if key.failures < self.lock_after:
                    key.locked = False
                if key.failures <= self.free_failures:
                    key.blocked_until = None

    async def attempt(self, username: str, address: str) -> Refusal | Failure:
        """`check`, and when it lets the attempt be tried, `failed`, as one step."""
        with self._lock:
            return self.check(username, address) or self.failed(username, address)

    async def forgive(self, username: str, address: str) -> None:
        """`succeeded`."""
        self.succeeded(username, address)

    @staticmethod
    def _scopes(username: str, address: str) -> tuple[tuple[Scope, str], ...]:
        return (("username", username), ("address", address))

    def _live(self, scope: Scope, name: str, now: dt.datetime) -> _Key | None:
        """The key's state, or None (and forgotten) when its last failure is older than the lock."""
        keys = self._keys[scope]
        key = keys.get(name)
        if key is None:
            return None
        idle = key.last_failure is not None and now - key.last_failure >= dt.timedelta(seconds=self.lock_s)
        if idle and (key.blocked_until is None or key.blocked_until <= now):
            del keys[name]
            return None
        return key

    def _store(self, table: OrderedDict, name: object, value: object) -> None:  # type: ignore[type-arg]
        table[name] = value
        table.move_to_end(name)
        while len(table) > self.max_keys:
            table.popitem(last=False)


# ---- counted where every worker sees it ------------------------------------------------------------


class CountedAttempt(Protocol):
    """What a shared store made of one attempt (the store's own type, read through these names)."""

    @property
    def refused(self) -> str | None:
        """The scope that refuses the attempt ("username" or "address"; nothing was counted), else None."""
        ...

    @property
    def retry_after_s(self) -> int:
        """When refused: the whole seconds to wait."""
        ...

    @property
    def locked(self) -> bool:
        """When refused: whether the refusing key is locked (not only backing off)."""
        ...

    @property
    def newly_locked(self) -> tuple[str, ...]:
        """When counted: the scopes this failure locked."""
        ...

    @property
    def lock_s(self) -> int:
        """When counted and a lock started: how long it lasts."""
        ...


class LoginCounts(Protocol):
    """Failed sign-ins counted in a store every worker shares, by `InMemoryLoginThrottle`'s rules,
    one atomic step per attempt (`voxgate.cluster.counters.RedisLoginCounts`)."""

    async def attempt(self, username: str, address: str, now: dt.datetime) -> CountedAttempt:
        """Refuse the attempt at `now`, or count it as a failure of both keys."""
        ...

    async def forgive(self, username: str, address: str) -> None:
        """Forget the username's failures and those of this address on it."""
        ...


class SharedLoginThrottle:
    """`LoginAttempts` on counts that every worker of a cluster shares: a guesser spreading attempts
    over workers is throttled as if they all reached one. A store that cannot be reached raises its
    `UnavailableError` (`RedisUnavailable`): the caller refuses the attempt."""

    def __init__(self, counts: LoginCounts, *, clock: Callable[[], dt.datetime]) -> None:
        self.counts = counts
        self._clock = clock

    async def attempt(self, username: str, address: str) -> Refusal | Failure:
        """A Refusal (nothing counted), or the attempt counted as a failure (and the locks it starts)."""
        step = await self.counts.attempt(username, address, self._clock())
        if step.refused is not None:
            return Refusal(scope=cast(Scope, step.refused), retry_after_s=step.retry_after_s, locked=step.locked)
        locked = tuple(cast(Scope, scope) for scope in step.newly_locked)
        return Failure(locked=locked, lock_s=step.lock_s if locked else 0)

    async def forgive(self, username: str, address: str) -> None:
        """Forget the username's failures and those of this address on it."""
        await self.counts.forgive(username, address)
