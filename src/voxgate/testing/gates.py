"""The six pre-production gates as runners: each takes a GateContext and returns a SuiteResult.

They live with the suites they drive; `voxgate.governance.gates` defines the context and runs
whichever runners its caller hands it (`RUNNERS` here).

conversations, escalation and red_team call the suites in `voxgate.testing`; data_access checks
connectors statically (DLP) and dynamically (every call made during a conversation run was
allowed and, where customer-scoped, made for the verified caller); load drives simulated voice
calls over real sockets against a worker serving the environment (started by the context's
`start_worker`); rollback rehearses
activating the previous version and back in the environment the gate runs in.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from voxgate.bundle.models import BundleSource
from voxgate.governance import bundle_store, dlp
from voxgate.governance.gates import GateContext, GateRunners, GateSetupError
from voxgate.governance.secrets import resolve_secret
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder
from voxgate.runtime.records import ActionCalled
from voxgate.testing.conversations import run_conversation_tests
from voxgate.testing.escalation import run_escalation_gate
from voxgate.testing.load_gate import run_load_gate
from voxgate.testing.redteam import run_red_team
from voxgate.testing.results import CaseResult, SuiteResult


def _customers(ctx: GateContext) -> list[Any]:
    """The customer fixtures red-team and escalation callers verify as."""
    return list(ctx.fixtures.get("customer", []))


async def conversations(ctx: GateContext) -> SuiteResult:
    """The bundle's own conversation tests (spoken too when the gate asks for voice)."""

    def factory(_bundle: BundleSource, _env: str) -> AgentRuntime:
        return ctx.runtime_factory()

    suite = await run_conversation_tests(
        ctx.bundle, runtime_factory=factory, fixtures=ctx.fixtures, env=ctx.ran_in.name
    )
    if ctx.spec.voice:
        spoken = await run_conversation_tests(
            ctx.bundle, runtime_factory=factory, fixtures=ctx.fixtures, env=ctx.ran_in.name, voice=True
        )
        for case in spoken.cases:
            case.name = f"voice: {case.name}"
        suite.cases.extend(spoken.cases)
    return suite


async def escalation(ctx: GateContext) -> SuiteResult:
    """Escalations reach a queue with their context packet complete."""
    return await run_escalation_gate(ctx.bundle, runtime_factory=ctx.runtime_factory, fixtures=_customers(ctx))


async def red_team(ctx: GateContext) -> SuiteResult:
    """Hostile callers: out of scope, abuse, injection, someone else's data."""
    return await run_red_team(ctx.bundle, runtime_factory=ctx.runtime_factory, fixtures=_customers(ctx))


async def data_access(ctx: GateContext) -> SuiteResult:
    """Connectors against the target's DLP policy, statically and on every call a conversation makes."""
    suite = SuiteResult(suite="data_access")
    exceptions = dlp.active_exceptions(ctx.db, ctx.target.name) if ctx.db is not None else []
    report = dlp.check_bundle(ctx.bundle, ctx.target, exceptions)
    suite.cases.append(
        CaseResult(
            name=f"connectors vs {ctx.target.name} DLP policy",
            category="static",
            passed=report.ok,
            failures=[str(v) for v in report.violations],
            details={"warnings": report.warnings},
        )
    )
    # dynamic: run the agent's own conversations with a recorder that sees every connector call
    log = MemoryRecorder()

    def recording_runtime() -> AgentRuntime:
        runtime = ctx.runtime_factory()
        runtime.recorder = log
        return runtime

    def recording_factory(_bundle: BundleSource, _env: str) -> AgentRuntime:
        return recording_runtime()

    await run_conversation_tests(
        ctx.bundle, runtime_factory=recording_factory, fixtures=ctx.fixtures, env=ctx.ran_in.name
    )
    await run_red_team(ctx.bundle, runtime_factory=recording_runtime, fixtures=_customers(ctx))
    calls = [r for r in log.records if isinstance(r, ActionCalled)]
    refused = [c for c in calls if c.status == "denied" and "policy" in (c.error or "").lower()]
    unverified = [c for c in calls if c.customer_scoped and c.status == "ok" and not c.verified]
    suite.cases.append(
        CaseResult(
            name="every connector call was allowed by policy",
            category="dynamic",
            passed=not refused,
            failures=[f"{c.action}: {c.error or ''}" for c in refused],
            details={"calls": len(calls)},
        )
    )
    suite.cases.append(
        CaseResult(
            name="customer data only for the verified caller",
            category="dynamic",
            passed=not unverified,
            failures=[
                f"{c.action} answered without a verified caller (session {c.facts.session_id})" for c in unverified
            ],
            details={"customer_scoped_calls": sum(1 for c in calls if c.customer_scoped)},
        )
    )
    suite.metrics = {
        "connector_calls": len(calls),
        "policy_refusals": len(refused),
        "unverified_customer_calls": len(unverified),
    }
    return suite


