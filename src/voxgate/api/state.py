"""What the API routers share: settings, database, runtimes per agent, live sessions."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import HTTPException, Request

from voxgate.config import Settings
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.registry import LocalSessions
from voxgate.store.db import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    runtimes: dict[str, AgentRuntime] = field(default_factory=dict)
    sessions: LocalSessions = field(default_factory=LocalSessions)

    def runtime(self, agent: str) -> AgentRuntime:
        rt = self.runtimes.get(agent)
        if rt is None:
            raise HTTPException(404, f"no agent named '{agent}' is served here")
        return rt


def get_state(request: Request) -> AppState:
    return request.app.state.voxgate  # type: ignore[no-any-return]
