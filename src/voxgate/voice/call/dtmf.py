"""Keypad digits: collected until `#`, until as many as the question wants, or until the caller
stops keying for the inter-digit timeout; then they make one turn."""

from __future__ import annotations

from voxgate.voice.call.events import DigitsEntered

TERMINATOR = "#"
MS_PER_S = 1000


class Keypad:
    """The digits keyed so far in one call."""

    def __init__(self) -> None:
        self.digits = ""
        self.last_at = 0.0

    def press(self, digit: str, now: float, wanted: int | None) -> bool:
        """One key; whether the digits are complete now (`#`, or `wanted` of them)."""
        if digit == TERMINATOR:
            return True
        self.digits += digit
        self.last_at = now
        return bool(wanted) and len(self.digits) >= (wanted or 0)

    def timed_out(self, now: float, inter_digit_ms: float) -> bool:
        """Digits wait, and the caller has not keyed another for `inter_digit_ms`."""
        return bool(self.digits) and (now - self.last_at) * MS_PER_S >= inter_digit_ms

    def take(self, *, busy: bool) -> DigitsEntered | None:
        """The digits as a turn; None when there are none, or (kept for later) while a turn is running."""
        digits, self.digits = self.digits, ""
        if not digits or busy:
            self.digits = digits if busy else ""
            return None
        return DigitsEntered(digits)
