"""Benchmark of a warm voice handoff between two workers: the added one-way latency of 20 ms audio frames
bridged through the shared desk (Redis pub/sub), caller → desk agent and desk agent → caller.

Two processes, as two workers: the caller's worker (its desk holds the handoff, the desk agent is a
`RemoteLink` to the other worker) and the desk agent's worker (its desk holds the desk agent's socket).
Each sends one 20 ms frame (16 kHz PCM16, 640 bytes) per call every 20 ms, through the same path a call
takes — `Desk.caller_audio` → Redis → `DeskRelay.on_audio` → the desk agent's link, and
`Desk.agent_audio` → Redis → the caller's leg — and stamps each frame with CLOCK_MONOTONIC (shared by
the processes of one machine) in its first 8 bytes; the receiving side reads the stamp at arrival. What
is measured is what the cluster adds: in one worker the same hop is a function call.

    python bench/desk_bridge.py                       # 1 call, 1,500 frames each way (30 s)
    python bench/desk_bridge.py --calls 20 --frames 1000
    python bench/desk_bridge.py --redis-url redis://127.0.0.1:6379/0 --json

Without --redis-url it starts a throwaway redis-server (scripts/redis-throwaway.sh) on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

from voxgate.bundle.models import HandoffMessages, Queue  # noqa: E402
from voxgate.cluster.desk import RedisDeskState  # noqa: E402
from voxgate.cluster.redis import Cluster  # noqa: E402
from voxgate.handoff.desk import Desk  # noqa: E402
from voxgate.handoff.live import DeskAgent, LiveHandoff  # noqa: E402
from voxgate.handoff.relay import RemoteLink  # noqa: E402
from voxgate.store.db import Database  # noqa: E402
from voxgate.voice.types import FRAME_BYTES, FRAME_MS  # noqa: E402

CALLER_WORKER, AGENT_WORKER = "bench-caller", "bench-agent"
ENVIRONMENT = "bench"
WARM_UP_FRAMES = 25  # the first half second: connections opening, scripts loading


def _frame(seq: int) -> bytes:
    """A 20 ms frame stamped with the time it is sent (and its number)."""
    return struct.pack("<qq", time.monotonic_ns(), seq) + bytes(FRAME_BYTES - 16)


class _Arrivals:
    """Latency of each frame received (ms), after the warm-up."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.received = 0

    def take(self, pcm16: bytes) -> None:
        sent, seq = struct.unpack_from("<qq", pcm16)
        self.received += 1
        if seq >= WARM_UP_FRAMES:
            self.ms.append((time.monotonic_ns() - sent) / 1e6)


class _AgentLink:
    """The desk agent's socket, as their worker's desk sees it: frames are timed as they arrive."""

    def __init__(self, arrivals: _Arrivals):
        self.arrivals = arrivals

    def send(self, message: dict[str, Any]) -> None:
        pass

    def send_audio(self, pcm16: bytes) -> None:
        self.arrivals.take(pcm16)

    async def close(self, code: int, reason: str) -> None:
        pass


class _CallerLeg:
    """The caller's side of the handoff, as the caller's worker's desk sees it: frames are timed."""

    channel = "voice"
    gone = False

    def __init__(self, arrivals: _Arrivals):
        self.arrivals = arrivals

    async def agent_audio(self, pcm16: bytes) -> None:
        self.arrivals.take(pcm16)


