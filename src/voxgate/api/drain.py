"""A worker's graceful drain, for rolling restarts behind a load balancer.

Told to stop (SIGTERM: `api/server.py` catches it before uvicorn would close every socket), a worker
drains: at once it refuses new conversations (`GET /health/ready` answers 503, a new caller hears
the busy message, a new chat gets 503) while the calls in progress and the chats already open go
on; it waits until no call holds a line, or `drain_grace_s` has passed, then shuts down as before.
Calls still in progress then are cut as at any shutdown, and every record is closed.

The drain's messages are warnings: a worker that is going away is worth seeing in its log, which
shows warnings by default.
"""

from __future__ import annotations

import asyncio
import logging

from voxgate.channels.admission import Admission

__all__ = ["POLL_S", "REPORT_EVERY_S", "drain"]

log = logging.getLogger("voxgate.api")

POLL_S = 0.2  # how often the calls in progress are counted
REPORT_EVERY_S = 10.0  # how often the log says how many remain


async def drain(
    admission: Admission, grace_s: float, *, poll_s: float = POLL_S, report_every_s: float = REPORT_EVERY_S
) -> bool:
    """Refuse new conversations, then wait until no call holds a line or `grace_s` has passed.
    True when every call ended within the grace, False when some were still in progress."""
    admission.drain()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    report_at = loop.time()
    while admission.active > 0:
        now = loop.time()
        if now >= deadline:
            log.warning(
                "drain: the grace of %g s is over with %d call(s) in progress: they are cut now",
                grace_s,
                admission.active,
            )
            return False
        if now >= report_at:
            log.warning(
                "drain: refusing new conversations; waiting for %d call(s) in progress (%.0f s of the grace left)",
                admission.active,
                deadline - now,
            )
            report_at = now + report_every_s
        await asyncio.sleep(min(poll_s, deadline - now))
    log.warning("drain: no call in progress; shutting down")
    return True
