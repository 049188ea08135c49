"""The worker directory: which workers are up, where they can be reached, and how busy they are.

Each worker announces itself with every heartbeat, and at once when it starts to drain. In a
cluster (`RedisDirectory`) the announcement is a Redis hash that expires after `ttl_s` (about three
heartbeats), so a worker that dies drops out of the list on its own, plus a sorted set that indexes
the hashes:

    workers:index     sorted set: worker id → when it last announced itself (ms)
    workers:<id>      hash: the fields of `WorkerInfo`; expires ttl_s after the last announcement

A single worker (`LocalDirectory`) lists only itself, as it is at the moment it is asked.
Nothing personal is announced: counts, addresses of workers, versions.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from voxgate.clock import Clock, utcnow
from voxgate.cluster.redis import Cluster, reaching

__all__ = ["CpuLoad", "LocalDirectory", "RedisDirectory", "WorkerDirectory", "WorkerInfo"]

log = logging.getLogger("voxgate.cluster")


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself in the directory."""

    id: str  # its id in the `workers` table (store/liveness.py)
    environment: str
    url: str  # how other workers reach it (settings.advertise_url, else http://host:port)
    capacity: int  # concurrent calls it accepts
    active_calls: int
    pending_sockets: int  # voice sockets open but not started yet
    live_sessions: int  # chat sessions it holds
    load: float  # its process's CPU use over the last interval, % of one core
    draining: bool
    version: str
    started_at: str  # ISO 8601, UTC
    seen_at: str  # ISO 8601, UTC: when it announced this

    def as_fields(self) -> dict[str, str]:
        """The Redis hash's fields."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> WorkerInfo | None:
        """A directory entry read back from Redis (None when it is incomplete or malformed)."""
        text = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        try:
            return cls(
                id=text["id"],
                environment=text["environment"],
                url=text["url"],
                capacity=int(text["capacity"]),
                active_calls=int(text["active_calls"]),
                pending_sockets=int(text["pending_sockets"]),
                live_sessions=int(text["live_sessions"]),
                load=float(text["load"]),
                draining=text["draining"] == "1",
                version=text["version"],
                started_at=text["started_at"],
                seen_at=text["seen_at"],
            )
        except (KeyError, ValueError):
            return None

    def as_dict(self) -> dict[str, Any]:
        """The entry as JSON for `GET /api/cluster`."""
        return dataclasses.asdict(self)


class WorkerDirectory(Protocol):
    """Where workers announce themselves and are listed."""

    async def announce(self, info: WorkerInfo) -> None:
        """Say that this worker is up, as `info` describes it (with every heartbeat)."""
        ...

    async def workers(self) -> list[WorkerInfo]:
        """The workers that announced themselves recently, by environment and start."""
        ...

    async def leave(self, worker_id: str) -> None:
        """This worker stops: take it off the list now."""
        ...


class LocalDirectory:
    """One worker on its own: the list is this worker, as `snapshot()` describes it when asked."""

    def __init__(self, snapshot: Callable[[], WorkerInfo | None]) -> None:
        self.snapshot = snapshot

    async def announce(self, info: WorkerInfo) -> None:
        """Nothing to share: the list is read from the worker itself."""

    async def workers(self) -> list[WorkerInfo]:
        """This worker (none before it has registered)."""
        info = self.snapshot()
        return [info] if info is not None else []

    async def leave(self, worker_id: str) -> None:
        """Nothing to take off."""


class RedisDirectory:
    """The directory in Redis: a hash per worker that expires `ttl_s` after its last announcement."""

    def __init__(self, cluster: Cluster, *, ttl_s: float, clock: Clock = utcnow) -> None:
        self.cluster = cluster
        self.ttl_s = ttl_s
        self.clock = clock

    @property
    def _index(self) -> str:
        return self.cluster.key("workers", "index")

    def _entry(self, worker_id: str) -> str:
        return self.cluster.key("workers", worker_id)

    async def announce(self, info: WorkerInfo) -> None:
        """Write this worker's hash and renew its expiry, in one transaction. RedisUnavailable when
        Redis cannot be reached."""
        ttl_ms = max(1, int(self.ttl_s * 1000))
        seen_ms = int(self.clock().timestamp() * 1000)
        with reaching("announcing this worker"):
            async with self.cluster.client.pipeline(transaction=True) as pipe:
                pipe.delete(self._entry(info.id))  # no field of an older announcement survives
                pipe.hset(self._entry(info.id), mapping=info.as_fields())  # type: ignore[arg-type]
                pipe.pexpire(self._entry(info.id), ttl_ms)
                pipe.zadd(self._index, {info.id: seen_ms})
                await pipe.execute()

    async def workers(self) -> list[WorkerInfo]:
        """The workers whose announcement has not expired; index entries of those that have are
        dropped. RedisUnavailable when Redis cannot be reached."""
        client = self.cluster.client
        with reaching("listing workers"):
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in await client.zrange(self._index, 0, -1)]
            if not ids:
                return []
            async with client.pipeline(transaction=False) as pipe:
                for worker_id in ids:
                    pipe.hgetall(self._entry(worker_id))
                raws = await pipe.execute()
            found: list[WorkerInfo] = []
            gone: list[str] = []
            for worker_id, raw in zip(ids, raws, strict=True):
                info = WorkerInfo.from_fields(raw) if raw else None
                if info is None:
                    gone.append(worker_id)
                else:
                    found.append(info)
            if gone:
                await client.zrem(self._index, *gone)
        return sorted(found, key=lambda w: (w.environment, w.started_at, w.id))

    async def leave(self, worker_id: str) -> None:
        """Take this worker off the list. RedisUnavailable when Redis cannot be reached."""
        with reaching("taking this worker off the directory"):
            async with self.cluster.client.pipeline(transaction=True) as pipe:
                pipe.delete(self._entry(worker_id))
                pipe.zrem(self._index, worker_id)
                await pipe.execute()


class CpuLoad:
    """This process's CPU use (`time.process_time`, every thread) as a percentage of one core, over
    the interval since the previous reading; a reading sooner than `min_interval_s` after the last
    repeats it (too short an interval says nothing)."""

    def __init__(
        self,
        *,
        min_interval_s: float = 0.5,
        cpu: Callable[[], float] = time.process_time,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval_s = min_interval_s
        self._cpu = cpu
        self._wall = wall
        self._last = (cpu(), wall())
        self.percent = 0.0

    def read(self) -> float:
        """The CPU use since the previous reading, in % of one core (rounded to 0.1)."""
        cpu, wall = self._cpu(), self._wall()
        elapsed = wall - self._last[1]
        if elapsed >= self.min_interval_s:
            self.percent = round(max(0.0, (cpu - self._last[0]) / elapsed * 100.0), 1)
            self._last = (cpu, wall)
        return self.percent
