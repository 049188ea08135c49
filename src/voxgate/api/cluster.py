"""The workers of the cluster and each environment's calls against its limits: `GET /api/cluster`.

Every worker that announced itself within the last few heartbeats (from the Redis directory in a
cluster; a single worker lists itself) with its address, capacity, calls, sockets not started yet,
chat sessions, CPU load and whether it drains; and per environment the calls in progress against
`max_concurrent_calls` and today's calls (UTC) against `max_calls_per_day`. Authorised as
`cluster.read` in the worker's environment; workers and totals of environments the caller may not
read are left out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from voxgate.api.auth import Target, guard, readable_environments
from voxgate.api.state import AppState, get_state
from voxgate.cluster.directory import WorkerInfo
from voxgate.cluster.redis import RedisUnavailable
from voxgate.observe.usage import calls_today

__all__ = ["router", "workers_up"]

router = APIRouter(tags=["cluster"])


def worker_env(request: Request) -> Target:
    """The cluster view is authorised in the environment this worker serves."""
    return Target(environment=request.app.state.voxgate.settings.environment)


async def workers_up(state: AppState) -> int | None:
    """How many workers the directory lists now (None when it cannot be read)."""
    try:
        return len(await state.directory.workers())
    except RedisUnavailable:
        return None


async def _totals(state: AppState, environment: str, workers: list[WorkerInfo]) -> dict[str, Any]:
    """One environment's workers and calls against its limits."""
    config = state.governance.environments.get(environment)
    quotas = config.settings.quotas if config is not None else None
    if state.cluster_calls is not None:
        counts = await state.cluster_calls.counts(environment)
        active, today = counts.active, counts.today
    else:  # a single worker: its own lines, and the calls the database has of today
        active = sum(w.active_calls for w in workers)
        today = await asyncio.to_thread(calls_today, state.db, environment)
    return {
        "environment": environment,
        "workers": len(workers),
        "draining": sum(1 for w in workers if w.draining),
        "capacity": sum(w.capacity for w in workers),
        "active_calls": active,
        "max_concurrent_calls": quotas.max_concurrent_calls if quotas is not None else None,
        "calls_today": today,
        "max_calls_per_day": quotas.max_calls_per_day if quotas is not None else None,
    }


@router.get("/api/cluster")
async def cluster_view(
    state: AppState = Depends(get_state),
    principal: Any = Depends(guard("cluster.read", "GET", "/api/cluster", worker_env)),
) -> dict[str, Any]:
    """The workers up now and, per environment, calls against the limits (503 when Redis cannot be reached)."""
    workers = await state.directory.workers()
    found = list(dict.fromkeys([state.settings.environment, *(w.environment for w in workers)]))
    readable = set(await asyncio.to_thread(readable_environments, state, principal, "cluster.read", found))
    shown = [w for w in workers if w.environment in readable]
    environments = [
        await _totals(state, env, [w for w in shown if w.environment == env]) for env in found if env in readable
    ]
    return {
        "mode": "cluster" if state.cluster is not None else "single",
        "redis": state.cluster.url if state.cluster is not None else None,
        "worker": state.liveness.worker_id if state.liveness is not None else None,  # the one that answered
        "workers": [w.as_dict() for w in shown],
        "environments": environments,
    }
