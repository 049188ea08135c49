"""Workers that share one live-agent desk, for the tests: apps served in this process (each in its own
thread, with its own event loop and Redis connections, as processes would have) and a worker process a
test can kill -9 — on one PostgreSQL and one Redis, the desk shared through Redis with short renewals
(`BEAT_S`) so that a worker that stops drops out of the desk quickly (`TTL_S`).

The worker's desk is made here from the app's own services (its database, audit chain, metrics,
agents) and started with the worker's id, as the worker's start-up makes it when `redis_url` is set.

    python -m tests.helpers.desk_cluster --port P --database-url URL --redis-url URL --data-dir DIR
serves such a worker (for desk agents: it loads no agent; with --agents, for callers too) until it is
killed.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn
from fastapi import FastAPI

from tests.helpers import loopback
from tests.helpers.paths import HARBOR_AGENT, ROOT
from tests.helpers.redis import worker_redis_url
from tests.helpers.servers import START_TIMEOUT_S, child_env, free_port
from voxgate.api.app import create_app
from voxgate.bundle import BundleSource, load_bundle
from voxgate.cluster.desk import RedisDeskState
from voxgate.cluster.redis import Cluster
from voxgate.config import Settings
from voxgate.handoff.desk import Desk

#: the desk's renewals in these tests, and how long a silent worker's records outlive it
BEAT_S = 0.25
TTL_S = 2.0


def fresh_redis() -> str:
    """This xdist worker's Redis database, emptied."""
    url = worker_redis_url()
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def _variant(bundle: BundleSource, name: str, **queue: Any) -> BundleSource:
    copy = bundle.model_copy(deep=True)
    copy.agent.name = name
    general = copy.agent.escalation.queues["general"]
    for key, value in queue.items():
        setattr(general, key, value)
    return copy


def desk_bundles(bundle: BundleSource) -> list[BundleSource]:
    """The Harbor agent as the desk tests serve it: long timeouts, and one with a 1 s reconnect grace."""
    return [
        _variant(bundle, "harbor-support", timeout_s=60, offer_timeout_s=60),
        _variant(bundle, "harbor-brief-grace", timeout_s=60, offer_timeout_s=60, reconnect_grace_s=1),
    ]


def clustered(app: FastAPI, redis_url: str, *, beat_s: float = BEAT_S, ttl_s: float = TTL_S) -> FastAPI:
    """`app` with its desk shared through Redis at `redis_url` (renewed every `beat_s`)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        async with inner(application) as value:
            state = application.state.voxgate
            cluster = Cluster.from_url(redis_url)
            previous = state.desk
            state.desk = Desk(
                state.db,
                state.audit,
                environment=state.settings.environment,
                metrics=state.metrics,
                runtimes=lambda: list(state.runtimes.values()),
                shared=RedisDeskState(cluster, state.settings.environment, beat_s=beat_s, ttl_s=ttl_s),
            )
            await previous.close()
            await state.desk.start(state.liveness.worker_id)
            yield value  # (the app's own shutdown closes the desk)
        await cluster.close()

    app.router.lifespan_context = lifespan
    return app


def desk_worker_app(settings: Settings, redis_url: str, *, agents: bool = False) -> FastAPI:
    """A worker with its desk shared through Redis: for callers too when `agents` (it serves the
    `desk_bundles`), else for desk agents' sockets only (it serves what is released, which in these tests
    is nothing: no agent to load, a quicker start)."""
    bundles = desk_bundles(load_bundle(HARBOR_AGENT)) if agents else []
    return clustered(create_app(settings, bundles), redis_url)


class WorkerProcess:
    """A desk worker in its own process (`python -m tests.helpers.desk_cluster`), to kill -9."""

    def __init__(self, *, database_url: str, redis_url: str, data_dir: Path, log: Path, agents: bool = False):
        self.port = free_port()
        self.log = log
        args = [
            sys.executable,
            "-m",
            "tests.helpers.desk_cluster",
            f"--port={self.port}",
            f"--database-url={database_url}",
            f"--redis-url={redis_url}",
            f"--data-dir={data_dir}",
            *(["--agents"] if agents else []),
        ]
        env = child_env()
        with log.open("wb") as out:
            self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        """The worker's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        """Until the worker answers (its desk started with its start-up)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process.poll() is None, f"the worker exited: {self.log.read_text()[-3000:]}"
            try:
                if loopback.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the worker did not start: {self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def kill9(self) -> None:
        """Kill the worker at once: no shutdown, nothing cleaned up."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def worker_process(
    *, database_url: str, redis_url: str, data_dir: Path, log: Path, agents: bool = False
) -> Iterator[WorkerProcess]:
    """A desk worker process (serving the `desk_bundles` when `agents`), ready; killed at the end."""
    worker = WorkerProcess(database_url=database_url, redis_url=redis_url, data_dir=data_dir, log=log, agents=agents)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.kill9()


def main() -> None:
    """Serve a desk worker (see the module docstring)."""
    parser = argparse.ArgumentParser(description="A voxgate worker whose desk is shared through Redis (tests).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--agents", action="store_true", help="serve the desk_bundles (callers) too")
    args = parser.parse_args()
    settings = Settings(database_url=args.database_url, data_dir=args.data_dir, redis_url=args.redis_url)
    app = desk_worker_app(settings, args.redis_url, agents=args.agents)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
