"""Request bodies: a size limit per route, kept before and while the body is read, and
authorisation before the body is read wherever the route asks for a signed-in principal.

`RequestBodyLimits` is plain ASGI middleware. It acts when the route that matched a request first
asks for its body (routing has happened by then, so the route and its guard are known):

- A request whose `Content-Length` is over its route's limit is answered 413 there, and nothing of
  its body is read. A body sent without a length (chunked) is counted as it arrives and answered
  413 as soon as it passes the limit. Both answers close the connection, so a client cannot go on
  sending into it.
- A request with a body to a guarded route (`api/auth.py`) is authenticated and authorised there
  first, with the route's own guard: a missing, invalid or refused credential gets its 401/403
  before a byte of the body is read. (FastAPI reads and parses a body before it resolves a route's
  dependencies, so the guard alone would come too late.)

The limit is `Settings.max_body_bytes` for every route but those in `ROUTE_BODY_LIMITS`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxgate.api.auth import PRINCIPAL_SCOPE_KEY, ROUTE_GUARDS, check_request
from voxgate.governance.bundle_store import MAX_ARCHIVE_BYTES

log = logging.getLogger("voxgate.api")

DEFAULT_BODY_BYTES = 64 * 1024
# a bundle upload is JSON: the archive in base64 (4 bytes for every 3), its signature, key id and the
# builder's manifest (a hash per file, at most 500 files), which 256 KiB holds with room to spare
BUNDLE_UPLOAD_BODY_BYTES = (MAX_ARCHIVE_BYTES + 2) // 3 * 4 + 256 * 1024
#: (method, path template) → the largest body that route accepts, where the default is not enough
ROUTE_BODY_LIMITS: Mapping[tuple[str, str], int] = {
    ("POST", "/api/environments/{env}/bundles"): BUNDLE_UPLOAD_BODY_BYTES,
}


class BodyTooLarge(HTTPException):
    """The body passed its route's limit while it was read (raised from `receive`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit), headers={"Connection": "close"})


def _too_large(limit: int) -> str:
    return f"the request body is larger than this route accepts ({limit} bytes at most)"


class RequestBodyLimits:
    """ASGI middleware: see the module's docstring."""

    def __init__(
        self,
        app: ASGIApp,
        default_limit: int = DEFAULT_BODY_BYTES,
        route_limits: Mapping[tuple[str, str], int] = ROUTE_BODY_LIMITS,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.route_limits = dict(route_limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = _content_length(headers)
        has_body = bool(declared) or "chunked" in headers.get("transfer-encoding", "").lower()
        limit = self.default_limit
        received = 0
        first = True
        started = False

        async def limited_receive() -> Message:
            nonlocal limit, received, first
            if first:  # the route asks for the body: routing is done, its limit and guard are known
                first = False
                template = getattr(scope.get("route"), "path", None)
                key = (scope["method"], template if isinstance(template, str) else "")
                limit = self.route_limits.get(key, self.default_limit)
                if declared is not None and declared > limit:
                    raise BodyTooLarge(limit)
                guarded = ROUTE_GUARDS.get(key)
                if guarded is not None and has_body and PRINCIPAL_SCOPE_KEY not in scope:
                    try:
                        scope[PRINCIPAL_SCOPE_KEY] = await check_request(Request(scope), *guarded)
                    except HTTPException as exc:  # the body stays unread: close the connection after the answer
                        raise HTTPException(
                            exc.status_code, exc.detail, headers={**(exc.headers or {}), "Connection": "close"}
                        ) from None
                    except Exception:  # FastAPI would call anything raised while reading a body a 400
                        log.exception("could not authorise a request before reading its body")
                        raise HTTPException(500, "Internal Server Error", headers={"Connection": "close"}) from None
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:  # read by something that did not turn it into a response itself
            if started:
                raise
            response = JSONResponse({"detail": _too_large(limit)}, status_code=413, headers={"Connection": "close"})
            await response(scope, receive, send)


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # the server refuses a malformed length before the app sees the request
