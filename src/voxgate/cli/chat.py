"""`voxgate chat`: talk to an agent by text, run here from its directory or on a running worker
(`--url`) over its public conversation API (the same turn documents and output either way)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from voxgate.cli._common import echo_json, fail, load_agent, settings
from voxgate.cli.client import check_url, error_text, json_body, open_client, server_errors
from voxgate.cli.client import fail as server_fail


def chat(
    path: Annotated[
        Path | None,
        typer.Argument(help="Agent directory to run here (holds agent.yaml and topics/); or give --url instead."),
    ] = None,
    say: Annotated[
        list[str] | None, typer.Option("--say", "-s", help="A caller turn; repeat for a scripted conversation.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole conversation as JSON.")] = False,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Talk to an agent on a running worker instead, e.g. http://127.0.0.1:8601."),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="With --url: the agent's name (default: the one agent the worker serves)."),
    ] = None,
    demo_backend: Annotated[
        bool, typer.Option("--demo-backend", help="Start the Harbor demo backend in-process for this chat.")
    ] = False,
    store: Annotated[bool, typer.Option(help="Record the session in the database (a local chat).")] = True,
    env: Annotated[str, typer.Option(help="Environment name recorded with the session (a local chat).")] = "dev",
) -> None:
    """Talk to an agent by text: an interactive prompt, or a scripted run with --say (… --json).

    Give an agent directory to run the agent in this process, or --url (and --agent) to talk
    to one on a running worker over its conversation API. A scripted run prints one line per
    turn (agent: …, caller: …) and the outcome; --json prints the whole conversation.
    """
    # the conversation engine loads when a chat starts, not for every `voxgate` command
    from voxgate.channels.text import conversation_lines, run_chat

    if path is None and url is None:
        fail(
            "say which agent to talk to: an agent directory (voxgate chat DIR) or one on a running worker "
            "(voxgate chat --url URL --agent NAME)"
        )
    if path is not None and url is not None:
        fail("give an agent directory or --url, not both: DIR runs the agent here, --url talks to a worker")
    if url is not None:
        if demo_backend:
            fail("--demo-backend starts a backend for a local chat; a worker at --url uses its own")
        try:
            result = run_remote_chat(url, agent, says=say, interactive=not say)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    elif path is not None:  # one of the two is given (checked above)
        if agent is not None:
            fail("--agent names an agent on a worker at --url; a local chat runs the directory you give")
        bundle = load_agent(path)
        loaded = settings(secrets=True)
        try:
            result = asyncio.run(
                run_chat(
                    bundle,
                    loaded,
                    says=say,
                    interactive=not say,
                    as_json=as_json,
                    demo_backend=demo_backend,
                    store=store,
                    environment=env,
                )
            )
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    if result is None:
        return
    if as_json:
        echo_json(result)
    else:
        for line in conversation_lines(result, say or []):
            typer.echo(line)


class RemoteConversation:
    """One session on a running worker: POST /api/agents/{agent}/sessions, …/turns, …/end."""

    def __init__(self, url: str, agent: str | None, *, timeout: float = 60.0) -> None:
        self.url = check_url(url)
        self.client = open_client(self.url, timeout=timeout)
        self.agent = agent
        self.session_id: str | None = None
        self.ended = False
        self.outcome: str | None = None
        self.escalation: dict[str, Any] | None = None

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with server_errors(self.url):
            response = self.client.post(path, json=body)
        if response.status_code >= 400:
            server_fail(f"POST {self.url}{path}: {response.status_code} {error_text(response)}")
        data = json_body(response, self.url)
        if not isinstance(data, dict):
            server_fail(f"{self.url}{path} answered with something other than a JSON object: is it a voxgate server?")
        return data

    def _get(self, path: str) -> Any:
        with server_errors(self.url):
            response = self.client.get(path)
        if response.status_code >= 400:
            server_fail(f"GET {self.url}{path}: {response.status_code} {error_text(response)}")
        return json_body(response, self.url)

    def _choose_agent(self) -> str:
        served = [a.get("name") for a in self._get("/api/agents") if isinstance(a, dict)]
        if len(served) == 1 and served[0]:
            return str(served[0])
        listed = f" (it serves: {', '.join(str(n) for n in served)})" if served else ""
        server_fail(f"name the agent to talk to at {self.url} with --agent NAME{listed}")

    def start(self) -> str:
        """Start the session; return the greeting."""
        if self.agent is None:
            self.agent = self._choose_agent()
        data = self._post(f"/api/agents/{self.agent}/sessions")
        self.session_id = str(data.get("session_id"))
        return str(data.get("greeting") or "")

    def environment(self) -> str | None:
        health = self._get("/health")
        return health.get("environment") if isinstance(health, dict) else None

    def say(self, text: str) -> dict[str, Any]:
        """One caller turn; the turn document (the same as a local session's)."""
        turn = self._post(f"/api/sessions/{self.session_id}/turns", {"text": text})
        if turn.get("ended"):  # the server closed the session with this turn
            self.ended = True
            self.outcome = turn.get("outcome")
            self.escalation = turn.get("packet")
        return turn

    def end(self) -> str | None:
        """The caller leaves (unless the agent already ended the session); the outcome."""
        if not self.ended and self.session_id is not None:
            data = self._post(f"/api/sessions/{self.session_id}/end")
            self.ended = True
            self.outcome = data.get("outcome")
            self.escalation = data.get("escalation")
        return self.outcome

    def close(self) -> None:
        self.client.close()


def run_remote_chat(
    url: str, agent: str | None, *, says: Sequence[str] | None, interactive: bool
) -> dict[str, Any] | None:
    """Chat with an agent on a running worker; the same document `run_script` returns, or None when interactive."""
    conversation = RemoteConversation(url, agent)
    try:
        greeting = conversation.start()
        if interactive:
            _remote_repl(conversation, greeting)
            return None
        turns = []
        for text in says or []:
            if conversation.ended:
                break
            turns.append(conversation.say(text))
        conversation.end()
        return {
            "agent": conversation.agent,
            "session_id": conversation.session_id,
            "environment": conversation.environment(),
            "greeting": greeting,
            "turns": turns,
            "outcome": conversation.outcome,
            "escalation": conversation.escalation,
        }
    finally:
        conversation.close()


def _remote_repl(conversation: RemoteConversation, greeting: str) -> None:
    from voxgate.channels.text import read_line, turn_meta  # the conversation engine: see chat()

    print(f"agent> {greeting}")
    print("(type your message; Ctrl-D or 'quit' to end)")
    try:
        while not conversation.ended:
            line = read_line()
            if line is None:
                break
            if not line.strip():
                continue
            turn = conversation.say(line)
            print(f"agent> {turn.get('agent') or ''}")
            print(turn_meta(turn))
    finally:
        outcome = conversation.end()
    print(f"(session {conversation.session_id} ended: {outcome})")
