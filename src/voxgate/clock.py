"""Time, one way: the wall clock as an aware UTC datetime, and the type of a clock a class takes
instead of reading it (so that tests and simulations can hand it another one)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

#: a source of "now": `utcnow` in production, a controllable one in tests
Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    """The current time in UTC (timezone-aware)."""
    return dt.datetime.now(dt.UTC)
