"""What travels on a channel's socket: JSON text frames, close reasons fit for a close frame, and the
error that ends a call on malformed input."""

from __future__ import annotations

import json
from typing import Any

from voxgate.errors import InvalidError

#: a close frame carries at most 123 bytes of reason; a little less leaves room for the code
MAX_CLOSE_REASON = 120


class ProtocolError(InvalidError):
    """Malformed input on a call's socket: that call ends with this reason; nothing else does."""


class StartTimeout(ProtocolError):
    """A voice socket sent no valid `start` in time: it is closed (1008) and never took a line."""


def close_reason(text: str) -> str:
    """A close reason fit to send: printable ASCII within the 123 bytes a close frame allows (a longer
    one makes the server's WebSocket library fail the close and drop the connection instead)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")[:MAX_CLOSE_REASON]


def utf8_safe(text: str) -> str:
    """`text` with any lone surrogate (JSON allows "\\ud800") written as its escape, so that it can be
    logged, encoded or handed to a library that keeps its strings in UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_object(raw: str | None, max_chars: int) -> dict[str, Any]:
    """A text frame of a JSON protocol as an object, or ProtocolError saying what is wrong with it:
    a binary frame (`raw` None), too long, not JSON, nested too deeply for the parser, not an object."""
    if raw is None:
        raise ProtocolError("binary frames are not part of this protocol (send JSON text)")
    if len(raw) > max_chars:
        raise ProtocolError(f"message of {len(raw)} characters exceeds {max_chars}")
    try:
        msg = json.loads(raw)
    except RecursionError:  # a few thousand nested brackets fit in any size limit
        raise ProtocolError("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON: {getattr(exc, 'msg', exc)}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object")
    return msg
