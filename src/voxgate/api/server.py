"""How a worker is served: one uvicorn configuration built from Settings for every entry point
(`voxgate serve`, the demo's workers, the load gate's worker), with the limits that keep slow or
numerous clients from holding a worker.

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`) and answers 503 past
`limit_concurrency`, but it has no limit on how long, or how much, a client may take to send a
request's head: a socket that sends half a request line and then nothing is held until the client
goes away. `HeadLimitedProtocol` closes such a connection once the head is not complete within
`http_header_timeout_s` (answering 408), or once it grows past `MAX_HEAD_BYTES` (431).

`voxgate serve` runs its worker under `WorkerServer`, which drains on SIGTERM (`api/drain.py`)
instead of closing every call at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn

from voxgate.api.drain import drain
from voxgate.channels.admission import Admission
from voxgate.config import Settings

log = logging.getLogger("voxgate.api")

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; the body is not counted

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard] on CPython (not on Windows)
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


class WorkerConfig(uvicorn.Config):
    """uvicorn's Config plus the request-head time limit its protocols do not have."""

    def __init__(self, app: Any, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s


def _reply_and_close(transport: asyncio.Transport, status: bytes) -> None:
    if not transport.is_closing():
        transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        transport.close()


if HttpToolsProtocol is not None:

    class HeadLimitedProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a deadline and a size limit on each request's head.

        The clock starts when the connection opens (a client that sends nothing is closed too) and
        again at the first byte of each later request on a kept-alive connection; it stops when the
        head is complete. Between requests uvicorn's own keep-alive timeout applies.
        """

        def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self._head_timeout_s = float(getattr(config, "header_timeout_s", 10.0))
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_bytes = 0
            self._heads = 0  # heads begun on this connection

        def _start_head(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_timed_out)
                self._head_bytes = 0
                self._heads += 1

        def _head_done(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _refuse_head(self, status: bytes) -> None:
            self._head_done()
            if self.cycle is not None and not self.cycle.response_complete:
                self.transport.close()  # a pipelined head behind a response still being sent: no reply inside it
            else:
                _reply_and_close(self.transport, status)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            self._refuse_head(b"408 Request Timeout")

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_done()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_head()  # a later request on a kept-alive connection: its own deadline

        def on_headers_complete(self) -> None:
            self._head_done()
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            # a chunk counts when it began and ended inside the same head: the chunk in which a
            # later request begins may also hold the request before it (a head gets one read's leeway)
            head = self._heads if self._head_timer is not None else None
            super().data_received(data)
            if head is not None and self._head_timer is not None and head == self._heads:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse_head(b"431 Request Header Fields Too Large")

else:  # pragma: no cover
    HeadLimitedProtocol = None  # type: ignore[assignment,misc]


def server_config(
    app: Any,
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str | None = None,
    **extra: Any,
) -> uvicorn.Config:
    """The uvicorn Config every voxgate worker runs under: its address, and the connection limits
    from `settings` (header timeout, keep-alive timeout, connection limit)."""
    http: Any = HeadLimitedProtocol
    if http is None:  # pragma: no cover
        log.warning("httptools is not installed: request heads are not time-limited (install uvicorn[standard])")
        http = "h11"
    return WorkerConfig(
        app,
        header_timeout_s=settings.http_header_timeout_s,
        host=settings.host if host is None else host,
        port=settings.port if port is None else port,
        log_level=log_level or settings.log_level,
        http=http,
        timeout_keep_alive=settings.http_keep_alive_s,
        limit_concurrency=settings.http_connection_limit,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        **extra,
    )


class WorkerServer(uvicorn.Server):
    """uvicorn's Server with a graceful drain on SIGTERM.

    At a SIGTERM uvicorn itself would close every connection at once (a call's WebSocket with 1012).
    Here the first SIGTERM drains the worker instead (`api/drain.py`: new conversations refused at
    once, calls in progress waited for up to `drain_grace_s`), and uvicorn's shutdown starts only
    when the drain is over; the worker then exits 0. A second SIGTERM or a SIGINT during the drain
    stops it at once: the calls still in progress are cut, their records closed as at any shutdown.
    Otherwise a SIGINT (Ctrl-C in a terminal) stops the worker at once, as uvicorn does.
    """

    def __init__(self, config: uvicorn.Config, *, drain_grace_s: float) -> None:
        super().__init__(config)
        self.drain_grace_s = drain_grace_s
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()  # before the signal handlers are installed
        await super().serve(sockets=sockets)

    def _admission(self) -> Admission | None:
        """The worker's admission once its lifespan has started (the app's `state.voxgate`)."""
        state = getattr(getattr(self.config.app, "state", None), "voxgate", None)
        admission = getattr(state, "admission", None)
        return admission if isinstance(admission, Admission) else None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # a signal handler: it only sets flags and hands the rest to the event loop
        if self.should_exit:  # shutting down already: a further signal stops waiting for connections
            self.force_exit = True
            return
        if self.draining:
            self.should_exit = True
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._forced, signal.Signals(sig).name)
            return
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
            return
        admission = self._admission()
        if not self.started or admission is None or self._loop is None:
            self.should_exit = True  # not serving yet: nothing to drain
            return
        self.draining = True
        admission.drain()  # at once: readiness fails, new conversations are refused
        self._loop.call_soon_threadsafe(self._start_drain, admission)

    def _start_drain(self, admission: Admission) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain(admission), name="voxgate-drain")

    async def _drain(self, admission: Admission) -> None:
        try:
            await drain(admission, self.drain_grace_s)
        finally:
            self.should_exit = True

    def _forced(self, name: str) -> None:
        admission = self._admission()
        active = admission.active if admission is not None else 0
        log.warning("drain: %s during the drain: stopping now; %d call(s) in progress are cut", name, active)
        if self._drain_task is not None:
            self._drain_task.cancel()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
        await super().shutdown(sockets=sockets)
