"""Render reply templates such as "Due on {balance.due_date|date}" against a session's values."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from voxgate.bundle.loader import PLACEHOLDER_RE  # one syntax: checked at load, rendered here

_MISSING = object()


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """Follow a dotted path through mappings, objects and list indices; None when absent."""
    node: Any = values
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, (list, tuple)) and part.isdigit():
            idx = int(part)
            node = node[idx] if idx < len(node) else _MISSING
        else:
            node = getattr(node, part, _MISSING)
        if node is _MISSING:
            return None
    return node


def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def say_date(value: Any) -> str:
    """A date as spoken, e.g. "Monday, March 3rd"."""
    d = _as_date(value)
    if d is None:
        return "an unknown date"
    return f"{d.strftime('%A')}, {d.strftime('%B')} {_ordinal(d.day)}"


def say_datetime(value: Any) -> str:
    """A date and time as spoken, e.g. "Monday, March 3rd at 2:30 pm"."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return say_date(value)
    if isinstance(value, dt.datetime):
        hour = value.strftime("%I").lstrip("0") or "12"
        minute = "" if value.minute == 0 else f":{value.minute:02d}"
        return f"{say_date(value)} at {hour}{minute} {value.strftime('%p').lower()}"
    return say_date(value)


def say_money(value: Any, currency: str = "dollars") -> str:
    """An amount as spoken, e.g. "12 dollars and 5 cents"."""
    try:
        amount = Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return str(value)
    whole, cents = divmod(int(amount * 100), 100)
    unit = currency if whole != 1 else currency.rstrip("s")
    text = f"{whole} {unit}"
    if cents:
        text += f" and {cents} cent{'s' if cents != 1 else ''}"
    return text


def spell(value: Any) -> str:
    """Say identifiers character by character so speech synthesis does not read them as numbers."""
    text = str(value)
    return " ".join(ch for ch in text if ch.isalnum())


FILTERS: dict[str, Callable[[Any], str]] = {
    "money": say_money,
    "date": say_date,
    "datetime": say_datetime,
    "spell": spell,
    "count": lambda v: str(len(v)) if isinstance(v, (list, tuple, dict, str)) else "0",
    "upper": lambda v: str(v).upper(),
    "lower": lambda v: str(v).lower(),
    "digits": lambda v: "".join(ch for ch in str(v) if ch.isdigit()),
}


def resolve(values: Mapping[str, Any], ref: str) -> Any:
    """Value of a reference such as "order.status" or "outage.outages|count"."""
    path, _, flt = ref.partition("|")
    value = lookup(values, path)
    if flt:
        return FILTERS[flt](value)
    return value


def render(template: str, values: Mapping[str, Any]) -> str:
    """The template with each `{name}` or `{name|filter}` placeholder replaced by its spoken value."""

    def sub(m: re.Match[str]) -> str:
        value = lookup(values, m.group(1))
        flt = m.group(2)
        if flt:
            return FILTERS[flt](value)
        if value is None:
            return "unknown"
        if isinstance(value, Decimal):
            return str(value)
        return str(value)

    return PLACEHOLDER_RE.sub(sub, template)
