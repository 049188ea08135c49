"""Benchmark of voice calls through a cluster: N workers behind HAProxy against one worker, in the same run.

A real cluster on loopback, the one the tests start (tests/helpers/cluster.py): a fresh PostgreSQL
database, a Redis of its own, N `voxgate serve` workers serving prod in released mode (the Harbor agent
published through the pipeline, speech models preloaded, one speech thread each) and HAProxy in front.
`voxgate bench voice --url <HAProxy>` runs against the N workers; then every worker but the first stops,
the first starts again with N speech threads (the same speech threads in total, on the same cores) and the
same benchmark runs through HAProxy against it alone. Both reports' voice-to-voice p50/p95, the failures
and the difference in percent are printed, with the workers' CPU and memory over each run. On one machine
the cluster cannot be faster (same cores); the question is whether spreading calls over workers, the shared
admission in Redis and the balancer cost anything.

    python bench/cluster_voice.py                                 # 3 workers vs 1, 20 callers for 60 s
    python bench/cluster_voice.py --calls 20 --duration 60 --workers 3 --json
    python bench/cluster_voice.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Without --database-url it starts a throwaway PostgreSQL (scripts/pg-throwaway.sh, on --pg-port or a free
port) and removes it afterwards; with one, that server must let its user create (and drop) a database.
It needs what `make test` needs: PostgreSQL's binaries, redis-server and haproxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "src"):  # run from a checkout without installing; the harness is tests.helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from voxgate.testing.loadgen import ProcessTreeSampler, free_port  # noqa: E402

#: the worker settings of the benchmark where the test harness's differ from a worker's defaults: heartbeats,
#: the liveness timeout and alert evaluation as a production worker has them (the tests speed them up)
PRODUCTION_SETTINGS = {
    "VOXGATE_WORKER_HEARTBEAT_S": "5",
    "VOXGATE_WORKER_LIVENESS_TIMEOUT_S": "20",
    "VOXGATE_ALERT_INTERVAL_S": "30",
}
#: prod's limit on concurrent calls while the benchmark runs (the harness sets 5 for its admission test)
BENCH_CALL_LIMIT = 1000
SPEECH_THREADS_PER_WORKER = 1  # what the harness gives each worker (VOXGATE_SPEECH_WORKERS)
DEFAULT_CAPACITY = 20  # a worker's VOXGATE_VOICE_CAPACITY unless set
BENCH_TIMEOUT_MARGIN_S = 300.0  # a benchmark run may take its duration, its calls' timeout and this


# ---- the machine, PostgreSQL and the cluster ------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The machine the figures come from: cores, CPU model, memory, load when the run started."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count() or 1,
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


@contextlib.contextmanager
def postgres_server(database_url: str | None, port: int | None) -> Iterator[str]:
    """The PostgreSQL server the cluster's database is created in: `database_url` as given, else a
    throwaway one on `port` (a free one when None), stopped and removed afterwards."""
    if database_url:
        if not database_url.startswith(("postgresql://", "postgresql+psycopg://")):
            raise SystemExit(f"--database-url must be a postgresql:// URL, not {database_url.split(':', 1)[0]}://…")
        yield database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        return
    script = REPO / "scripts" / "pg-throwaway.sh"
    directory = tempfile.mkdtemp(prefix="voxgate-bench-pg.")
    os.chmod(directory, 0o755)  # the throwaway server runs as 'postgres' when this is root
    started = subprocess.run(
        [str(script), "start", directory, str(port or free_port())], capture_output=True, text=True, check=False
    )
    try:
        if started.returncode != 0:
            raise SystemExit(f"the throwaway PostgreSQL did not start: {started.stderr or started.stdout}")
        yield started.stdout.strip()
    finally:
        subprocess.run([str(script), "stop", directory], capture_output=True, check=False)


def harness(server_url: str) -> Any:
    """tests/helpers/cluster.py, bound to the PostgreSQL server at `server_url`. The harness reads the
    server's URL from VOXGATE_TEST_POSTGRES_URL when it is first imported, so it is imported here."""
    os.environ["VOXGATE_TEST_POSTGRES_URL"] = server_url
    module = importlib.import_module("tests.helpers.cluster")
    if module.PG_URL != server_url:
        raise SystemExit("the cluster harness was imported before its PostgreSQL was chosen (run this as a script)")
    return module


