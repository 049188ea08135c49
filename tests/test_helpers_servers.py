"""The in-thread server the tests share holds its port from the start, not only once its app has started."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.helpers.servers import LiveServer


def test_the_port_is_held_while_the_app_is_still_starting() -> None:
    """A voice worker loads its models before uvicorn would bind; another process of the run picking the same
    'free' port meanwhile made a module's server fail to start. Now the port is taken before the app starts."""
    starting, release = threading.Event(), threading.Event()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        starting.set()
        release.wait(30)  # a slow start-up (models loading), in uvicorn's thread
        yield

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)
    server = LiveServer(app)
    opener = threading.Thread(target=server.__enter__)
    opener.start()
    try:
        assert starting.wait(30)
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", server.port))
        assert taken.value.errno == errno.EADDRINUSE
    finally:
        release.set()
        opener.join(30)
    try:
        assert httpx.get(server.url, timeout=10).text == "hello"
    finally:
        server.__exit__(None, None, None)
    with socket.socket() as again:  # closed with the server
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", server.port))
