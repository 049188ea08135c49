"""Call an agent's actions through its HTTP connectors, with host checks, retries and scoping.

What the runtime may not decide alone comes in through two ports, handed over by whoever builds
the runtime: a `HostPolicy` (may this connector reach this URL? the server passes the
environment's DLP policy) and a `SecretResolver` (the credential a connector's `auth` names; the
server passes `voxgate.governance.secrets.resolve_secret`). This module imports no governance.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol
from urllib.parse import urljoin, urlsplit

import httpx
import tenacity

from voxgate.bundle.loader import PLACEHOLDER_RE, expand_env
from voxgate.bundle.models import Action, HttpConnector
from voxgate.errors import ForbiddenError, UnavailableError, VoxgateError
from voxgate.runtime.templates import lookup
from voxgate.tls import client_context

Status = Literal["ok", "not_found", "error", "denied"]

RETRY_FIRST_WAIT_S = 0.1  # then 0.2, 0.4 … between the tries of one action
HTTP_NOT_FOUND = 404
HTTP_CLIENT_ERROR = 400
HTTP_SERVER_ERROR = 500
#: methods whose request may be sent twice: only these are retried after a response or a timeout
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
DENIED_RULE = "connector.denied"


class SecretResolver(Protocol):
    """Resolves a secret reference (``env:NAME``, ``file:PATH``, ``vault:…``) to its value.

    It raises a VoxgateError (e.g. `SecretUnavailableError`, or governance's `SecretError`) when it
    cannot, with a message that names the reference and never a value: the message becomes the
    reason of a denied call.
    """

    def __call__(self, ref: str) -> str:
        """The value `ref` refers to."""
        ...


class SecretUnavailableError(UnavailableError):
    """A secret reference that cannot be resolved here; the message names the reference, never a value."""


def environment_secret(ref: str) -> str:
    """The resolver of a runtime built without one: ``env:NAME`` from this process's environment only
    (no secrets directory, files or Vault: a server hands its runtimes the full resolver)."""
    scheme, _, name = ref.partition(":")
    if scheme != "env":
        raise SecretUnavailableError(
            f"secret {ref}: this runtime was given no secret resolver, so it reads env: references only"
        )
    value = os.environ.get(name)
    if not value:
        raise SecretUnavailableError(f"secret {ref}: environment variable {name} is not set")
    return value


@dataclass
class ActionResult:
    """What one action call did: its status, the arguments sent, the answer, how long and how many tries."""

    action: str
    status: Status
    arguments: dict[str, Any]
    data: Any = None
    http_status: int | None = None
    error: str | None = None
    duration_ms: float = 0.0
    attempts: int = 0

    def summary(self) -> dict[str, Any]:
        """The result as the JSON a turn record and a transcript show."""
        return {
            "name": self.action,
            "arguments": self.arguments,
            "status": self.status,
            "http_status": self.http_status,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 1),
        }


class DeniedCall(ForbiddenError):
    """A call the runtime refuses to make: unverified caller, host not allowed, bad template."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rule=DENIED_RULE)


class _ServerError(UnavailableError):
    """A 5xx answer to an idempotent request: tried again, and returned as is once the tries run out."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


@dataclass
class CallContext:
    """What an action may draw on: the verified customer id comes only from the session."""

    verified_customer_id: str | None
    slots: Mapping[str, Any]
    args: Mapping[str, Any] = field(default_factory=dict)


def _fill(template: str, ctx: CallContext, *, action: Action) -> str:
    def sub(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref == "customer_id":
            if not action.customer_scoped:
                raise DeniedCall("action is not customer_scoped but asks for {customer_id}")
            if not ctx.verified_customer_id:
                raise DeniedCall("no verified caller")
            return str(ctx.verified_customer_id)
        head, _, rest = ref.partition(".")
        source = ctx.slots if head == "slots" else ctx.args if head == "args" else None
        if source is None:
            raise DeniedCall(f"placeholder {{{ref}}} is not allowed")
        value = lookup(source, rest)
        if value is None:
            raise DeniedCall(f"placeholder {{{ref}}} has no value")
        return str(value)

    return PLACEHOLDER_RE.sub(sub, template)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _fill_body(value: Any, ctx: CallContext, action: Action) -> Any:
    if isinstance(value, str):
        m = PLACEHOLDER_RE.fullmatch(value)
        if m and m.group(2) is None and m.group(1).startswith("slots."):
            # a lone slot placeholder keeps the slot's type: amounts stay numbers
            _fill(value, ctx, action=action)  # same checks as any placeholder
            return _jsonable(lookup(ctx.slots, m.group(1)[len("slots.") :]))
        return _fill(value, ctx, action=action)
    if isinstance(value, dict):
        return {k: _fill_body(v, ctx, action) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_body(v, ctx, action) for v in value]
    return value


class HostPolicy:
    """Which hosts a connector may reach. The runtime asks it before every request."""

    def allowed(self, connector_name: str, connector: HttpConnector, host: str) -> tuple[bool, str]:
        """Whether `connector_name` may reach `host`, and why."""
        if host not in connector.hosts:
            return False, f"host '{host}' is not declared by connector '{connector_name}'"
        return True, "declared host"

    def allowed_url(self, connector_name: str, connector: HttpConnector, url: str) -> tuple[bool, str]:
        """The whole URL (policies with path rules override this); by default its host decides."""
        return self.allowed(connector_name, connector, urlsplit(url).hostname or "")


class ConnectorClient:
    """One shared async HTTP client per agent runtime; actions go through `call`."""

    def __init__(
        self,
        connectors: Mapping[str, HttpConnector],
        actions: Mapping[str, Action],
        *,
        host_policy: HostPolicy | None = None,
        secrets: SecretResolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.connectors = dict(connectors)
        self.actions = dict(actions)
        self.host_policy = host_policy or HostPolicy()
        self.secrets: SecretResolver = secrets or environment_secret
        self._transport = transport
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        # one pooled client per event loop: a pool must not be shared across loops
        key = id(asyncio.get_running_loop())
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(transport=self._transport, follow_redirects=False, verify=client_context())
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        """Close this event loop's HTTP client."""
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.aclose()

    def _prepare(
        self, name: str, ctx: CallContext
    ) -> tuple[Action, HttpConnector, str, dict[str, str], tuple[dict[str, str], Any], dict[str, Any]]:
        action = self.actions.get(name)
        if action is None:
            raise DeniedCall(f"unknown action '{name}'")
        connector = self.connectors.get(action.connector)
        if connector is None:
            raise DeniedCall(f"unknown connector '{action.connector}'")
        if action.customer_scoped and not ctx.verified_customer_id:
            raise DeniedCall("action needs a verified caller")
        base = expand_env(connector.base_url)
        path = _fill(action.path, ctx, action=action)
        url = urljoin(base.rstrip("/") + "/", path.lstrip("/"))
        ok, why = self.host_policy.allowed_url(action.connector, connector, url)
        if not ok:
            raise DeniedCall(why)
        query = {k: _fill(v, ctx, action=action) for k, v in action.query.items()}
        body = _fill_body(action.body, ctx, action) if action.body is not None else None
        headers = dict(connector.headers)
        if connector.auth is not None:
            try:
                if connector.auth.type == "bearer":
                    headers["Authorization"] = f"Bearer {self.secrets(connector.auth.token)}"
                else:
                    headers[connector.auth.header] = self.secrets(connector.auth.value)
            except VoxgateError as exc:  # its message names the reference, never a value (SecretResolver)
                raise DeniedCall(str(exc)) from None
        arguments = {**query, **(body if isinstance(body, dict) else {})}
        if action.customer_scoped:
            arguments["customer_id"] = ctx.verified_customer_id
        return action, connector, url, headers, (query, body), arguments

    async def call(self, name: str, ctx: CallContext) -> ActionResult:
        """Make the action's request (tried again per the connector's `retries`) and report what happened."""
        started = time.perf_counter()

        def elapsed_ms() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            action, connector, url, headers, (query, body), arguments = self._prepare(name, ctx)
        except DeniedCall as exc:
            return ActionResult(name, "denied", {}, error=str(exc), duration_ms=elapsed_ms())
        timeout = action.timeout_s or connector.timeout_s
        retries = connector.retries if action.retries is None else action.retries
        # only idempotent reads are retried after a response; writes only on connect errors
        retried: tuple[type[Exception], ...] = (
            (httpx.HTTPError, _ServerError) if action.method in IDEMPOTENT_METHODS else (httpx.ConnectError,)
        )
        attempts = 0

        async def send() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            resp = await self._client().request(
                action.method, url, params=query or None, json=body, headers=headers, timeout=timeout
            )
            if resp.status_code >= HTTP_SERVER_ERROR and attempts <= retries and _ServerError in retried:
                raise _ServerError(resp)
            return resp

        try:
            resp: httpx.Response = await tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(retries + 1),
                wait=tenacity.wait_exponential(multiplier=RETRY_FIRST_WAIT_S),
                retry=tenacity.retry_if_exception_type(retried),
                reraise=True,
            )(send)
        except httpx.ConnectError as exc:
            return self._failed(name, arguments, f"cannot connect: {exc.__class__.__name__}", elapsed_ms(), attempts)
        except httpx.TimeoutException:
            return self._failed(name, arguments, f"timed out after {timeout:g}s", elapsed_ms(), attempts)
        except httpx.HTTPError as exc:
            return self._failed(name, arguments, f"{exc.__class__.__name__}", elapsed_ms(), attempts)
        ms = elapsed_ms()
        if resp.status_code == HTTP_NOT_FOUND:
            return ActionResult(name, "not_found", arguments, _json(resp), HTTP_NOT_FOUND, None, ms, attempts)
        if resp.status_code >= HTTP_CLIENT_ERROR:
            return ActionResult(
                name, "error", arguments, _json(resp), resp.status_code, f"HTTP {resp.status_code}", ms, attempts
            )
        return ActionResult(name, "ok", arguments, _json(resp), resp.status_code, None, ms, attempts)

    @staticmethod
    def _failed(name: str, arguments: dict[str, Any], error: str, ms: float, attempts: int) -> ActionResult:
        return ActionResult(name, "error", arguments, None, None, error, ms, attempts)


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None
