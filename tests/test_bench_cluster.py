"""The two cluster benchmarks, kept from rotting: each runs end to end at a tiny size (a real cluster, real
calls, a real Redis and PostgreSQL) and its report is checked for its shape and for work done, never for
timings; and the arithmetic they report with is checked on its own (which part of the cluster a Redis
command belongs to, what is left of a window once the idle worker's work is taken out, what rates the
load generator aims at).

bench/cluster_voice.py and bench/control_plane.py are run as a user runs them (`python bench/…`), with
the run's PostgreSQL server given as --database-url.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.helpers.databases import PG_URL
from tests.helpers.paths import BENCH, ROOT, bench_module

#: a cluster start (speech models loaded by every worker) and a few real calls on a busy machine
RUN_TIMEOUT_S = 900


def _run(script: str, *args: str) -> dict[str, Any]:
    """`python bench/<script> … --json` against the run's PostgreSQL server: its report."""
    if not PG_URL:
        pytest.skip("the cluster benchmarks need PostgreSQL: run the tests with scripts/run-tests.sh (make test)")
    run = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--database-url", PG_URL, "--json"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return json.loads(run.stdout)  # type: ignore[no-any-return]


# ---- the arithmetic ------------------------------------------------------------------------------------------


def test_a_redis_command_is_counted_for_the_part_of_the_cluster_whose_key_it_names() -> None:
    cp = bench_module("control_plane")
    assert cp.key_family("EVALSHA 1a2b 2 voxgate:calls:prod:live voxgate:calls:prod:day: abc 30000") == "admission"
    assert cp.key_family("EVALSHA 1a2b 0") == "(evalsha)"
    assert cp.key_family("HSET voxgate:workers:w1 id w1") == "worker directory"
    assert cp.key_family("PUBLISH voxgate:desk:prod:events {}") == "desk"
    assert cp.key_family("HMGET voxgate:chat:{abc} d v") == "chat snapshots"
    assert cp.key_family("EVALSHA ff 1 voxgate:window:sessions:x 1") == "throttles"
    assert cp.key_family("MULTI") == "(multi)"
    assert cp.key_family("GET other:thing") == "(get)"


def test_what_a_call_costs_is_its_window_less_the_idle_workers_rate_over_as_long() -> None:
    cp = bench_module("control_plane")
    idle = {
        "seconds": 10.0,
        "redis_all_commands": 50,
        "redis_commands": {"evalsha": 10, "hset": 4},
        "redis_families": {"admission": 2, "worker directory": 12},
        "pg": {"xact_commit": 20.0, "workers.updated": 2.0},
    }
    call = {
        "seconds": 30.0,
        "redis_all_commands": 170,
        "redis_commands": {"evalsha": 33, "hset": 12, "publish": 1},
        "redis_families": {"admission": 8, "worker directory": 36, "desk": 1},
        "pg": {"xact_commit": 75.0, "workers.updated": 6.0, "turns.inserted": 5.0},
    }
    cost = cp.less_background(call, idle)
    assert cost["redis_all_commands"] == 20.0
    assert cost["redis_commands"] == {"evalsha": 3.0, "publish": 1.0}
    assert cost["redis_families"] == {"admission": 2.0, "desk": 1.0}
    assert cost["pg"] == {"xact_commit": 15.0, "turns.inserted": 5.0}


def test_the_generator_aims_at_the_profiles_rates() -> None:
    cp = bench_module("control_plane")
    profile = cp.CallProfile(
        call_s=20.0,
        turns=4.0,
        voice_turns=3.0,
        verified=1.0,
        audit_events=2.0,
        chat_s=10.0,
        chat_turns=3.0,
        chat_audit_events=0.0,
        snapshot_bytes=1000.0,
    )
    load = cp.Load(calls=100, duration_s=10, calls_per_worker=25, chat_share=0.2, escalate_share=0.5, profile=profile)
    target = cp.targets(load, workers=4)
    voice, chats = 80 / 20.0, 20 / 10.0  # conversations started per second
    assert target["admit"] == pytest.approx(voice)
    assert target["turn row"] == pytest.approx(voice * 4 + chats * 3)
    assert target["audit append"] == pytest.approx(voice * 2)  # the chats' audit events are none: no such operation
    assert target["snapshot save"] == pytest.approx(chats * 3)
    assert target["desk event (delivered)"] == pytest.approx(
        voice * 0.5 * (2 + 2 * 4)
    )  # a broadcast reaches every worker
    assert target["heartbeat: repair pass"] == pytest.approx(4 / cp.HEARTBEAT_S)


