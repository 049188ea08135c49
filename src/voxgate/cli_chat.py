"""`voxgate chat --url`: a conversation with an agent on a running worker, over its public
conversation API (the same turn documents and output as a local chat)."""

from __future__ import annotations

from typing import Any, Sequence

from voxgate.channels.text import read_line, turn_meta
from voxgate.cli_client import check_url, error_text, fail, json_body, open_client, server_errors


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
            fail(f"POST {self.url}{path}: {response.status_code} {error_text(response)}")
        data = json_body(response, self.url)
        if not isinstance(data, dict):
            fail(f"{self.url}{path} answered with something other than a JSON object: is it a voxgate server?")
        return data

    def _get(self, path: str) -> Any:
        with server_errors(self.url):
            response = self.client.get(path)
        if response.status_code >= 400:
            fail(f"GET {self.url}{path}: {response.status_code} {error_text(response)}")
        return json_body(response, self.url)

    def _choose_agent(self) -> str:
        served = [a.get("name") for a in self._get("/api/agents") if isinstance(a, dict)]
        if len(served) == 1 and served[0]:
            return str(served[0])
        listed = f" (it serves: {', '.join(str(n) for n in served)})" if served else ""
        fail(f"name the agent to talk to at {self.url} with --agent NAME{listed}")

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


def run_remote_chat(url: str, agent: str | None, *, says: Sequence[str] | None,
                    interactive: bool) -> dict[str, Any] | None:
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
