"""Connector calls: which failures are tried again (idempotent reads after an answer or a timeout,
any method on a refused connection), how many tries a result reports, and the secret resolver port."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Literal

import httpx
import pytest

from voxgate.bundle.models import Action, BearerAuth, HttpConnector
from voxgate.governance.secrets import SecretError
from voxgate.runtime.connectors import (
    ActionResult,
    CallContext,
    ConnectorClient,
    SecretUnavailableError,
    environment_secret,
)
from voxgate.tls import client_context

HOST = "backend.example.test"
CTX = CallContext(verified_customer_id=None, slots={})


def _client(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    method: Literal["GET", "POST"] = "GET",
    retries: int = 2,
    token: str | None = None,
    secrets: Callable[[str], str] | None = None,
) -> ConnectorClient:
    connector = HttpConnector(
        base_url=f"http://{HOST}",
        hosts=[HOST],
        classification="internal",
        retries=retries,
        auth=BearerAuth(token=token) if token else None,
    )
    action = Action(connector="backend", method=method, path="/things", customer_scoped=False)
    return ConnectorClient(
        {"backend": connector}, {"thing": action}, secrets=secrets, transport=httpx.MockTransport(handler)
    )


class Backend:
    """Answers from a script, one entry per request: a status code, or an exception to raise."""

    def __init__(self, *script: int | Exception) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step, json={"n": len(self.requests)})


async def _call(client: ConnectorClient) -> ActionResult:
    try:
        return await client.call("thing", CTX)
    finally:
        await client.aclose()


async def test_an_idempotent_read_is_tried_again_after_a_server_error() -> None:
    backend = Backend(503, 200)
    result = await _call(_client(backend))
    assert (result.status, result.http_status, result.attempts, result.data) == ("ok", 200, 2, {"n": 2})


async def test_a_read_that_keeps_failing_reports_the_last_answer_and_every_try() -> None:
    backend = Backend(502)
    result = await _call(_client(backend, retries=2))
    assert (result.status, result.http_status, result.error, result.attempts) == ("error", 502, "HTTP 502", 3)
    assert len(backend.requests) == 3


async def test_a_write_is_not_sent_twice_after_an_answer_or_a_timeout() -> None:
    answered = Backend(500, 200)
    result = await _call(_client(answered, method="POST"))
    assert (result.status, result.http_status, result.attempts) == ("error", 500, 1)
    timed_out = Backend(httpx.ReadTimeout("slow"), 200)
    result = await _call(_client(timed_out, method="POST"))
    assert (result.status, result.attempts) == ("error", 1)
    assert result.error is not None and result.error.startswith("timed out after")
    assert len(answered.requests) == len(timed_out.requests) == 1


async def test_a_refused_connection_is_tried_again_whatever_the_method() -> None:
    backend = Backend(httpx.ConnectError("refused"))
    result = await _call(_client(backend, method="POST", retries=1))
    assert (result.status, result.error, result.attempts) == ("error", "cannot connect: ConnectError", 2)
    assert len(backend.requests) == 2


async def test_not_found_is_its_own_status_and_is_not_retried() -> None:
    backend = Backend(404)
    result = await _call(_client(backend))
    assert (result.status, result.http_status, result.attempts) == ("not_found", 404, 1)


async def test_credentials_come_from_the_resolver_the_runtime_is_handed() -> None:
    backend = Backend(200)
    seen: list[str] = []

    def resolver(ref: str) -> str:
        seen.append(ref)
        return "s3cret"

    result = await _call(_client(backend, token="vault:kv/backend#token", secrets=resolver))
    assert result.status == "ok" and seen == ["vault:kv/backend#token"]
    assert backend.requests[0].headers["Authorization"] == "Bearer s3cret"


async def test_a_secret_that_cannot_be_resolved_denies_the_call_naming_the_reference() -> None:
    backend = Backend(200)

    def refusing(ref: str) -> str:
        raise SecretError(f"secret {ref}: environment variable X is not set")

    result = await _call(_client(backend, token="env:X", secrets=refusing))
    assert result.status == "denied" and result.error == "secret env:X: environment variable X is not set"
    assert backend.requests == []  # nothing was sent


def test_without_a_resolver_only_environment_references_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXGATE_TEST_CONNECTOR_KEY", "k-1")
    assert environment_secret("env:VOXGATE_TEST_CONNECTOR_KEY") == "k-1"
    monkeypatch.delenv("VOXGATE_TEST_CONNECTOR_KEY")
    with pytest.raises(SecretUnavailableError, match="VOXGATE_TEST_CONNECTOR_KEY is not set"):
        environment_secret("env:VOXGATE_TEST_CONNECTOR_KEY")
    with pytest.raises(SecretUnavailableError, match="no secret resolver"):
        environment_secret("file:/etc/backend-token")


def test_outbound_clients_share_one_verifying_tls_context() -> None:
    """One context per process (made once: building it parses the CA bundle), and it verifies servers."""
    ctx = client_context()
    assert client_context() is ctx
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] > 0  # the trust store is loaded
