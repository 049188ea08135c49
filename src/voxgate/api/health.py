"""Probes for a load balancer or an orchestrator: `GET /health/live` answers while the worker's event
loop does, `GET /health/ready` says whether it should be sent new traffic.

Readiness is every check of a small registry of named async checks (`ReadinessChecks`, on the
worker's state as `readiness_checks`): the database answers a trivial query, the speech models are
in when they are preloaded, the worker is not draining. A module that brings another dependency adds
its own (`state.readiness_checks.add("redis", check)`) without touching these. The checks run
concurrently, each bounded by a timeout, so a probe answers in about that long even when a
dependency hangs; its body names each check and what it found, never an error's text (the log has it).
Both probes are public, like `/health`: no route guard, nothing secret in the body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from voxgate.channels.admission import Admission
from voxgate.config import Settings
from voxgate.store.db import Database
from voxgate.voice.engines import VoiceEngines

__all__ = [
    "CHECK_TIMEOUT_S",
    "Check",
    "ReadinessCheck",
    "ReadinessChecks",
    "database_check",
    "default_readiness_checks",
    "draining_check",
    "router",
    "speech_models_check",
]

log = logging.getLogger("voxgate.api")
router = APIRouter(tags=["meta"])

#: how long one readiness check may take before it counts as failed ("timeout"); below the 3 s probe
#: timeout docs/operations.md recommends
CHECK_TIMEOUT_S = 2.0
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Check:
    """What one readiness check found: whether it passes, and what the probe's body says for it."""

    ok: bool
    shown: str | bool


#: a readiness check: an async callable with no arguments
ReadinessCheck = Callable[[], Awaitable[Check]]


class ReadinessChecks:
    """Named readiness checks; the worker is ready when every one passes."""

    def __init__(self, timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._checks: dict[str, ReadinessCheck] = {}
        self._failing: dict[str, str | bool] = {}  # as last seen: only a change is logged

    def add(self, name: str, check: ReadinessCheck, *, replace: bool = False) -> None:
        """Register `check` as `name` (ValueError when the name is taken, unless `replace`)."""
        if name in self._checks and not replace:
            raise ValueError(f"a readiness check named '{name}' is already registered")
        self._checks[name] = check

    def remove(self, name: str) -> None:
        """Forget the check `name` (nothing happens when there is none)."""
        self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        """The registered checks' names, in the order they were added."""
        return list(self._checks)

    async def run(self) -> tuple[bool, dict[str, str | bool]]:
        """Run every check at once: whether all passed, and what each found (by name)."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._one(name, self._checks[name]) for name in names))
        found = dict(zip(names, results, strict=True))
        failing = {name: check.shown for name, check in found.items() if not check.ok}
        if failing != self._failing:
            if failing:
                log.warning("not ready: %s", ", ".join(f"{name} {shown}" for name, shown in failing.items()))
            else:
                log.info("ready: %s", ", ".join(names))
            self._failing = failing
        return not failing, {name: check.shown for name, check in found.items()}

    async def _one(self, name: str, check: ReadinessCheck) -> Check:
        try:
            return await asyncio.wait_for(check(), self.timeout_s)
        except TimeoutError:
            return Check(False, "timeout")
        except Exception:  # a broken check fails readiness; the cause goes to the log, never to the probe
            if name not in self._failing:
                log.warning("readiness check %s raised", name, exc_info=True)
            return Check(False, "error")


class _DatabaseProbe:
    """`SELECT 1` in a thread; a probe still running is awaited again, not started once more, so a
    database that hangs ties up one thread however often the worker is probed."""

    def __init__(self, db: Database, timeout_s: float) -> None:
        self.db = db
        self.timeout_s = timeout_s
        self._running: asyncio.Future[None] | None = None

    def _select_one(self) -> None:
        with self.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def __call__(self) -> Check:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(self._select_one))
            self._running.add_done_callback(_retrieve)
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self.timeout_s)
        except TimeoutError:
            return Check(False, "timeout")
        except Exception as exc:
            log.debug("database readiness query failed: %s", type(exc).__name__)
            return Check(False, "unreachable")
        return Check(True, "ok")


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a probe's failure as seen (a probe whose caller timed out must not warn at exit)."""
    if not future.cancelled():
        future.exception()


def database_check(db: Database, timeout_s: float = CHECK_TIMEOUT_S) -> ReadinessCheck:
    """The database answers a trivial query within `timeout_s`: `ok`, else `timeout` or `unreachable`."""
    return _DatabaseProbe(db, timeout_s)


class _SpeechHolder(Protocol):
    settings: Settings
    engines: VoiceEngines | None
    warming: asyncio.Task[None] | None


def speech_models_check(worker: _SpeechHolder) -> ReadinessCheck:
    """The speech models: `ok` once loaded and their fixed prompts rendered. With `voice_preload`
    readiness waits for them (`loading` until then); without, they load on the first call
    (`on_demand`) and readiness does not wait."""

    async def check() -> Check:
        warming = worker.warming
        if worker.engines is not None and (warming is None or warming.done()):
            return Check(True, "ok")
        if worker.settings.voice_preload:
            return Check(False, "loading")
        return Check(True, "on_demand" if worker.engines is None else "loading")

    return check


def draining_check(admission: Admission) -> ReadinessCheck:
    """Not ready while the worker drains (shown as `draining: true`)."""

    async def check() -> Check:
        return Check(not admission.draining, admission.draining)

    return check


class _Worker(_SpeechHolder, Protocol):
    db: Database
    admission: Admission


def default_readiness_checks(worker: _Worker) -> ReadinessChecks:
    """The checks every worker has: `database`, `speech_models` and `draining`."""
    checks = ReadinessChecks()
    checks.add("database", database_check(worker.db))
    checks.add("speech_models", speech_models_check(worker))
    checks.add("draining", draining_check(worker.admission))
    return checks


def _checks_of(request: Request) -> ReadinessChecks:
    checks: ReadinessChecks = request.app.state.voxgate.readiness_checks
    return checks


@router.get("/health/live")
async def live() -> JSONResponse:
    """200 while the worker's event loop answers (a liveness probe: restart the worker when it fails)."""
    return JSONResponse({"status": "live"}, headers=NO_STORE)


@router.get("/health/ready", responses={503: {"description": "Not ready: the body names each failing check."}})
async def ready(request: Request) -> JSONResponse:
    """200 when this worker should be sent new traffic; else 503, naming what each check found."""
    ok, checks = await _checks_of(request).run()
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503, headers=NO_STORE
    )