def raise_call_limit(policies: str) -> str:
    """The cluster's policies with prod's limit on concurrent calls out of the benchmark's way."""
    changed, n = re.subn(r"max_concurrent_calls: \d+", f"max_concurrent_calls: {BENCH_CALL_LIMIT}", policies)
    if n == 0:
        raise SystemExit("the cluster's policies no longer set max_concurrent_calls where the benchmark expects it")
    return changed


@contextlib.contextmanager
def bench_cluster(server_url: str, workers: int, root: Path, settings: dict[str, str] | None = None) -> Iterator[Any]:
    """A running cluster of `workers` workers (tests/helpers/cluster.py) with the Harbor backend it
    talks to, on loopback; everything stopped afterwards."""
    from harbor_backend import BackgroundServer

    cluster_helpers = harness(server_url)
    for tool in ("redis-server", "haproxy"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed (scripts/system-deps.sh installs it)")
    key = os.urandom(12).hex()
    with BackgroundServer(root / "harbor.db", key) as harbor:
        with cluster_helpers.running_cluster(
            root / "cluster",
            harbor.url,
            key,
            workers=workers,
            policy_edit=raise_call_limit,
            settings={**PRODUCTION_SETTINGS, **(settings or {})},
        ) as cluster:
            yield cluster


# ---- one benchmark run ------------------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """The resident memory of a process and its descendants now, in bytes (0 when it is gone)."""
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in (root, *root.children(recursive=True)))
    except psutil.Error:
        return 0


