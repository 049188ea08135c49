"""The load gate's worker: this process serves one environment from the gate's database on a loopback
port for as long as a gate run needs it (a `governance.gates.StartWorker`)."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from voxgate.api.app import create_app
from voxgate.api.server import server_config
from voxgate.config import Settings
from voxgate.errors import UnavailableError
from voxgate.governance.secrets import secrets_dir

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 240.0  # speech models are preloaded before the worker reports started
START_POLL_S = 0.1
STOP_TIMEOUT_S = 30.0


class WorkerStartError(UnavailableError):
    """The gate's worker stopped or did not start in time."""


@dataclass(frozen=True)
class LocalWorkers:
    """Start a worker in a thread of this process, serving an environment from `database_url` with the
    policies in `policy_dir`; it resolves connector credentials from this process's secrets directory
    and reads (and keeps) rendered prompts in `speech_cache_dir` (default: its own throwaway folder)."""

    database_url: str
    policy_dir: Path | None = None
    speech_cache_dir: Path | None = None

    @asynccontextmanager
    async def __call__(self, environment: str) -> AsyncIterator[str]:
        """A worker serving `environment` until the context ends; yields its base URL."""
        with tempfile.TemporaryDirectory(prefix="voxgate-load-gate-") as tmp:
            settings = Settings(
                data_dir=Path(tmp),
                database_url=self.database_url,
                environment=environment,
                voice_preload=True,
                policy_dir=self.policy_dir,
                secrets_dir=secrets_dir() or Path(tmp) / "secrets",
            )
            if self.speech_cache_dir is not None:  # else its own setting (VOXGATE_SPEECH_CACHE_DIR or the tmp folder)
                settings = settings.model_copy(update={"speech_cache_dir": self.speech_cache_dir})
            # bound now: uvicorn binds only after the worker's start-up (its speech models), and a port merely
            # picked free could be taken by another process in between
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind((LOOPBACK, 0))
            port = int(listener.getsockname()[1])
            server = uvicorn.Server(
                server_config(create_app(settings, []), settings, host=LOOPBACK, port=port, log_level="warning")
            )
            thread = threading.Thread(
                target=server.run, kwargs={"sockets": [listener]}, daemon=True, name="voxgate-load-gate-worker"
            )
            thread.start()
            try:
                deadline = time.monotonic() + START_TIMEOUT_S
                while not server.started:
                    if not thread.is_alive() or time.monotonic() > deadline:
                        raise WorkerStartError("the load gate's worker did not start")
                    await asyncio.sleep(START_POLL_S)
                yield f"http://{LOOPBACK}:{port}"
            finally:
                server.should_exit = True
                await asyncio.to_thread(thread.join, STOP_TIMEOUT_S)
                listener.close()
