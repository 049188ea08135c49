"""The load gate: simulated voice calls over real sockets against a worker serving the environment
the gate runs in (the candidate is active there), judged against the gate's thresholds.

The worker comes from the context's `start_worker`, which whoever wires the gates provides (the
command line passes `voxgate.api.gate_worker.LocalWorkers`): test tooling does not boot the web app.
"""

from __future__ import annotations

from voxgate.governance.gates import GateContext, GateSetupError
from voxgate.testing.loadgen import run_voice_bench
from voxgate.testing.results import CaseResult, SuiteResult


async def run_load_gate(ctx: GateContext) -> SuiteResult:
    """Simulated voice calls over real sockets against a worker serving `ran_in` (the candidate is active there)."""
    if ctx.start_worker is None:
        raise GateSetupError("the load gate needs a worker: run it with a start_worker (voxgate gates run has one)")
    async with ctx.start_worker(ctx.ran_in.name) as base_url:
        report = await run_voice_bench(base_url, ctx.spec.calls, ctx.spec.duration_s, agent=ctx.bundle.agent.name)
    total = max(1, report.calls_total)
    failed_rate = report.calls_failed / total
    p95 = report.voice_to_voice_ms.p95
    suite = SuiteResult(suite="load")
    suite.cases.append(
        CaseResult(
            name=f"voice-to-voice p95 <= {ctx.spec.p95_ms:g} ms",
            category="latency",
            passed=p95 is not None and p95 <= ctx.spec.p95_ms,
            failures=[]
            if p95 is not None and p95 <= ctx.spec.p95_ms
            else [f"p95 {p95} ms over {ctx.spec.p95_ms:g} ms"],
        )
    )
    suite.cases.append(
        CaseResult(
            name=f"failed calls <= {ctx.spec.max_failed_rate:.0%}",
            category="reliability",
            passed=failed_rate <= ctx.spec.max_failed_rate and report.calls_total > 0,
            failures=[]
            if failed_rate <= ctx.spec.max_failed_rate and report.calls_total > 0
            else [
                f"{report.calls_failed} of {report.calls_total} calls failed "
                f"({report.failure_reasons}) {report.error or ''}"
            ],
        )
    )
    completed = sum(n for k, n in report.outcomes.items() if k in ("resolved", "escalated"))
    suite.metrics = {
        "calls": report.calls_total,
        "completed": report.calls_completed,
        "failed": report.calls_failed,
        "tasks_completed": completed,
        "voice_to_voice_ms": report.voice_to_voice_ms.model_dump(),
        "outcomes": report.outcomes,
    }
    return suite
