"""Call an agent's actions through its HTTP connectors, with host checks, retries and scoping."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import httpx

from voxgate.bundle.loader import expand_env
from voxgate.bundle.models import Action, HttpConnector
from voxgate.governance.secrets import SecretError, resolve_secret
from voxgate.runtime.templates import PLACEHOLDER_RE, lookup

Status = Literal["ok", "not_found", "error", "denied"]


@dataclass
class ActionResult:
    action: str
    status: Status
    arguments: dict[str, Any]
    data: Any = None
    http_status: int | None = None
    error: str | None = None
    duration_ms: float = 0.0
    attempts: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.action,
            "arguments": self.arguments,
            "status": self.status,
            "http_status": self.http_status,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 1),
        }


class DeniedCall(Exception):
    """A call the runtime refuses to make: unverified caller, host not allowed, bad template."""


@dataclass
class CallContext:
    """What an action may draw on: the verified customer id comes only from the session."""

    verified_customer_id: str | None
    slots: Mapping[str, Any]
    args: Mapping[str, Any] = field(default_factory=dict)


def _fill(template: str, ctx: CallContext, *, action: Action) -> str:
    def sub(m: Any) -> str:
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
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.connectors = dict(connectors)
        self.actions = dict(actions)
        self.host_policy = host_policy or HostPolicy()
        self._transport = transport
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        # one pooled client per event loop: a pool must not be shared across loops
        key = id(asyncio.get_running_loop())
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.aclose()

    def _prepare(
        self, name: str, ctx: CallContext
    ) -> tuple[Action, HttpConnector, str, dict[str, str], Any, dict[str, Any]]:
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
                    headers["Authorization"] = f"Bearer {resolve_secret(connector.auth.token)}"
                else:
                    headers[connector.auth.header] = resolve_secret(connector.auth.value)
            except SecretError as exc:
                raise DeniedCall(str(exc)) from None
        arguments = {**query, **(body if isinstance(body, dict) else {})}
        if action.customer_scoped:
            arguments["customer_id"] = ctx.verified_customer_id
        return action, connector, url, headers, (query, body), arguments

    async def call(self, name: str, ctx: CallContext) -> ActionResult:
        started = time.perf_counter()
        try:
            action, connector, url, headers, (query, body), arguments = self._prepare(name, ctx)
        except DeniedCall as exc:
            return ActionResult(name, "denied", {}, error=str(exc), duration_ms=(time.perf_counter() - started) * 1000)
        timeout = action.timeout_s or connector.timeout_s
        retries = connector.retries if action.retries is None else action.retries
        # only idempotent reads are retried after a response; writes only on connect errors
        idempotent = action.method in ("GET", "PUT", "DELETE")
        attempt = 0
        last_error = ""
        while True:
            attempt += 1
            try:
                resp = await self._client().request(
                    action.method, url, params=query or None, json=body, headers=headers, timeout=timeout
                )
            except httpx.ConnectError as exc:
                last_error = f"cannot connect: {exc.__class__.__name__}"
                retry = attempt <= retries
            except httpx.TimeoutException:
                last_error = f"timed out after {timeout:g}s"
                retry = attempt <= retries and idempotent
            except httpx.HTTPError as exc:
                last_error = f"{exc.__class__.__name__}"
                retry = attempt <= retries and idempotent
            else:
                elapsed = (time.perf_counter() - started) * 1000
                if resp.status_code == 404:
                    return ActionResult(name, "not_found", arguments, _json(resp), 404, None, elapsed, attempt)
                if resp.status_code >= 500 and attempt <= retries and idempotent:
                    last_error = f"HTTP {resp.status_code}"
                    await asyncio.sleep(0.1 * 2 ** (attempt - 1))
                    continue
                if resp.status_code >= 400:
                    return ActionResult(
                        name,
                        "error",
                        arguments,
                        _json(resp),
                        resp.status_code,
                        f"HTTP {resp.status_code}",
                        elapsed,
                        attempt,
                    )
                return ActionResult(name, "ok", arguments, _json(resp), resp.status_code, None, elapsed, attempt)
            if not retry:
                return ActionResult(
                    name, "error", arguments, None, None, last_error, (time.perf_counter() - started) * 1000, attempt
                )
            await asyncio.sleep(0.1 * 2 ** (attempt - 1))


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None