async def voice_bench(url: str, calls: int, duration_s: float, scenario: str, pids: list[int]) -> dict[str, Any]:
    """`voxgate bench voice --url url … --json` (a process of its own, as a user runs it), with the CPU and
    memory of the processes `pids` (the workers) sampled while it runs; the report with `workers` added."""
    idle_rss = sum([await asyncio.to_thread(tree_rss, pid) for pid in pids])
    samplers = [ProcessTreeSampler(pid) for pid in pids]
    for sampler in samplers:
        sampler.start()
    started = time.monotonic()
    argv = [sys.executable, "-m", "voxgate.cli", "bench", "voice", "--url", url]
    argv += ["--calls", str(calls), "--duration", f"{duration_s:g}", "--scenario", scenario, "--json"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration_s + 90 + BENCH_TIMEOUT_MARGIN_S)
    finally:
        for sampler in samplers:
            await sampler.stop()
    ended = time.monotonic()
    try:
        report: dict[str, Any] = json.loads(out)
    except ValueError:
        raise SystemExit(
            f"voxgate bench voice gave no report (exit {proc.returncode}):\n{err.decode()[-3000:]}"
        ) from None
    summaries = [s.summary(started, ended) for s in samplers]
    report["workers"] = {
        "count": len(pids),
        "cpu_mean_pct": round(sum(s.cpu_mean_pct or 0.0 for s in summaries), 1),
        "rss_idle_mib": round(idle_rss / 2**20, 1),
        "rss_max_mib": round(sum(s.rss_max_mib or 0.0 for s in summaries), 1),
        "samples": min((s.samples for s in summaries), default=0),
    }
    return report


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the comparison prints of one run."""
    v2v, greeting = report["voice_to_voice_ms"], report["greeting_ms"]
    return {
        "calls_total": report["calls_total"],
        "calls_completed": report["calls_completed"],
        "calls_failed": report["calls_failed"],
        "calls_refused": report["calls_refused"],
        "failure_reasons": report["failure_reasons"],
        "turns_measured": report["turns_measured"],
        "voice_to_voice_p50_ms": v2v["p50"],
        "voice_to_voice_p95_ms": v2v["p95"],
        "greeting_p50_ms": greeting["p50"],
        "workers_cpu_mean_pct": report["workers"]["cpu_mean_pct"],
        "workers_rss_idle_mib": report["workers"]["rss_idle_mib"],
        "workers_rss_max_mib": report["workers"]["rss_max_mib"],
        "client_cpu_mean_pct": report["client"]["cpu_mean_pct"],
        "client_max_send_lag_ms": report["client"]["max_send_lag_ms"],
        "error": report["error"],
    }


def difference_pct(cluster: float | None, single: float | None) -> float | None:
    """How much larger (+) or smaller (−) the cluster's figure is than the single worker's, in percent."""
    if cluster is None or single is None or single == 0:
        return None
    return round((cluster - single) / single * 100.0, 1)


def one_worker_left(cluster: Any, workers: int) -> None:
    """Stop workers 2..`workers` (out of HAProxy's rotation) and start worker 1 again with the speech
    threads and the capacity (calls it accepts) of all of them, so that one worker has what the cluster
    had, on the same cores."""
    for n in range(2, workers + 1):
        cluster.worker(n).stop()  # no call in progress: it drains at once
        cluster.wait_rotation(n, up=False)
    first = cluster.worker(1)
    first.env["VOXGATE_SPEECH_WORKERS"] = str(workers * SPEECH_THREADS_PER_WORKER)
    first.env["VOXGATE_VOICE_CAPACITY"] = str(workers * int(first.env.get("VOXGATE_VOICE_CAPACITY", DEFAULT_CAPACITY)))
    cluster.restart(1)


async def compare(cluster: Any, workers: int, calls: int, duration_s: float, scenario: str) -> dict[str, Any]:
    """The benchmark through HAProxy against all the cluster's workers, then against worker 1 alone."""
    pids = [w.proc.pid for w in cluster.workers]
    spread = await voice_bench(cluster.lb_url, calls, duration_s, scenario, pids)
    await asyncio.to_thread(one_worker_left, cluster, workers)
    first = cluster.worker(1)
    alone = await voice_bench(cluster.lb_url, calls, duration_s, scenario, [first.proc.pid])
    a, b = summary(spread), summary(alone)
    return {
        "params": {"calls": calls, "duration_s": duration_s, "workers": workers, "scenario": scenario},
        "cluster": a,
        "single": b,
        "difference_pct": {
            "voice_to_voice_p50": difference_pct(a["voice_to_voice_p50_ms"], b["voice_to_voice_p50_ms"]),
            "voice_to_voice_p95": difference_pct(a["voice_to_voice_p95_ms"], b["voice_to_voice_p95_ms"]),
        },
    }


# ---- the command ---------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def print_result(result: dict[str, Any]) -> None:
    p, m = result["params"], result["machine"]
    print(
        f"voice calls through HAProxy: {p['workers']} workers vs 1 worker, {p['calls']} callers x "
        f"{p['duration_s']:g} s each, scenario {p['scenario']}"
    )
    print(f"machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, load {m['load_average_1m']} at start")
    head = f"{'':<12}{'calls':>6}{'done':>6}{'failed':>7}{'refused':>8}{'v2v p50':>9}{'v2v p95':>9}"
    print(head + f"{'workers CPU %':>15}{'RSS MiB':>9}{'idle RSS':>10}")
    for key, label in (("cluster", f"{p['workers']} workers"), ("single", "1 worker")):
        r = result[key]
        print(
            f"{label:<12}{r['calls_total']:>6}{r['calls_completed']:>6}{r['calls_failed']:>7}{r['calls_refused']:>8}"
            f"{_ms(r['voice_to_voice_p50_ms']):>9}{_ms(r['voice_to_voice_p95_ms']):>9}"
            f"{r['workers_cpu_mean_pct']:>15}{r['workers_rss_max_mib']:>9}{r['workers_rss_idle_mib']:>10}"
        )
        for reason, count in r["failure_reasons"].items():
            print(f"    failed x{count}: {reason}")
        if r["error"]:
            print(f"    ERROR: {r['error']}")
    d = result["difference_pct"]
    print(
        f"cluster vs one worker: voice-to-voice p50 {_pct(d['voice_to_voice_p50'])}, "
        f"p95 {_pct(d['voice_to_voice_p95'])}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="concurrent simulated callers (default 20)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds callers place calls (default 60)")
    parser.add_argument("--workers", type=int, default=3, help="workers of the cluster (default 3)")
    parser.add_argument("--scenario", default="order_status", choices=("order_status", "outage", "mixed"))
    parser.add_argument("--database-url", help="a PostgreSQL server to create the cluster's database in")
    parser.add_argument("--pg-port", type=int, help="the throwaway PostgreSQL's port (default: a free one)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 200:
        parser.error("--calls must be 1..200")
    if not 1 <= args.duration <= 3600:
        parser.error("--duration must be 1..3600 seconds")
    if not 2 <= args.workers <= 16:
        parser.error("--workers must be 2..16 (the comparison is against one of them alone)")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, compare, stop everything; the result."""
    facts = machine()
    with (
        tempfile.TemporaryDirectory(prefix="voxgate-bench-cluster.") as tmp,
        postgres_server(args.database_url, args.pg_port) as server_url,
        bench_cluster(server_url, args.workers, Path(tmp)) as cluster,
    ):
        result = asyncio.run(compare(cluster, args.workers, args.calls, args.duration, args.scenario))
    return {"machine": facts, **result}


def main() -> None:
    args = parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_result(result)


if __name__ == "__main__":
    main()
