"""The order the suite's tests are handed to the xdist workers in: the longest first."""

from __future__ import annotations

import pytest

#: the modules that take longest from start to end (minutes of real-time calls, workers and browsers),
#: longest first; each xdist worker starts on one of the first
LONGEST_FIRST = (
    "tests/test_cluster.py",
    "tests/test_voice_calls.py",
    "tests/security/test_http_fuzz.py",
    "tests/test_readme_release.py",
    "tests/test_desk_voice.py",
    "tests/test_console_browser.py",
    "tests/test_static_checks.py",
)


def schedule_rank(item: pytest.Item) -> tuple[int, bool]:
    """Where `item` goes: its module's place in LONGEST_FIRST, then slow before the rest."""
    module = item.nodeid.split("::", 1)[0]
    rank = LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)
    return rank, item.get_closest_marker("slow") is None
