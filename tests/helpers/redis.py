"""The throwaway Redis a run has (`VOXGATE_TEST_REDIS_URL`, started by scripts/run-tests.sh): each
pytest-xdist worker uses its own numbered database in it, emptied for each test that asks."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.helpers.databases import WORKER
from tests.helpers.paths import ROOT

REDIS_URL = os.environ.get("VOXGATE_TEST_REDIS_URL")


def worker_redis_url() -> str:
    """This xdist worker's database in the run's Redis (database 1 + the worker's number)."""
    assert REDIS_URL, "VOXGATE_TEST_REDIS_URL is not set: run the tests with scripts/run-tests.sh (make test)"
    number = int(WORKER[2:]) + 1 if WORKER.startswith("gw") else 1
    base = REDIS_URL.rsplit("/", 1)[0]
    return f"{base}/{number}"


def stop_redis(url: str, directory: Path) -> None:
    """Stop the redis-server that scripts/redis-throwaway.sh started in `directory` (at `url`) and wait
    until its port refuses connections."""
    subprocess.run([str(ROOT / "scripts" / "redis-throwaway.sh"), "stop", str(directory)], check=True)
    port = urlsplit(url).port
    assert port is not None, url
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        assert time.monotonic() < deadline, "Redis did not stop"
        time.sleep(0.05)
