"""Benchmark of the cluster's shared state alone: what one real call costs Redis and PostgreSQL, then many
simulated calls at that cost, with no audio.

First, on a one-worker cluster (tests/helpers/cluster.py, as bench/cluster_voice.py starts it), it measures
what one real voice call and one real HTTP chat cost the shared state: Redis commands (`INFO commandstats`,
and MONITOR to tell which part of the cluster sent each: admission, the worker directory, chat snapshots,
the desk, leases, throttles) and PostgreSQL work (`pg_stat_database` transactions and rows,
`pg_stat_user_tables` rows per table), less what the idle worker does in as long (heartbeats, repair
passes, lease renewals). That gives the per-call profile: how long a call lasts, its turns, voice-turn rows,
audit events, and a chat's turns.

Then a load generator (`--processes` processes, default 2) drives `--calls` concurrent simulated
conversations (default 1,000) against a fresh Redis and a fresh PostgreSQL database for `--duration`
seconds after a ramp of one call's length, at the profile's rates, through the real
classes: admission (`ClusterCalls`), one simulated worker per `--calls-per-worker` calls with its heartbeat
(`RedisDirectory.announce`, slot renewal, `WorkerLiveness` beat and repair pass under the reaper's lease),
session and turn rows (`SessionWriter`), audit appends (`AuditLog.append`, one event per transaction as
the worker's recorder appends), chat snapshots (`RedisSnapshotStore`: checkout, take-over, save) for the
`--chat-share` of conversations that are HTTP chats, and desk claims and events (`RedisDeskState`: handoff,
offer, accept, events to another worker, release) for the `--escalate-share` of calls that go to a desk
agent. It reports the operations per second achieved against the target, p50/p99 latency per kind of
operation, the CPU and memory of redis-server and of every PostgreSQL process of that server, and the
generator's own CPU (a generator that is busy sets the pace itself: the report says so).

    python bench/control_plane.py                         # measure one call, then 1,000 calls for 60 s
    python bench/control_plane.py --calls 1000 --duration 60 --json
    python bench/control_plane.py --skip-measure          # the load alone, at MEASURED_PROFILE
    python bench/control_plane.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Without --database-url it starts a throwaway PostgreSQL (scripts/pg-throwaway.sh, on --pg-port or a free
port); Redis is always a throwaway redis-server of its own. Both run on this machine, as the generator
does: their CPU is read from their processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import math
import multiprocessing
import random
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import redis.asyncio as aioredis
from harbor_backend import demo_credentials
from pydantic import BaseModel, Field
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # bench/cluster_voice.py: the machine, PostgreSQL and the cluster

from cluster_voice import REPO, bench_cluster, harness, machine, postgres_server  # noqa: E402

from voxgate.cluster.admission import ClusterCalls, Limits  # noqa: E402
from voxgate.cluster.desk import RedisDeskState  # noqa: E402
from voxgate.cluster.directory import RedisDirectory, WorkerInfo  # noqa: E402
from voxgate.cluster.lease import RedisLease  # noqa: E402
from voxgate.cluster.redis import Cluster  # noqa: E402
from voxgate.cluster.sessions import RedisSnapshotStore  # noqa: E402
from voxgate.compliance.audit import AuditEvent, AuditLog  # noqa: E402
from voxgate.store.db import Database  # noqa: E402
from voxgate.store.liveness import LocalHolds, SqlWorkerRegistry, WorkerLiveness  # noqa: E402
from voxgate.store.session_writer import SessionWriter  # noqa: E402
from voxgate.store.takeover import take_over  # noqa: E402
from voxgate.testing.loadgen import ProcessTreeSampler  # noqa: E402

ENVIRONMENT = "prod"
AGENT = "harbor-support"
PREFIX = "voxgate"  # the cluster's key prefix (voxgate.cluster.redis.DEFAULT_PREFIX)
#: what a worker's heartbeat does and how often (Settings.worker_heartbeat_s and its liveness timeout)
HEARTBEAT_S, LIVENESS_TIMEOUT_S, CLUSTER_TTL_S = 5.0, 20.0, 15.0
IDLE_TIMEOUT_S = 900.0  # Settings.session_idle_timeout_s
#: PostgreSQL's statistics of a backend reach pg_stat_* when it goes idle, at the latest 10 s later
STATS_SETTLE_S = 11.0
#: the key families of the cluster's Redis (the first part of a key after the prefix) and what writes them
FAMILIES = {
    "calls": "admission",
    "workers": "worker directory",
    "chat": "chat snapshots",
    "desk": "desk",
    "lease": "leases",
    "releases": "release notices",
    "login": "throttles",
    "window": "throttles",
    "count": "throttles",
}
#: the families a conversation itself writes (the others are the worker's own: its heartbeat, the desk's
#: presence, leases, connections and pings, which the idle worker does as much of)
CONVERSATION_FAMILIES = frozenset({"admission", "throttles", "chat snapshots"})
#: the tables whose rows the profile is read from
TABLES = ("sessions", "turns", "voice_turns", "audit_events", "workers", "handoffs", "security_events")
#: the per-call profile measured on the reference machine (docs/capacity.md), for --skip-measure
MEASURED_PROFILE: dict[str, float] = {
    "call_s": 33.0,
    "turns": 5.0,
    "voice_turns": 4.0,
    "verified": 1.0,
    "audit_events": 4.0,
    "chat_turns": 2.0,
    "chat_audit_events": 1.0,
    "snapshot_bytes": 809.0,
}
MAX_CALLS = 5000
MAX_DURATION_S = 600.0
#: threads a simulated worker may use for blocking database work (a worker's default pool on 2 cores)
THREADS_PER_WORKER = 6
SETUP_TIMEOUT_S = 300.0  # how long generator processes may take to start their simulated workers, or to stop


class CallProfile(BaseModel):
    """What one conversation does to the shared state, as measured on a real worker."""

    call_s: float = Field(gt=0, description="how long a voice call lasts, seconds")
    turns: float = Field(ge=0, description="turn rows of a voice call (greeting included)")
    voice_turns: float = Field(ge=0, description="voice-turn timing rows of a voice call")
    verified: float = Field(ge=0, description="caller verifications of a voice call (0 or 1)")
    audit_events: float = Field(ge=0, description="audit events of a voice call")
    chat_s: float = Field(gt=0, description="how long an HTTP chat lasts, seconds (a person's pace: not measured)")
    chat_turns: float = Field(ge=0, description="turns of an HTTP chat saved in its snapshot (not the one ending it)")
    chat_audit_events: float = Field(ge=0, description="audit events of an HTTP chat")
    snapshot_bytes: float = Field(gt=0, description="size of a chat snapshot in Redis")


# ---- measuring one real call -------------------------------------------------------------------------------


def key_family(command: str) -> str:
    """Which part of the cluster a Redis command (as MONITOR prints it) belongs to, by its first key."""
    parts = command.split(" ")
    name = parts[0].lower()
    keys: list[str] = []
    if name in ("evalsha", "eval") and len(parts) > 2 and parts[2].isdigit():
        keys = parts[3 : 3 + int(parts[2])]
    elif len(parts) > 1 and name not in ("multi", "exec", "ping", "hello", "client", "script", "info", "select"):
        keys = parts[1:2]
    if keys and keys[0].startswith(PREFIX + ":"):
        family = keys[0].split(":")[1]
        return FAMILIES.get(family, family)
    return f"({name})"


class RedisWatch:
    """Redis commands seen by MONITOR (those scripts run inside excluded), by key family, with when."""

    def __init__(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(url, decode_responses=False)
        self.seen: list[tuple[float, str, str]] = []  # (monotonic time, family, command name)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()

        async def watch() -> None:
            async with self.client.monitor() as monitor:
                ready.set()
                while True:
                    info = await monitor.next_command()
                    if info["client_type"] == "lua":
                        continue  # the commands a script runs: the script is counted once
                    command = info["command"]
                    name = command.split(" ", 1)[0].lower()
                    if name in ("info", "monitor"):
                        continue  # this benchmark's own
                    self.seen.append((time.monotonic(), key_family(command), name))

        self._task = asyncio.create_task(watch())
        await asyncio.wait_for(ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.aclose()

    def families(self, since: float, until: float) -> Counter[str]:
        return Counter(family for at, family, _ in self.seen if since <= at < until)

    def names(self, since: float, until: float, families: frozenset[str]) -> Counter[str]:
        """Commands by name in [since, until) of the key families `families`."""
        return Counter(name for at, family, name in self.seen if since <= at < until and family in families)

    async def commandstats(self) -> dict[str, int]:
        """Calls per command so far (INFO commandstats), this benchmark's own INFO left out."""
        stats = await self.client.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}


