"""Run the Harbor Telecom backend in the background: with uvicorn in a thread (tests), or as its
own process (``voxgate demo``, where it stands for a CRM that is not inside the voice worker)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from .app import create_app
from .data import DEFAULT_CUSTOMERS, DEFAULT_SEED

_B = TypeVar("_B", bound="_Background")


class _Background:
    """What both ways of running the backend share: where it listens, its key, and the wait
    for ``/health``. Subclasses start and stop it, and say whether it is still alive."""

    def __init__(
        self,
        db_path: str | Path,
        api_key: str,
        *,
        seed: int = DEFAULT_SEED,
        customers: int = DEFAULT_CUSTOMERS,
        today: date | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 15.0,
    ) -> None:
        self.db_path = Path(db_path)
        self.api_key = api_key
        self.seed = seed
        self.customers = customers
        self.today = today  # None: the real date, following it while running
        self.host = host
        self.port = port
        self._requested_port = port
        self.startup_timeout = startup_timeout

    def _running(self) -> bool:
        raise NotImplementedError

    def _exited(self) -> str | None:
        """Why the backend is gone during startup, or None while it runs."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (valid once started)."""
        if not self._running():
            raise RuntimeError("server is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def auth_headers(self) -> dict[str, str]:
        """Headers that authorise ``/api/...`` calls."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            gone = self._exited()
            if gone is not None:
                raise RuntimeError(f"harbor backend exited during startup{gone}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"harbor backend did not answer /health within {self.startup_timeout}s")

    def __enter__(self: _B) -> _B:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class BackgroundServer(_Background):
    """Context manager serving the backend on ``host`` in a thread; ``port=0`` picks a free port.

    >>> with BackgroundServer("var/harbor.db", api_key="secret") as server:
    ...     httpx.get(server.url + "/api/outages?postcode=20417", headers=server.auth_headers)
    """

    def __init__(self, db_path: str | Path, api_key: str, **kwargs: Any) -> None:
        super().__init__(db_path, api_key, **kwargs)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def _running(self) -> bool:
        return self._server is not None

    def _exited(self) -> str | None:
        return None if self._thread is not None and self._thread.is_alive() else ""

    def start(self) -> None:
        """Create the app, bind the port, start serving and wait until ``/health`` answers."""
        if self._server is not None:
            raise RuntimeError("server already started")
        app = create_app(self.db_path, self.api_key, seed=self.seed, customers=self.customers, today=self.today)
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


class BackgroundProcess(_Background):
    """The backend as a child process (``python -m harbor_backend serve``), with the same
    interface as `BackgroundServer`. It does not share the parent's interpreter (its GIL, its
    event loop), as a real backend would not; on Linux it dies with its parent."""

    def __init__(self, db_path: str | Path, api_key: str, *, startup_timeout: float = 60.0, **kwargs: Any) -> None:
        super().__init__(db_path, api_key, startup_timeout=startup_timeout, **kwargs)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    def _running(self) -> bool:
        return self._proc is not None

    def _exited(self) -> str | None:
        if self._proc is not None and self._proc.poll() is None:
            return None
        return f": {self._output()}"

    def start(self) -> None:
        """Start the process and wait until ``/health`` answers; its own error if it exits first."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        self.port = self._requested_port or _free_port(self.host)
        self._log = tempfile.TemporaryFile()
        command = [
            sys.executable,
            "-m",
            "harbor_backend",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--db",
            str(self.db_path),
            "--seed",
            str(self.seed),
            "--customers",
            str(self.customers),
            "--log-level",
            "warning",
        ]
        if self.today is not None:
            command += ["--today", self.today.isoformat()]
        self._proc = subprocess.Popen(
            command,
            env={**os.environ, "HARBOR_API_KEY": self.api_key},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace").strip()[-2000:]

    def stop(self) -> None:
        """Ask the process to exit (SIGTERM), and kill it if it has not within 10 s."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass
