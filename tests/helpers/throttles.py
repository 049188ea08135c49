"""Worker settings for tests that send many requests from one loopback address."""

from __future__ import annotations

from typing import Any

#: per-address limits lifted, so that generated requests and messages reach each route's and
#: protocol's own checks instead of the throttles (which have their own tests)
NO_THROTTLES: dict[str, Any] = {"chat_sessions_per_minute": 0, "anonymous_denials_per_minute": 1_000_000}