def pg_stats(db_url: str) -> dict[str, float]:
    """The database's transactions and rows so far (pg_stat_database), and rows per table."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            row = conn.execute(
                text(
                    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted "
                    "FROM pg_stat_database WHERE datname = current_database()"
                )
            ).one()
            out: dict[str, float] = {k: float(v) for k, v in row._mapping.items()}
            tables = "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, seq_scan, idx_scan FROM pg_stat_user_tables"
            for t in conn.execute(text(tables)):
                # reads: how often each table was scanned (by index or in full), whatever the table
                out[f"{t.relname}.scans"] = float((t.seq_scan or 0) + (t.idx_scan or 0))
                if t.relname in TABLES:
                    out[f"{t.relname}.inserted"] = float(t.n_tup_ins)
                    out[f"{t.relname}.updated"] = float(t.n_tup_upd)
                    out[f"{t.relname}.deleted"] = float(t.n_tup_del)
    finally:
        engine.dispose()
    out["xact_commit"] -= 1  # this read's own transaction
    return out


@dataclass
class Mark:
    """The shared state's counters at one moment."""

    at: float
    redis: dict[str, int]
    pg: dict[str, float]


async def mark(watch: RedisWatch, db_url: str) -> Mark:
    return Mark(time.monotonic(), await watch.commandstats(), await asyncio.to_thread(pg_stats, db_url))


def window(watch: RedisWatch, a: Mark, b: Mark) -> dict[str, Any]:
    """What happened between two marks: every Redis command (commandstats), those of the families a
    conversation writes by name, every command by family (MONITOR), and the PostgreSQL counters."""
    return {
        "seconds": b.at - a.at,
        "redis_all_commands": sum(b.redis.values()) - sum(a.redis.values()),
        "redis_commands": dict(watch.names(a.at, b.at, CONVERSATION_FAMILIES)),
        "redis_families": dict(watch.families(a.at, b.at)),
        "pg": {k: b.pg.get(k, 0.0) - a.pg.get(k, 0.0) for k in b.pg},
    }


