"""The text channel for the command line: an interactive prompt or a scripted list of turns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from typing import Any, AsyncIterator, Sequence

from voxgate.config import Settings
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder, SessionRecorder
from voxgate.spec.models import BundleSource


@contextlib.contextmanager
def demo_backend_running() -> Any:
    """Start the Harbor demo backend on a free loopback port and point the agent at it."""
    try:
        from harbor_backend import BackgroundServer
    except ImportError:
        raise SystemExit(
            "the Harbor demo backend is not installed: pip install -e examples/harbor-telecom/backend"
        ) from None
    key = os.environ.get("HARBOR_API_KEY") or secrets.token_urlsafe(24)
    old = {k: os.environ.get(k) for k in ("HARBOR_API_KEY", "HARBOR_API_URL")}
    with tempfile.TemporaryDirectory(prefix="harbor-") as tmp:
        with BackgroundServer(os.path.join(tmp, "harbor.db"), key) as server:
            os.environ["HARBOR_API_KEY"] = key
            os.environ["HARBOR_API_URL"] = server.url
            try:
                yield server
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


@contextlib.asynccontextmanager
async def _recorder(settings: Settings, store: bool) -> AsyncIterator[SessionRecorder]:
    if not store:
        yield MemoryRecorder()
        return
    from voxgate.store.db import Database
    from voxgate.store.recorder import SqlRecorder

    db = Database(settings.db_url)
    await asyncio.to_thread(db.migrate)
    try:
        yield SqlRecorder(db)
    finally:
        db.dispose()


async def run_chat(
    bundle: BundleSource,
    settings: Settings,
    *,
    says: Sequence[str] | None,
    interactive: bool,
    as_json: bool,
    demo_backend: bool = False,
    store: bool = True,
    environment: str = "dev",
) -> dict[str, Any] | None:
    with demo_backend_running() if demo_backend else contextlib.nullcontext():
        async with _recorder(settings, store) as recorder:
            runtime = AgentRuntime(bundle, environment=environment, recorder=recorder)
            try:
                if interactive:
                    await _repl(runtime)
                    return None
                return await run_script(runtime, says or [])
            finally:
                await runtime.aclose()


async def run_script(runtime: AgentRuntime, says: Sequence[str], *, channel: str = "text") -> dict[str, Any]:
    """Run a scripted conversation and return the JSON document `voxgate chat --json` prints."""
    session = runtime.new_session(channel=channel)
    greeting = await session.start()
    turns = []
    for text in says:
        if session.ended:
            break
        result = await session.handle(text)
        turns.append(result.as_dict())
    if not session.ended:
        await session.close("script_end")
    return {
        "agent": runtime.agent.name,
        "session_id": session.id,
        "environment": runtime.environment,
        "greeting": greeting.text,
        "turns": turns,
        "outcome": session.outcome,
        "escalation": session.escalation,
    }


async def _repl(runtime: AgentRuntime) -> None:
    session = runtime.new_session(channel="text")
    greeting = await session.start()
    print(f"agent> {greeting.text}")
    print("(type your message; Ctrl-D or 'quit' to end)")
    while not session.ended:
        try:
            line = await asyncio.to_thread(input, "you> ")
        except EOFError:
            break
        if line.strip().lower() in {"quit", "exit"}:
            break
        result = await session.handle(line)
        print(f"agent> {result.text}")
        meta = f"[intent={result.intent or '-'} state={result.state}"
        if result.actions:
            meta += " actions=" + ",".join(f"{a['name']}:{a['status']}" for a in result.actions)
        print(meta + "]")
    outcome = await session.close("caller_left")
    print(f"(session {session.id} ended: {outcome})")