# ---- the benchmarks, end to end at a tiny size ----------------------------------------------------------------


@pytest.mark.bench
def test_the_cluster_voice_benchmark_compares_the_cluster_with_one_worker() -> None:
    report = _run("cluster_voice.py", "--workers", "2", "--calls", "2", "--duration", "2")
    assert report["params"] == {"calls": 2, "duration_s": 2.0, "workers": 2, "scenario": "order_status"}
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu_model"]
    for side in ("cluster", "single"):
        run = report[side]
        assert run["error"] is None, run
        assert run["calls_total"] >= 2 and run["calls_completed"] == run["calls_total"], run
        assert run["calls_failed"] == 0 and run["calls_refused"] == 0 and not run["failure_reasons"], run
        assert run["turns_measured"] > 0 and run["voice_to_voice_p50_ms"] is not None, run
        assert run["workers_cpu_mean_pct"] > 0 and run["workers_rss_max_mib"] > 0, run  # the workers did the work
        assert run["workers_rss_idle_mib"] > 0, run
    assert set(report["difference_pct"]) == {"voice_to_voice_p50", "voice_to_voice_p95"}
    assert all(isinstance(v, float) for v in report["difference_pct"].values()), report["difference_pct"]


@pytest.mark.bench
def test_the_control_plane_benchmark_measures_a_real_call_then_drives_simulated_ones() -> None:
    report = _run("control_plane.py", "--calls", "20", "--duration", "2", "--idle", "3", "--chat-seconds", "10")
    measured = report["measured"]
    call = measured["voice_call"]
    # one real call admitted and given back, its session and turn rows, its audit events
    assert call["redis_families"].get("admission", 0) >= 2, call
    assert call["pg"].get("sessions.inserted") == 1 and call["pg"].get("turns.inserted", 0) >= 1, call
    # commits are counted less the idle worker's over a 3 s window here: a rough figure, present but not checked
    assert "pg_xact_per_call_s" in call and call["redis_commands_total"] > 0, call
    chat = measured["http_chat"]
    assert chat["turns"] >= 1 and chat["snapshot_bytes"] > 0 and chat["redis_families"].get("chat snapshots", 0) > 0
    profile = measured["profile"]
    assert profile["turns"] >= 1 and profile["call_s"] > 0
    load = report["load"]
    assert load["params"]["calls"] == 20 and load["params"]["profile"] == {**profile, "chat_s": 10.0}
    assert load["total"]["errors"] == 0, load["first_errors"]
    ops = load["ops"]
    for kind in ("admit", "turn row", "audit append", "snapshot save", "heartbeat: directory"):
        assert kind in ops and set(ops[kind]) == {"target_per_s", "achieved_per_s", "p50_ms", "p99_ms", "errors"}
        assert ops[kind]["target_per_s"] > 0, (kind, ops[kind])
    assert load["total"]["achieved_per_s"] > 0 and sum(load["conversations_started"].values()) >= 20
    for process in ("redis_server", "postgres"):
        assert load[process]["rss_max_mib"] is not None and load[process]["rss_max_mib"] > 0, load[process]


@pytest.mark.slow
def test_the_control_plane_load_generator_drives_the_shared_state_at_the_measured_rates() -> None:
    """The generator alone (the per-call rates it was measured with, no real call): what `make test`
    keeps of the control-plane benchmark, its whole run being `make bench-smoke`'s."""
    report = _run(
        "control_plane.py",
        *("--skip-measure", "--calls", "20", "--duration", "2", "--chat-seconds", "2", "--processes", "1"),
    )
    load = report["load"]
    assert load["total"]["errors"] == 0, load["first_errors"]
    assert load["total"]["achieved_per_s"] > 0 and sum(load["conversations_started"].values()) >= 20
    # (a 2 s window holds no heartbeat, and the conversations were admitted as they started, before it)
    for kind in ("session row (start)", "turn row", "audit append", "snapshot save"):
        assert ops_done(load["ops"], kind) > 0, (kind, load["ops"].get(kind))
    for process in ("redis_server", "postgres"):
        assert load[process]["rss_max_mib"] is not None and load[process]["rss_max_mib"] > 0, load[process]


def ops_done(ops: dict[str, dict[str, Any]], kind: str) -> float:
    """How many operations of `kind` a second the generator achieved (0: none, or no such kind)."""
    return float(ops.get(kind, {}).get("achieved_per_s") or 0)
