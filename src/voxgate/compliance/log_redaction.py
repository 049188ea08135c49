"""Personal data never reaches voxgate's logs: every record from a `voxgate.*` logger is redacted
with the same redactor as stored transcripts, at the moment the record is created (so every
handler — console, file, a log shipper — sees the redacted text)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

_installed = False
_lock = threading.Lock()


def install_log_redaction() -> None:
    """Wrap the log-record factory once per process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        from voxgate.compliance.redaction import default_redactor

        redactor = default_redactor()
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if record.name.startswith("voxgate"):
                try:
                    message = record.getMessage()
                    redacted = redactor.redact(message[:20000]).text
                except Exception:  # a log line must never fail because of redaction
                    return record
                if redacted != message:
                    record.msg, record.args = redacted, ()
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
