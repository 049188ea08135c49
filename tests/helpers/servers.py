"""ASGI apps served by uvicorn in a thread on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import uvicorn

#: how long a server in a thread may take to start (a loaded machine starts slowly)
START_TIMEOUT_S = 120.0
#: how long a stopping server may take to finish its connections
STOP_TIMEOUT_S = 30.0
POLL_S = 0.05


#: settings of the test run that a worker process it starts keeps: the run's own (VOXGATE_TEST_*) and the
#: folders of rendered prompts and of intent-example vectors every worker of the run shares, and the run's
#: choice of voice (scripts/run-tests.sh)
KEPT_FOR_CHILDREN = ("VOXGATE_TEST", "VOXGATE_SPEECH_CACHE_DIR", "VOXGATE_EMBEDDING_CACHE_DIR", "VOXGATE_PIPER")


def child_env() -> dict[str, str]:
    """This process's environment for a worker process a test starts: no voxgate setting of the
    machine's leaks into it (the test gives it its own), except those in KEPT_FOR_CHILDREN."""
    return {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_") or k.startswith(KEPT_FOR_CHILDREN)}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A voxgate app served by uvicorn in a thread on a free loopback port.

    Without a `port`, the listening socket is bound here, before the thread starts: uvicorn binds only after
    the app's start-up (a voice worker loads its models first), and a port merely picked free was taken by
    another process of the run in between."""

    def __init__(self, app: Any, port: int | None = None):
        self.app = app
        sockets: list[socket.socket] = []
        if port is None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            sockets.append(listener)
            port = int(listener.getsockname()[1])
        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": sockets or None}, daemon=True, name="live-server"
        )
        self._sockets = sockets

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            assert self.thread.is_alive(), "server crashed on start"
            time.sleep(POLL_S)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STOP_TIMEOUT_S)
        for listener in self._sockets:
            listener.close()


@contextlib.contextmanager
def serving(application: Any) -> Iterator[str]:
    """An ASGI app under uvicorn on a free loopback port, in a thread; yields its base URL."""
    with LiveServer(application) as server:
        yield server.url
