"""Run the Harbor Telecom backend with uvicorn in a background thread (for tests and ``voxgate demo``)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import uvicorn

from .app import create_app
from .data import DEFAULT_CUSTOMERS, DEFAULT_SEED


class BackgroundServer:
    """Context manager serving the backend on ``host``; ``port=0`` picks a free port.

    >>> with BackgroundServer("var/harbor.db", api_key="secret") as server:
    ...     httpx.get(server.url + "/api/outages?postcode=20417", headers=server.auth_headers)
    """

    def __init__(
        self,
        db_path: str | Path,
        api_key: str,
        *,
        seed: int = DEFAULT_SEED,
        customers: int = DEFAULT_CUSTOMERS,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 15.0,
    ) -> None:
        self.db_path = Path(db_path)
        self.api_key = api_key
        self.seed = seed
        self.customers = customers
        self.host = host
        self.port = port
        self._requested_port = port
        self.startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (valid once started)."""
        if self._server is None:
            raise RuntimeError("server is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def auth_headers(self) -> dict[str, str]:
        """Headers that authorise ``/api/...`` calls."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self) -> None:
        """Create the app, bind the port, start serving and wait until ``/health`` answers."""
        if self._server is not None:
            raise RuntimeError("server already started")
        app = create_app(self.db_path, self.api_key, seed=self.seed, customers=self.customers)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            app.state.db.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._socket = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"harbor-backend:{self.port}", daemon=True
        )
        self._thread.start()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("harbor backend exited during startup")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"harbor backend did not answer /health within {self.startup_timeout}s")

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread, then release the port and the database."""
        server, thread, sock = self._server, self._thread, self._socket
        if server is None:
            return
        server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        if sock is not None:
            sock.close()
        app = server.config.app
        db = getattr(getattr(app, "state", None), "db", None)
        if db is not None:
            db.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