async def _side(role: str, redis_url: str, calls: int, frames: int, start_at: float, db_path: str) -> dict[str, Any]:
    cluster = Cluster.from_url(redis_url)
    me, other = (CALLER_WORKER, AGENT_WORKER) if role == "caller" else (AGENT_WORKER, CALLER_WORKER)
    desk = Desk(Database(f"sqlite:///{db_path}"), environment=ENVIRONMENT, shared=RedisDeskState(cluster, ENVIRONMENT))
    await desk.shared.start(me, desk.relay)  # events and audio only: no renewals, nothing else moves
    arrivals = _Arrivals()
    sends = []
    for i in range(calls):
        user, hid = f"desk-agent-{i}", i + 1
        if role == "caller":
            agent = DeskAgent(user, user, user, RemoteLink(desk.shared, other, user), worker=other, status="busy")
            session = SimpleNamespace(id=f"bench-{i}", agent=SimpleNamespace(name="bench"))
            h = LiveHandoff(
                id=hid,
                row_id=None,
                session=session,  # type: ignore[arg-type]
                queue="general",
                config=Queue(),
                messages=HandoffMessages(),
                leg=_CallerLeg(arrivals),  # type: ignore[arg-type]
                packet={},
            )
            h.status, h.agent, agent.handoff = "accepted", agent, h
            desk.handoffs[hid] = h
            sends.append(lambda seq, h=h: desk.caller_audio(h, _frame(seq)))
        else:
            agent = DeskAgent(user, user, user, _AgentLink(arrivals), status="busy")
            agent.remote = (other, hid)
            desk.agents[user] = agent
            sends.append(lambda seq, agent=agent: desk.relay.audio_to_caller(agent, _frame(seq)))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    started = time.monotonic()
    for seq in range(frames):
        for send in sends:
            send(seq)
        await asyncio.sleep(max(0.0, started + (seq + 1) * FRAME_MS / 1000 - time.monotonic()))
    await asyncio.sleep(0.5)  # the last frames in flight
    dropped = desk.shared.dropped_audio  # type: ignore[attr-defined]
    await desk.shared.close()
    await cluster.close()
    return {"role": role, "received": arrivals.received, "ms": arrivals.ms, "dropped": dropped}


def _run_side(role: str, redis_url: str, calls: int, frames: int, start_at: float, db_path: str, out: Any) -> None:
    out.put(asyncio.run(_side(role, redis_url, calls, frames, start_at, db_path)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _summary(ms: list[float], sent: int, received: int) -> dict[str, Any]:
    a = np.array(ms) if ms else np.zeros(1)
    return {
        "frames_sent": sent,
        "frames_received": received,
        "frames_timed": len(ms),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
    }


def bench(redis_url: str, calls: int, frames: int) -> dict[str, Any]:
    """Run both sides at once; the latency each direction adds."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 8.0  # both processes import voxgate first
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        Database(f"sqlite:///{db}").migrate()
        procs = [
            ctx.Process(target=_run_side, args=(role, redis_url, calls, frames, start_at, db, out))
            for role in ("caller", "agent")
        ]
        for p in procs:
            p.start()
        results = {r["role"]: r for r in (out.get(timeout=frames * FRAME_MS / 1000 + 120) for _ in procs)}
        for p in procs:
            p.join(timeout=30)
    sent = calls * frames
    return {
        "calls": calls,
        "frame_ms": FRAME_MS,
        "transport": "redis pub/sub",
        # the agent's side receives what the caller's side sends, and the other way round
        "caller_to_desk_agent": _summary(results["agent"]["ms"], sent, results["agent"]["received"]),
        "desk_agent_to_caller": _summary(results["caller"]["ms"], sent, results["caller"]["received"]),
        "dropped": results["agent"]["dropped"] + results["caller"]["dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="a Redis to use (default: a throwaway redis-server on a free port)")
    parser.add_argument("--calls", type=int, default=1, help="calls bridged at once (default 1)")
    parser.add_argument("--frames", type=int, default=1500, help="frames each way per call (default 1500: 30 s)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    throwaway = None
    url = args.redis_url
    if url is None:
        throwaway = tempfile.mkdtemp(prefix="voxgate-bench-redis.")
        script = str(REPO / "scripts" / "redis-throwaway.sh")
        url = subprocess.run(
            [script, "start", throwaway, str(_free_port())], check=True, capture_output=True, text=True
        )
        url = url.stdout.strip()
    try:
        result = bench(url, args.calls, args.frames)
    finally:
        if throwaway is not None:
            subprocess.run([str(REPO / "scripts" / "redis-throwaway.sh"), "stop", throwaway], check=False)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"warm voice handoff between two workers ({result['transport']}), {args.calls} call(s), 20 ms frames")
    print(f"{'direction':<24}{'frames':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for key, label in (
        ("caller_to_desk_agent", "caller -> desk agent"),
        ("desk_agent_to_caller", "desk agent -> caller"),
    ):
        r = result[key]
        print(f"{label:<24}{r['frames_timed']:>8}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['p99_ms']:>9}{r['max_ms']:>9}")
    lost = sum(
        result[k]["frames_sent"] - result[k]["frames_received"]
        for k in ("caller_to_desk_agent", "desk_agent_to_caller")
    )
    print(f"frames lost: {lost} (dropped behind a slow Redis: {result['dropped']})")


if __name__ == "__main__":
    main()
