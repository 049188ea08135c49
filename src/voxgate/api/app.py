"""The FastAPI application: wires settings, database, agent runtimes and routers together."""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources
from typing import AsyncIterator, Sequence

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from voxgate import __version__
from voxgate.api import conversations, records
from voxgate.api.state import AppState
from voxgate.config import Settings
from voxgate.runtime.engine import AgentRuntime
from voxgate.spec.models import BundleSource
from voxgate.store.db import Database
from voxgate.store.recorder import SqlRecorder


def create_app(settings: Settings, bundles: Sequence[BundleSource]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.db_url)
        await asyncio.to_thread(db.migrate)
        state = AppState(settings=settings, db=db)
        recorder = SqlRecorder(db)
        for bundle in bundles:
            state.runtimes[bundle.agent.name] = await asyncio.to_thread(
                AgentRuntime, bundle, environment=settings.environment, recorder=recorder
            )
        app.state.voxgate = state
        reaper = asyncio.create_task(state.sessions.reap_forever())
        try:
            yield
        finally:
            reaper.cancel()
            await state.sessions.close_all("server_shutdown")
            for rt in state.runtimes.values():
                await rt.aclose()
            db.dispose()

    app = FastAPI(title="voxgate", version=__version__, lifespan=lifespan)
    app.include_router(conversations.router)
    app.include_router(records.router)

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, object]:
        state: AppState = app.state.voxgate
        return {"status": "ok", "version": __version__, "agents": sorted(state.runtimes),
                "live_sessions": len(state.sessions)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return resources.files("voxgate.console").joinpath("static/chat.html").read_text("utf-8")

    return app
