"""The throwaway Redis a run has (`VOXGATE_TEST_REDIS_URL`, started by scripts/run-tests.sh): each
pytest-xdist worker uses its own numbered database in it, emptied for each test that asks."""

from __future__ import annotations

import os

from tests.helpers.databases import WORKER

REDIS_URL = os.environ.get("VOXGATE_TEST_REDIS_URL")


def worker_redis_url() -> str:
    """This xdist worker's database in the run's Redis (database 1 + the worker's number)."""
    assert REDIS_URL, "VOXGATE_TEST_REDIS_URL is not set: run the tests with scripts/run-tests.sh (make test)"
    number = int(WORKER[2:]) + 1 if WORKER.startswith("gw") else 1
    base = REDIS_URL.rsplit("/", 1)[0]
    return f"{base}/{number}"
