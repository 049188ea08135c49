"""The text channel for the command line: an interactive prompt or a scripted list of turns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Any

from voxgate.bundle.models import BundleSource
from voxgate.config import Settings
from voxgate.governance.secrets import resolve_secret
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.recorder import MemoryRecorder, SessionRecorder


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
    from voxgate.compliance.recorder import sql_recorder
    from voxgate.store.db import Database

    db = Database(settings.db_url)
    await asyncio.to_thread(db.migrate)
    try:
        yield sql_recorder(db)
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
            runtime = AgentRuntime(bundle, environment=environment, recorder=recorder, secrets=resolve_secret)
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
        line = await asyncio.to_thread(read_line)
        if line is None:
            break
        result = await session.handle(line)
        print(f"agent> {result.text}")
        print(turn_meta(result.as_dict()))
    outcome = await session.close("caller_left")
    print(f"(session {session.id} ended: {outcome})")


def read_line() -> str | None:
    """One caller line from the terminal; None when the caller is done (Ctrl-D, quit, exit)."""
    try:
        line = input("you> ")
    except EOFError:
        return None
    return None if line.strip().lower() in {"quit", "exit"} else line


def turn_meta(turn: dict[str, Any]) -> str:
    """The `[intent=… state=… actions=…]` line the interactive chat prints under each reply."""
    meta = f"[intent={turn.get('intent') or '-'} state={turn.get('state')}"
    actions = turn.get("actions") or []
    if actions:
        meta += " actions=" + ",".join(f"{a.get('name')}:{a.get('status')}" for a in actions)
    return meta + "]"


def conversation_lines(doc: dict[str, Any], says: Sequence[str] = ()) -> list[str]:
    """A scripted conversation as `voxgate chat --say …` prints it without --json.

    One line per turn (`agent: …` for the greeting and every reply, `caller: …` for every caller
    line), then the outcome. `says` are the lines the script had, to tell which were never said
    because the conversation had already ended.
    """
    lines = []
    if doc.get("greeting"):
        lines.append(f"agent: {doc['greeting']}")
    turns = doc.get("turns") or []
    for i, turn in enumerate(turns):
        said = turn.get("user") or (says[i] if i < len(says) else "")
        lines.append(f"caller: {said}")
        lines.append(f"agent: {turn.get('agent') or '(no reply)'}")
    unsaid = len(says) - len(turns)
    if unsaid > 0:
        lines.append(f"(the conversation had ended: {unsaid} caller line(s) not said)")
    outcome = f"outcome: {doc.get('outcome') or 'unknown'}"
    escalation = doc.get("escalation")
    if isinstance(escalation, dict):
        details = [f"queue {escalation['queue']}"] if escalation.get("queue") else []
        if escalation.get("reason"):
            details.append(f"reason {escalation['reason']}")
        if details:
            outcome += " (" + ", ".join(details) + ")"
    if doc.get("session_id"):
        outcome += f"; session {doc['session_id']}"
    lines.append(outcome)
    return lines
