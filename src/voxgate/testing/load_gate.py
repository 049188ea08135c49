"""The load gate: simulated voice calls over real sockets against a worker serving the environment
the gate runs in (the candidate is active there), judged against the gate's thresholds."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from voxgate.governance.secrets import secrets_dir
from voxgate.testing.loadgen import free_port, run_voice_bench
from voxgate.testing.results import CaseResult, SuiteResult


async def run_load_gate(ctx: Any) -> SuiteResult:
    """Simulated voice calls over real sockets against a worker serving `ran_in` (the candidate is active there)."""
    import uvicorn

    from voxgate.api.app import create_app
    from voxgate.api.server import server_config
    from voxgate.config import Settings

    assert ctx.db is not None  # nosec B101: type narrowing (test tooling)
    with tempfile.TemporaryDirectory(prefix="voxgate-load-gate-") as tmp:
        # the worker resolves connector credentials from this process's secrets directory
        settings = Settings(
            data_dir=Path(tmp),
            database_url=ctx.db.url,
            environment=ctx.ran_in.name,
            voice_preload=True,
            policy_dir=ctx.extras.get("policy_dir"),
            secrets_dir=secrets_dir() or Path(tmp) / "secrets",
        )
        port = free_port()
        server = uvicorn.Server(
            server_config(create_app(settings, []), settings, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 240
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the load gate's worker did not start")
                await asyncio.sleep(0.1)
            report = await run_voice_bench(
                f"http://127.0.0.1:{port}", ctx.spec.calls, ctx.spec.duration_s, agent=ctx.bundle.agent.name
            )
        finally:
            server.should_exit = True
            await asyncio.to_thread(thread.join, 30)
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