def less_background(w: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    """A window's counts less what the idle worker does in as long (idle: a window with nothing else)."""
    scale = w["seconds"] / idle["seconds"]

    def minus(mine: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
        keys = set(mine) | set(theirs)
        out = {k: round(mine.get(k, 0) - scale * theirs.get(k, 0), 1) for k in sorted(keys)}
        return {k: v for k, v in out.items() if abs(v) >= 0.5}

    return {
        "seconds": round(w["seconds"], 1),
        "redis_all_commands": round(w["redis_all_commands"] - scale * idle["redis_all_commands"], 1),
        "redis_commands": minus(w["redis_commands"], idle["redis_commands"]),
        "redis_families": minus(w["redis_families"], idle["redis_families"]),
        "pg": minus(w["pg"], idle["pg"]),
    }


async def voice_call(url: str) -> dict[str, Any]:
    """One real call (`voxgate bench voice --calls 1`, the order-status scenario) against `url`."""
    argv = [sys.executable, "-m", "voxgate.cli", "bench", "voice", "--url", url, "--calls", "1"]
    argv += ["--duration", "1", "--ramp", "0", "--scenario", "order_status", "--json"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    try:
        report: dict[str, Any] = json.loads(out)
    except ValueError:
        raise SystemExit(f"voxgate bench voice gave no report:\n{err.decode()[-3000:]}") from None
    if report["calls_completed"] != 1:
        raise SystemExit(f"the measured call did not complete: {report['failure_reasons'] or report['error']}")
    return report


async def http_chat(url: str, redis_url: str) -> dict[str, Any]:
    """One real HTTP chat with the Harbor agent (an outage question, a postcode, goodbye): its turns, those
    saved as a snapshot (all but one that ended it), and the snapshot's size in Redis after the first turn."""
    postcode = demo_credentials()[0]["postcode"]
    lines = ["is there an outage in my area", postcode, "no thanks"]
    snapshot_bytes = 0
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as client:
        r = await client.post(f"/api/agents/{AGENT}/sessions")
        r.raise_for_status()
        sid = r.json()["session_id"]
        turns = 0
        for n, line in enumerate(lines):
            r = await client.post(f"/api/sessions/{sid}/turns", json={"text": line})
            r.raise_for_status()
            turns += 1
            if n == 0:
                redis = aioredis.Redis.from_url(redis_url)
                snapshot_bytes = len(await redis.hget(f"{PREFIX}:chat:{{{sid}}}", "d") or b"")
                await redis.aclose()
            if r.json().get("ended"):
                break
        else:
            (await client.post(f"/api/sessions/{sid}/end")).raise_for_status()
            return {"turns": turns, "saved_turns": turns, "snapshot_bytes": snapshot_bytes}
    # the agent ended it with the last turn: that one forgot the snapshot instead of saving it
    return {"turns": turns, "saved_turns": turns - 1, "snapshot_bytes": snapshot_bytes}


async def measure(cluster: Any, idle_s: float, warm_up: bool = True) -> dict[str, Any]:
    """What one real voice call and one real HTTP chat cost the shared state of a one-worker cluster (each
    less what the idle worker does over as long), and the profile the load generator runs at. A first
    call, not counted, warms the worker up (its scripts loaded into Redis, its connections opened)."""
    watch = RedisWatch(cluster.redis_url)
    await watch.start()
    try:
        if warm_up:
            await voice_call(cluster.url(1))
            await http_chat(cluster.url(1), cluster.redis_url)
        await asyncio.sleep(STATS_SETTLE_S)  # what came before reaches the statistics
        a = await mark(watch, cluster.db_url)
        await asyncio.sleep(idle_s)
        b = await mark(watch, cluster.db_url)
        call = await voice_call(cluster.url(1))
        await asyncio.sleep(STATS_SETTLE_S)
        c = await mark(watch, cluster.db_url)
        chat = await http_chat(cluster.url(1), cluster.redis_url)
        await asyncio.sleep(STATS_SETTLE_S)
        d = await mark(watch, cluster.db_url)
    finally:
        await watch.stop()
    idle = window(watch, a, b)
    per_call, per_chat = less_background(window(watch, b, c), idle), less_background(window(watch, c, d), idle)
    for counts, name in ((per_chat["redis_families"], "chat snapshots"), (per_chat["redis_commands"], "hget")):
        left = counts.pop(name, 0) - 1  # this benchmark's own read of the snapshot's size
        if left >= 0.5:
            counts[name] = left
    for part in (per_call, per_chat):  # the worker's own row (heartbeats) is not the conversation's
        part["pg"] = {k: v for k, v in part["pg"].items() if not k.startswith("workers.")}
    call_s = float(call["duration_s"])
    pg_call, pg_chat = per_call["pg"], per_chat["pg"]
    turns = pg_call.get("turns.inserted", 0.0)
    own = {k: v for k, v in per_call["redis_families"].items() if k in CONVERSATION_FAMILIES}
    redis_per_call = sum(own.values())
    return {
        "idle_worker_per_s": {
            "redis_commands": round(idle["redis_all_commands"] / idle["seconds"], 2),
            "redis_families": {k: round(v / idle["seconds"], 2) for k, v in idle["redis_families"].items()},
            "pg_xact_commit": round(idle["pg"]["xact_commit"] / idle["seconds"], 2),
        },
        "voice_call": {
            **per_call,
            "redis_families": own,
            "redis_commands_total": round(redis_per_call, 1),
            "redis_commands_per_call_s": round(redis_per_call / call_s, 2),
            "pg_xact_per_call_s": round(pg_call.get("xact_commit", 0.0) / call_s, 2),
            "call_s": round(call_s, 1),
            "voice_to_voice_ms": call["voice_to_voice_ms"],
        },
        "http_chat": {
            **per_chat,
            "redis_families": {k: v for k, v in per_chat["redis_families"].items() if k in CONVERSATION_FAMILIES},
            **chat,
        },
        "profile": {
            "call_s": call_s,
            "turns": turns,
            "voice_turns": pg_call.get("voice_turns.inserted", 0.0),
            "verified": max(0.0, min(1.0, pg_call.get("sessions.updated", 0.0) - turns - 1)),
            "audit_events": pg_call.get("audit_events.inserted", 0.0),
            "chat_turns": float(chat["saved_turns"]),
            "chat_audit_events": pg_chat.get("audit_events.inserted", 0.0),
            "snapshot_bytes": float(max(1, chat["snapshot_bytes"])),
        },
    }


# ---- the load generator ----------------------------------------------------------------------------------------


#: what `Timings.time` answers for an operation that raised (its error is counted)
FAILED = object()


class Timings:
    """When each operation finished and how long it took (ms), by kind, and the failures."""

    def __init__(self) -> None:
        self.done: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.errors: list[tuple[float, str]] = []
        self.first_error: dict[str, str] = {}

    async def time(self, kind: str, work: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            result = await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors.append((time.monotonic(), kind))
            self.first_error.setdefault(kind, f"{type(exc).__name__}: {exc}"[:300])
            return FAILED
        self.done[kind].append((time.monotonic(), (time.perf_counter() - started) * 1000))
        return result

    def arrived(self, kind: str, ms: float) -> None:
        self.done[kind].append((time.monotonic(), ms))

    def between(self, since: float, until: float) -> tuple[dict[str, np.ndarray], Counter[str]]:
        """Latencies of the operations that finished in [since, until), by kind, and the failures then."""
        ms = {k: np.array([v for at, v in pairs if since <= at < until], dtype=float) for k, pairs in self.done.items()}
        return ms, Counter(kind for at, kind in self.errors if since <= at < until)


@dataclass
class SimWorker:
    """One simulated worker: its own Redis client, database pool and audit connection, as a worker has."""

    n: int
    cluster: Cluster
    db: Database
    liveness: WorkerLiveness
    directory: RedisDirectory
    calls: ClusterCalls
    snapshots: RedisSnapshotStore
    desk: RedisDeskState
    audit: AuditLog
    writer: SessionWriter
    started_at: str
    open_sessions: set[str] = field(default_factory=set)

    @property
    def worker_id(self) -> str:
        assert self.liveness.worker_id is not None  # set by start_worker
        return self.liveness.worker_id

    def info(self) -> WorkerInfo:
        now = dt.datetime.now(dt.UTC).isoformat()
        return WorkerInfo(
            id=self.worker_id,
            environment=ENVIRONMENT,
            url=f"http://10.0.{self.n // 250}.{self.n % 250}:8600",
            capacity=25,
            active_calls=len(self.calls.held),
            pending_sockets=0,
            live_sessions=len(self.open_sessions),
            load=50.0,
            draining=False,
            version="bench",
            started_at=self.started_at,
            seen_at=now,
        )


class DeskEvents:
    """A simulated worker's desk receiver: events from other workers are timed on arrival."""

    def __init__(self, timings: Timings) -> None:
        self.timings = timings

    async def on_event(self, sender: str, event: dict[str, Any]) -> dict[str, Any] | None:
        sent = event.get("t")
        if isinstance(sent, float):
            self.timings.arrived("desk event (delivered)", (time.monotonic() - sent) * 1000)
        return None

    async def on_audio(self, target: str, pcm16: bytes) -> None:
        pass


async def start_worker(n: int, redis_url: str, db_url: str, timings: Timings) -> SimWorker:
    cluster = Cluster.from_url(redis_url)
    db = Database(db_url)
    holder: list[SimWorker] = []
    liveness = WorkerLiveness(
        SqlWorkerRegistry(db),
        db,
        ENVIRONMENT,
        heartbeat_s=3600.0,  # its own loop stays asleep: the benchmark beats and times each beat itself
        liveness_timeout_s=LIVENESS_TIMEOUT_S,
        idle_timeout_s=IDLE_TIMEOUT_S,
        holds=LocalHolds(sessions=lambda: holder[0].open_sessions if holder else ()),
        lease=RedisLease(cluster, f"reaper:{ENVIRONMENT}", ttl_s=CLUSTER_TTL_S),
    )
    await liveness.start()
    writer = SessionWriter(db)
    writer.worker_id = liveness.worker_id
    desk = RedisDeskState(cluster, ENVIRONMENT, worker=liveness.worker_id or "")
    await desk.start(liveness.worker_id or "", DeskEvents(timings))
    worker = SimWorker(
        n=n,
        cluster=cluster,
        db=db,
        liveness=liveness,
        directory=RedisDirectory(cluster, ttl_s=CLUSTER_TTL_S),
        calls=ClusterCalls(cluster, ENVIRONMENT, slot_ttl_s=CLUSTER_TTL_S),
        snapshots=RedisSnapshotStore(cluster, idle_timeout_s=IDLE_TIMEOUT_S),
        desk=desk,
        audit=AuditLog(db),
        writer=writer,
        started_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    holder.append(worker)
    return worker


async def stop_worker(worker: SimWorker) -> None:
    await worker.desk.close()
    await worker.liveness.stop()
    await asyncio.to_thread(worker.audit.close)
    await worker.cluster.close()
    worker.db.dispose()


def _turn_data(seq: int) -> dict[str, Any]:
    """A turn's data as the recorder stores it: the platform's own values and the redaction counts."""
    return {
        "type": "turn",
        "intent": "order_status",
        "state": f"step_{seq}",
        "confidence": 0.91,
        "timings_ms": {"intent": 4.2, "action": 35.0},
        "redactions": {"account_number": 1} if seq == 2 else {},
    }


def _audit_event(session_id: str, k: int) -> AuditEvent:
    """An audit event as the recorder writes one for a call (ids and hashes only)."""
    action, data = (
        ("runtime.caller_verified", {})
        if k == 0
        else ("connector.call", {"action": "order_status", "http_status": 200})
    )
    return AuditEvent(
        actor="caller",
        action=action,
        resource=f"session:{session_id}",
        environment=ENVIRONMENT,
        outcome="ok",
        data={"agent": AGENT, "bundle": "0" * 64, **data},
    )


def spread(count: float, rng: random.Random) -> int:
    """`count` (a mean, maybe fractional) as a whole number for one conversation."""
    whole = math.floor(count)
    return whole + (1 if rng.random() < count - whole else 0)


@dataclass
class Load:
    """The generator's parameters."""

    calls: int
    duration_s: float
    calls_per_worker: int
    chat_share: float
    escalate_share: float
    profile: CallProfile
    seed: int = 7


async def voice_conversation(w: SimWorker, peer: SimWorker, load: Load, t: Timings, rng: random.Random) -> None:
    """One simulated voice call on worker `w`: admitted, its rows and audit events spread over its length,
    maybe escalated to a desk agent on `peer`, then ended and its slot given back."""
    p = load.profile
    sid = secrets.token_hex(16)
    turns, audits = spread(p.turns, rng), spread(p.audit_events, rng)
    voice_turns = min(turns, spread(p.voice_turns, rng))
    escalate = rng.random() < load.escalate_share
    gap = p.call_s / (turns + 1)
    if await t.time("admit", w.calls.admit(sid, Limits())) is not None:
        return  # refused (there is no limit here) or failed: counted
    now = dt.datetime.now(dt.UTC)
    w.open_sessions.add(sid)
    try:
        await session_started(w, t, sid, "twilio", now)
        for seq in range(1, turns + 1):
            await asyncio.sleep(gap * rng.uniform(0.8, 1.2))
            at = dt.datetime.now(dt.UTC)
            await turn_row(
                w,
                t,
                sid,
                seq,
                at,
                ("where is my order" if seq > 1 else None, ORDER_ANSWER, "order_status"),
            )
            if seq <= voice_turns:
                timings = {
                    "endpoint_ms": 310.0,
                    "asr_final_ms": 420.0,
                    "first_tts_ms": 650.0,
                    "voice_to_voice_ms": 700.0,
                }
                await t.time(
                    "voice-turn row",
                    asyncio.to_thread(
                        w.writer.voice_turn,
                        session_id=sid,
                        seq=seq,
                        timings_ms=timings,
                        speculative_hit=False,
                        interrupted=False,
                        dtmf=False,
                    ),
                )
            if seq == 2 and p.verified >= 0.5:
                await t.time(
                    "session row (verified)",
                    asyncio.to_thread(w.writer.verified, session_id=sid, customer_id=f"cust-{rng.randrange(10**6)}"),
                )
            # the call's audit events come with its turns, one transaction each, as the recorder appends
            for k in range(audits):
                if k % max(1, turns) == seq - 1:
                    await t.time("audit append", asyncio.to_thread(w.audit.append, _audit_event(sid, k)))
            if escalate and seq == turns:
                await escalation(w, peer, t, rng)
        await asyncio.sleep(gap)
        await t.time(
            "session row (end)",
            asyncio.to_thread(
                w.writer.session_ended, session_id=sid, outcome="resolved", reason="agent", at=dt.datetime.now(dt.UTC)
            ),
        )
    finally:
        w.open_sessions.discard(sid)
        await t.time("release", w.calls.release(sid))


ORDER_ANSWER = "Your order left our warehouse yesterday and arrives on Thursday."
OUTAGE_ANSWER = "There is no outage reported at your postcode right now."


async def session_started(w: SimWorker, t: Timings, sid: str, channel: str, at: dt.datetime) -> None:
    """A conversation's row, as the recorder writes it when one starts on `channel`."""
    row = functools.partial(
        w.writer.session_started,
        session_id=sid,
        agent=AGENT,
        agent_version="1.0.0",
        bundle_digest="0" * 64,
        environment=ENVIRONMENT,
        channel=channel,
        at=at,
    )
    await t.time("session row (start)", asyncio.to_thread(row))


async def turn_row(
    w: SimWorker, t: Timings, sid: str, seq: int, at: dt.datetime, said: tuple[str | None, str, str]
) -> None:
    """A turn's row (`said`: the caller's words, the agent's answer, the intent), as the recorder writes it."""
    user_text, agent_text, intent = said
    row = functools.partial(
        w.writer.turn,
        session_id=sid,
        seq=seq,
        at=at,
        user_text=user_text,
        agent_text=agent_text,
        intent=intent,
        confidence=0.9,
        state=f"step_{seq}",
        data=_turn_data(seq),
    )
    await t.time("turn row", asyncio.to_thread(row))


async def escalation(w: SimWorker, peer: SimWorker, t: Timings, rng: random.Random) -> None:
    """A call handed to a desk agent signed in on another worker: the handoff published, offered, accepted,
    the desk agent's worker told (events through pub/sub), then released and dropped."""
    hid = rng.randrange(1, 2**31)
    user = f"desk-{peer.n}-{rng.randrange(1000)}"
    fields = {"queue": "general", "skills": "", "status": "waiting", "worker": w.worker_id, "created": str(time.time())}
    await t.time("desk claim", w.desk.put_handoff(hid, fields))
    w.desk.broadcast({"k": "changed", "t": time.monotonic()})
    if await t.time("desk claim", w.desk.offer(hid, user, 15.0)) is True:
        w.desk.send(peer.worker_id, {"k": "offer", "hid": hid, "t": time.monotonic()})
        if await t.time("desk claim", w.desk.accept(hid, user)) is True:
            w.desk.send(peer.worker_id, {"k": "op", "op": "accepted", "hid": hid, "t": time.monotonic()})
        await t.time("desk claim", w.desk.release(hid, user))
    await t.time("desk claim", w.desk.drop_handoff(hid))
    w.desk.broadcast({"k": "changed", "t": time.monotonic()})


async def chat_conversation(w: SimWorker, workers: list[SimWorker], load: Load, t: Timings, rng: random.Random) -> None:
    """One simulated HTTP chat: its snapshot created, then each turn on any worker (checkout, take-over of
    the row, turn row, save), then forgotten and ended."""
    p = load.profile
    sid = secrets.token_hex(16)
    turns, audits = spread(p.chat_turns, rng), spread(p.chat_audit_events, rng)
    blob = secrets.token_hex(int(p.snapshot_bytes) // 2).encode()  # as large as a real snapshot, nothing in it
    gap = p.chat_s / (turns + 1)
    now = dt.datetime.now(dt.UTC)
    await session_started(w, t, sid, "http", now)
    if await t.time("snapshot create", w.snapshots.create(sid, blob)) is FAILED:
        return
    version, holder = 1, w
    for seq in range(1, turns + 1):
        await asyncio.sleep(gap * rng.uniform(0.8, 1.2))
        previous, holder = holder, rng.choice(workers)  # no stickiness: any worker takes the turn
        token = secrets.token_hex(8)
        if await t.time("snapshot checkout", holder.snapshots.checkout(sid, token, None)) in (None, FAILED):
            return
        if holder is not previous:  # a worker that restores the conversation takes its row over
            await t.time("session row (take-over)", asyncio.to_thread(take_over, holder.db, sid, holder.worker_id))
        await turn_row(
            holder, t, sid, seq, dt.datetime.now(dt.UTC), ("is there an outage in my area", OUTAGE_ANSWER, "outage")
        )
        for k in range(audits):
            if k % max(1, turns) == seq - 1:
                await t.time("audit append", asyncio.to_thread(holder.audit.append, _audit_event(sid, k)))
        saved = await t.time("snapshot save", holder.snapshots.save(sid, blob, version, token))
        if saved is FAILED:
            return
        version = int(saved)
    await asyncio.sleep(gap)
    token = secrets.token_hex(8)  # the caller's goodbye ends it: a last turn, and the snapshot is forgotten
    if await t.time("snapshot checkout", holder.snapshots.checkout(sid, token, version)) in (None, FAILED):
        return
    await t.time("snapshot delete", holder.snapshots.delete(sid, token))
    await t.time(
        "session row (end)",
        asyncio.to_thread(
            holder.writer.session_ended,
            session_id=sid,
            outcome="resolved",
            reason="caller_left",
            at=dt.datetime.now(dt.UTC),
        ),
    )


async def heartbeats(w: SimWorker, t: Timings, deadline: float, rng: random.Random) -> None:
    """A worker's heartbeat, as `AppState` and `WorkerLiveness` do it: the directory and the call slots in
    Redis, the worker's row and a repair pass (cluster-wide while it holds the reaper's lease) in PostgreSQL."""
    await asyncio.sleep(rng.uniform(0, HEARTBEAT_S))
    while time.monotonic() < deadline:
        await t.time("heartbeat: directory", w.directory.announce(w.info()))
        await t.time("heartbeat: slot renewal", w.calls.renew())
        await t.time("heartbeat: worker row", w.liveness.beat())
        await t.time("heartbeat: repair pass", w.liveness.repair())
        await asyncio.sleep(HEARTBEAT_S)


def targets(load: Load, workers: int) -> dict[str, float]:
    """Operations per second the profile asks for, by kind (what the generator should achieve)."""
    p = load.profile
    voice = load.calls * (1 - load.chat_share) / p.call_s  # voice calls started per second
    chats = load.calls * load.chat_share / p.chat_s
    escalations = voice * load.escalate_share
    out = {
        "admit": voice,
        "release": voice,
        "session row (start)": voice + chats,
        "session row (end)": voice + chats,
        "turn row": voice * p.turns + chats * p.chat_turns,
        "voice-turn row": voice * min(p.turns, p.voice_turns),
        "session row (verified)": voice if p.verified >= 0.5 else 0.0,
        "audit append": voice * p.audit_events + chats * p.chat_audit_events,
        "snapshot create": chats,
        "snapshot checkout": chats * (p.chat_turns + 1),  # its turns and the one that ends it
        "snapshot save": chats * p.chat_turns,
        "snapshot delete": chats,
        "session row (take-over)": chats * p.chat_turns * (workers - 1) / workers,  # a turn on another worker
        "desk claim": escalations * 5,
        # two events to the desk agent's worker, two broadcasts that every worker (the sender too) receives
        "desk event (delivered)": escalations * (2 + 2 * workers),
    }
    for kind in ("directory", "slot renewal", "worker row", "repair pass"):
        out[f"heartbeat: {kind}"] = workers / HEARTBEAT_S
    return {k: v for k, v in out.items() if v > 0}


def pg_processes(db_url: str) -> int | None:
    """The pid of the PostgreSQL server's postmaster (the parent of this connection's backend), if local."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            # asked while the connection is open: its backend exits when the connection closes
            try:
                parent = psutil.Process(backend).parent()
            except psutil.Error:
                return None
    finally:
        engine.dispose()
    return parent.pid if parent is not None else None


def resources(sampler: ProcessTreeSampler | None, since: float, until: float) -> dict[str, Any]:
    if sampler is None:
        return {"cpu_mean_pct": None, "cpu_s": None, "rss_max_mib": None}
    s = sampler.summary(since, until)
    cpu_s = None if s.cpu_mean_pct is None else round(s.cpu_mean_pct / 100 * (until - since), 1)
    return {"cpu_mean_pct": s.cpu_mean_pct, "cpu_s": cpu_s, "rss_max_mib": s.rss_max_mib, "samples": s.samples}


async def finish(pool: ThreadPoolExecutor) -> None:
    """Wait (off the event loop) until the work already handed to `pool` is done; a new default pool then."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def wait() -> None:
        pool.shutdown(wait=True)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=wait, daemon=True).start()
    await done.wait()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=THREADS_PER_WORKER))


@dataclass(frozen=True)
class Share:
    """What one generator process drives: the simulated workers `n % processes == index` and their
    conversations, from `start_at` (CLOCK_MONOTONIC, one clock for every process of the machine)."""

    index: int
    processes: int
    load: Load
    redis_url: str
    db_url: str


def warmup_of(load: Load) -> float:
    """How long the load ramps up before it is measured: the longest conversation. The first conversation
    of each slot starts at a random point of that, so that starts are spread evenly; once a conversation's
    length has passed the load is steady."""
    return max(load.profile.call_s, load.profile.chat_s if load.chat_share else 0.0)


async def drive(share: Share, ready: Any, start_at: Any) -> dict[str, Any]:
    """One generator process: start its simulated workers, wait for the others (`ready`, a barrier, twice:
    set up, then `start_at` set), drive its conversations and heartbeats, and give back what it timed."""
    load = share.load
    workers_n = max(2, math.ceil(load.calls / load.calls_per_worker))
    mine = [n for n in range(workers_n) if n % share.processes == share.index]
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=min(256, len(mine) * THREADS_PER_WORKER))
    loop.set_default_executor(pool)
    timings = Timings()
    workers = {n: await start_worker(n, share.redis_url, share.db_url, timings) for n in mine}
    local = list(workers.values())
    await asyncio.to_thread(ready.wait)  # every process has its workers
    await asyncio.to_thread(ready.wait)  # and the start is set
    begun = float(start_at.value)
    ended = begun + warmup_of(load) + load.duration_s
    await asyncio.sleep(max(0.0, begun - time.monotonic()))
    conversations = Counter[str]()
    rng = random.Random(f"{load.seed}:heartbeats:{share.index}")

    async def conversation_slot(i: int) -> None:
        """One of the concurrent conversations: back to back until the end."""
        own = random.Random(f"{load.seed}:{i}")
        chat = i < round(load.calls * load.chat_share)
        w = workers[i % workers_n]
        peer = local[(local.index(w) + 1) % len(local)]  # a desk agent signed in on another worker
        await asyncio.sleep(own.uniform(0, load.profile.chat_s if chat else load.profile.call_s))
        while time.monotonic() < ended:
            conversations["chat" if chat else "voice"] += 1
            if chat:
                await chat_conversation(w, local, load, timings, own)
            else:
                await voice_conversation(w, peer, load, timings, own)

    me = psutil.Process()
    tasks = [asyncio.create_task(conversation_slot(i)) for i in range(load.calls) if i % workers_n in workers]
    tasks += [asyncio.create_task(heartbeats(w, timings, ended, rng)) for w in local]
    await asyncio.sleep(max(0.0, begun + warmup_of(load) - time.monotonic()))
    cpu_before = me.cpu_times()
    await asyncio.sleep(max(0.0, ended - time.monotonic()))
    cpu_after = me.cpu_times()
    for task in tasks:  # conversations still going are cut off: what is left in the stores is throwaway
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await finish(pool)  # database work already in a thread finishes
    for w in local:
        await stop_worker(w)
    return {
        "done": dict(timings.done),
        "errors": timings.errors,
        "first_error": timings.first_error,
        "conversations": dict(conversations),
        "cpu_s": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
    }


def generator_process(share: Share, ready: Any, start_at: Any, results: Any) -> None:
    """The entry point of a generator process: its part of the load; what it timed goes to `results`."""
    try:
        results.put(asyncio.run(drive(share, ready, start_at)))
    except BaseException as exc:
        ready.abort()  # the others do not wait for this one
        results.put({"crashed": f"generator process {share.index}: {type(exc).__name__}: {exc}"})
        raise


async def generate(load: Load, redis_url: str, db_url: str, processes: int) -> dict[str, Any]:
    """Drive `load.calls` conversations against `redis_url` and `db_url` from `processes` generator
    processes for `load.duration_s` (after the ramp); the report."""
    workers_n = max(2, math.ceil(load.calls / load.calls_per_worker))
    processes = max(1, min(processes, workers_n))
    db = Database(db_url)
    await asyncio.to_thread(db.migrate)
    db.dispose()
    probe = aioredis.Redis.from_url(redis_url)
    redis_pid = int((await probe.info("server"))["process_id"])
    await probe.aclose()
    pg_pid = await asyncio.to_thread(pg_processes, db_url)
    samplers = {"redis_server": ProcessTreeSampler(redis_pid)}
    if pg_pid is not None:
        samplers["postgres"] = ProcessTreeSampler(pg_pid)
    context = multiprocessing.get_context("spawn")  # no forked event loop, pools or threads
    ready, start_at, results = context.Barrier(processes + 1), context.Value("d", 0.0), context.Queue()
    children = [
        context.Process(
            target=generator_process,
            args=(Share(k, processes, load, redis_url, db_url), ready, start_at, results),
            name=f"voxgate-bench-generator-{k}",
        )
        for k in range(processes)
    ]
    for child in children:
        child.start()
    try:
        await asyncio.to_thread(ready.wait, SETUP_TIMEOUT_S)  # every generator has its workers
        start_at.value = time.monotonic() + 1.0
        for sampler in samplers.values():
            sampler.start()
        await asyncio.to_thread(ready.wait, SETUP_TIMEOUT_S)
    except threading.BrokenBarrierError:
        pass  # a generator crashed: its report below says why
    wait_s = warmup_of(load) + load.duration_s + SETUP_TIMEOUT_S
    parts = [await asyncio.to_thread(results.get, True, wait_s) for _ in children]
    for child in children:
        await asyncio.to_thread(child.join, SETUP_TIMEOUT_S)
    for sampler in samplers.values():
        await sampler.stop()
    crashed = [p["crashed"] for p in parts if "crashed" in p]
    if crashed:
        raise SystemExit("; ".join(crashed))
    timings = Timings()
    conversations: Counter[str] = Counter()
    for part in parts:
        for kind, pairs in part["done"].items():
            timings.done[kind].extend(pairs)
        timings.errors.extend(part["errors"])
        for kind, error in part["first_error"].items():
            timings.first_error.setdefault(kind, error)
        conversations.update(part["conversations"])
    started = start_at.value + warmup_of(load)
    ended = started + load.duration_s
    latencies, errors = timings.between(started, ended)
    target = targets(load, workers_n)
    ops = {}
    for kind in sorted(set(target) | set(latencies)):
        values = latencies.get(kind, np.zeros(0))
        ops[kind] = {
            "target_per_s": round(target.get(kind, 0.0), 1),
            "achieved_per_s": round(values.size / load.duration_s, 1),
            "p50_ms": round(float(np.percentile(values, 50)), 2) if values.size else None,
            "p99_ms": round(float(np.percentile(values, 99)), 2) if values.size else None,
            "errors": errors.get(kind, 0),
        }
    generator_cpu_s = sum(p["cpu_s"] for p in parts)
    return {
        "params": {
            "calls": load.calls,
            "duration_s": load.duration_s,
            "warmup_s": round(warmup_of(load), 1),
            "workers": workers_n,
            "processes": processes,
            "chat_share": load.chat_share,
            "escalate_share": load.escalate_share,
            "profile": load.profile.model_dump(),
        },
        "conversations_started": dict(conversations),
        "ops": ops,
        "total": {
            "target_per_s": round(sum(target.values()), 1),
            "achieved_per_s": round(sum(v.size for v in latencies.values()) / load.duration_s, 1),
            "errors": sum(errors.values()),
        },
        "first_errors": timings.first_error,
        "redis_server": resources(samplers.get("redis_server"), started, ended),
        "postgres": resources(samplers.get("postgres"), started, ended),
        "generator": {
            "cpu_s": round(generator_cpu_s, 1),
            "cpu_mean_pct": round(generator_cpu_s / load.duration_s * 100, 1),
        },
    }


@contextlib.contextmanager
def load_target(server_url: str, root: Path) -> Iterator[tuple[str, str]]:
    """A fresh database in the PostgreSQL server at `server_url` and a throwaway Redis: (redis, database) URLs."""
    cluster_helpers = harness(server_url)
    with cluster_helpers.fresh_database() as db_url, cluster_helpers.own_redis(root / "redis") as redis_url:
        yield redis_url, db_url


# ---- the command ---------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value}"


def print_result(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, load {m['load_average_1m']} at start")
    measured = result.get("measured")
    if measured:
        call, chat, idle = measured["voice_call"], measured["http_chat"], measured["idle_worker_per_s"]
        print(
            f"one real voice call ({call['call_s']} s), less the idle worker's own work "
            f"({idle['redis_commands']} Redis commands/s, {idle['pg_xact_commit']} PostgreSQL commits/s):"
        )
        print(
            f"  Redis: {call['redis_commands_total']} commands ({call['redis_commands_per_call_s']}/call-second), by part: "
            + ", ".join(f"{k} {v:g}" for k, v in call["redis_families"].items())
        )
        print("    by command: " + ", ".join(f"{k} {v:g}" for k, v in sorted(call["redis_commands"].items())))
        pg = call["pg"]
        print(
            f"  PostgreSQL: {pg.get('xact_commit', 0):g} commits ({call['pg_xact_per_call_s']}/call-second), rows "
            + ", ".join(f"{k} {v:g}" for k, v in pg.items() if "." in k and not k.endswith(".scans"))
        )
        print("    tables read (scans): " + ", ".join(f"{k[:-6]} {v:g}" for k, v in pg.items() if k.endswith(".scans")))
        print(
            f"one real HTTP chat ({chat['turns']} turns, {chat['saved_turns']} saved, snapshot "
            f"{chat['snapshot_bytes']} B): Redis {sum(chat['redis_families'].values()):g} commands ("
            + ", ".join(f"{k} {v:g}" for k, v in chat["redis_families"].items())
            + f"), PostgreSQL {chat['pg'].get('xact_commit', 0):g} commits, rows "
            + ", ".join(f"{k} {v:g}" for k, v in chat["pg"].items() if "." in k and not k.endswith(".scans"))
        )
    load = result["load"]
    p = load["params"]
    print(
        f"control plane: {p['calls']} concurrent conversations ({p['chat_share']:.0%} HTTP chats, "
        f"{p['escalate_share']:.0%} of calls to a desk agent) on {p['workers']} simulated workers in "
        f"{p['processes']} generator process(es), "
        f"measured for {p['duration_s']:g} s after {p['warmup_s']:g} s of ramp"
    )
    print(f"{'operation':<28}{'target/s':>10}{'done/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for kind, o in load["ops"].items():
        print(
            f"{kind:<28}{o['target_per_s']:>10}{o['achieved_per_s']:>10}{_fmt(o['p50_ms']):>9}"
            f"{_fmt(o['p99_ms']):>9}{o['errors']:>8}"
        )
    t = load["total"]
    print(f"{'all':<28}{t['target_per_s']:>10}{t['achieved_per_s']:>10}{'':>9}{'':>9}{t['errors']:>8}")
    for name in ("redis_server", "postgres", "generator"):
        r = load[name]
        rss = f", RSS max {r['rss_max_mib']} MiB" if r.get("rss_max_mib") is not None else ""
        print(f"{name}: CPU {_fmt(r['cpu_s'])} s over the run ({_fmt(r['cpu_mean_pct'])} % of one core){rss}")
    for kind, error in load["first_errors"].items():
        print(f"  first error in {kind}: {error}")
    print(verdict(load))


def verdict(load: dict[str, Any]) -> str:
    """One line on what limited the run: the rate reached, and whether the generator itself was busy."""
    t, gen, processes = load["total"], load["generator"], load["params"]["processes"]
    reached = t["achieved_per_s"] / t["target_per_s"] * 100 if t["target_per_s"] else 0.0
    line = f"reached {reached:.0f} % of the target rate"
    if reached < 95 and gen["cpu_mean_pct"] >= 80 * processes:
        line += (
            f"; the generator was busy ({gen['cpu_mean_pct']} % for {processes} process(es)): its own event loops set "
            "the pace, so the latencies include its queueing; give it more cores (--processes) or fewer calls"
        )
    return line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", type=int, default=1000, help=f"concurrent conversations (default 1000, at most {MAX_CALLS})"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument(
        "--calls-per-worker", type=int, default=25, help="conversations per simulated worker (default 25)"
    )
    parser.add_argument(
        "--chat-share", type=float, default=0.2, help="share of conversations that are HTTP chats (0.2)"
    )
    parser.add_argument("--escalate-share", type=float, default=0.1, help="share of calls handed to a desk agent (0.1)")
    parser.add_argument(
        "--processes", type=int, default=2, help="generator processes, each with its share of the workers (default 2)"
    )
    parser.add_argument("--chat-seconds", type=float, default=60.0, help="how long an HTTP chat lasts (default 60)")
    parser.add_argument("--no-warm-up", action="store_true", help="measure the worker's first call (scripts loading)")
    parser.add_argument("--skip-measure", action="store_true", help="no real call: the load at MEASURED_PROFILE")
    parser.add_argument(
        "--idle",
        type=float,
        default=30.0,
        help="seconds the idle worker is watched, its work then taken out of a call's (default 30; shorter: rougher)",
    )
    parser.add_argument("--database-url", help="a PostgreSQL server to create the benchmark's databases in")
    parser.add_argument("--pg-port", type=int, help="the throwaway PostgreSQL's port (default: a free one)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= MAX_CALLS:
        parser.error(f"--calls must be 1..{MAX_CALLS}")
    if not 1 <= args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be 1..{MAX_DURATION_S:g} seconds")
    if not 1 <= args.calls_per_worker <= 1000:
        parser.error("--calls-per-worker must be 1..1000")
    for name in ("chat_share", "escalate_share"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    if not 1 <= args.processes <= 64:
        parser.error("--processes must be 1..64")
    if not 1 <= args.chat_seconds <= 3600:
        parser.error("--chat-seconds must be 1..3600")
    if not 2 <= args.idle <= 600:
        parser.error("--idle must be 2..600 seconds")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure (unless skipped), then load; everything started here is stopped."""
    result: dict[str, Any] = {"machine": machine()}
    with (
        tempfile.TemporaryDirectory(prefix="voxgate-bench-control.") as tmp,
        postgres_server(args.database_url, args.pg_port) as server_url,
    ):
        measured = MEASURED_PROFILE
        if not args.skip_measure:
            # alert evaluation, a worker's own periodic work, is kept out of the windows (it is not per call)
            quiet = {"VOXGATE_ALERT_INTERVAL_S": "3600"}
            with bench_cluster(server_url, 1, Path(tmp) / "measure", quiet) as cluster:
                result["measured"] = asyncio.run(measure(cluster, args.idle, warm_up=not args.no_warm_up))
            measured = result["measured"]["profile"]
        load = Load(
            calls=args.calls,
            duration_s=args.duration,
            calls_per_worker=args.calls_per_worker,
            chat_share=args.chat_share,
            escalate_share=args.escalate_share,
            profile=CallProfile(**measured, chat_s=args.chat_seconds),
        )
        with load_target(server_url, Path(tmp)) as (redis_url, db_url):
            result["load"] = asyncio.run(generate(load, redis_url, db_url, args.processes))
    return result


def main() -> None:
    args = parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_result(result)


if __name__ == "__main__":
    main()
