"""What the fuzz tests watch in a worker's log: every record that carries an exception or a traceback."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

# uvicorn logs an unhandled exception on "uvicorn.error" (which stops at "uvicorn"); voxgate on "voxgate.*"
LOGGERS = ("", "uvicorn", "voxgate")


class Tracebacks(logging.Handler):
    """Collects the log records of a worker in this process that carry an exception or a traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: dict[int, logging.LogRecord] = {}  # by identity: a record may reach two watched loggers

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Traceback (most recent call last)" in record.getMessage():
            self.records[id(record)] = record

    def take(self, expect: bool = False) -> list[str]:
        """The tracebacks logged since the last call; with `expect`, wait a moment for one (uvicorn logs
        an unhandled exception just after the response or the close has gone out)."""
        deadline = time.monotonic() + 5
        while expect and not self.records and time.monotonic() < deadline:
            time.sleep(0.01)
        out = [
            f"{r.name}: {r.getMessage()}\n{logging.Formatter().formatException(r.exc_info) if r.exc_info else ''}"
            for r in self.records.values()
        ]
        self.records.clear()
        return out


@contextlib.contextmanager
def watching() -> Iterator[Tracebacks]:
    """Watch the worker's loggers; enter it after the worker started (uvicorn's logging set-up replaces
    the handlers of its own loggers)."""
    handler = Tracebacks()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