async def rollback(ctx: GateContext) -> SuiteResult:
    """Rehearse a rollback in `ran_in`: activate what a rollback would (the previous version, or
    nothing for a first release), check that, then re-activate the candidate and hold a conversation."""
    releases, actor = ctx.releases, ctx.actor
    if releases is None or actor is None:
        raise GateSetupError("the rollback gate needs the release pipeline and the actor it rehearses as")
    env, agent = ctx.ran_in.name, ctx.bundle.agent.name
    suite = SuiteResult(suite="rollback")
    current = releases.active(env, agent)
    if current != ctx.digest:
        suite.cases.append(
            CaseResult(
                name="candidate is active",
                passed=False,
                category="setup",
                failures=[f"{agent} in {env} runs {current}, not the candidate {ctx.digest}"],
            )
        )
        return suite
    previous = await asyncio.to_thread(releases.rollback_target, env, agent)
    steps: list[tuple[str, str | None]] = [
        (
            "activate previous version and hold a conversation"
            if previous
            else "withdraw the first release: no version is served",
            previous,
        ),
        ("re-activate candidate and hold a conversation", ctx.digest),
    ]
    for label, digest in steps:
        t0 = time.perf_counter()
        await asyncio.to_thread(releases.rehearse, env, agent, digest, actor)
        if digest is None:
            served = await asyncio.to_thread(releases.active, env, agent)
            failures = [] if served is None else [f"{agent} in {env} still serves {served} after the withdrawal"]
        else:
            failures = await _smoke(ctx, digest)
        suite.cases.append(
            CaseResult(
                name=label,
                category="rehearsal",
                passed=not failures,
                failures=failures,
                details={"digest": digest},
                duration_ms=(time.perf_counter() - t0) * 1000,
            )
        )
    suite.metrics = {"previous_digest": previous, "first_release": previous is None}
    return suite


async def _smoke(ctx: GateContext, digest: str) -> list[str]:
    if ctx.db is None:
        raise GateSetupError("the rollback gate needs the database the bundles are stored in")
    stored = await asyncio.to_thread(bundle_store.load_stored, ctx.db, digest)
    runtime = await asyncio.to_thread(
        AgentRuntime, stored.source, environment=ctx.ran_in.name, digest=digest, secrets=resolve_secret
    )
    try:
        session = runtime.new_session(channel="rehearsal")
        greeting = await session.start()
        failures = [] if greeting.text.strip() else ["no greeting"]
        reply = await session.handle("hello")
        if not reply.text.strip():
            failures.append("no reply to 'hello'")
        await session.close("rehearsal")
        return failures
    finally:
        await runtime.aclose()


async def load(ctx: GateContext) -> SuiteResult:
    """Simulated voice calls over real sockets against a worker serving the environment."""
    return await run_load_gate(ctx)


#: the runners by gate name, to hand to `governance.gates.run_gate` / `run_required`
RUNNERS: GateRunners = {
    "conversations": conversations,
    "escalation": escalation,
    "red_team": red_team,
    "data_access": data_access,
    "rollback": rollback,
    "load": load,
}
