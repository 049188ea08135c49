"""A number of known length given over several turns.

Callers read long numbers in groups ("one one eight one … five nine two eight"), and on a phone
line a pause between groups can end the turn before the number is whole. A reading well short
of the length asked for is kept as the start of the number and the caller is asked to go on;
the next reading completes it. A number put together from pieces is read back for a yes or no
before it is used (unless it is a secret), since one misheard piece makes it someone else's.

`DigitGatherer` decides, turn by turn, with no I/O: the session says the words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from voxgate.runtime.nlu.numbers import extract_digit_string
from voxgate.runtime.nlu.slots import digit_homophones

#: a group shorter than this is a digit in passing or a mishearing, not a piece of the number
MIN_PIECE_DIGITS = 2
#: a reading this many digits short, or fewer, is a digit the recogniser lost, not a pause between
#: groups (nobody pauses before the last digit): it is asked again as a whole
LOST_DIGITS = 1
#: pieces one number may come in; a reading that would make more starts the number again
MAX_PIECES = 3
#: digits read back per group ("1 1 8 1, 5 9 2 8")
READ_BACK_GROUP = 4

StepKind = Literal["whole", "piece", "confirm", "other"]


@dataclass(frozen=True)
class DigitStep:
    """What one reading did to the number.

    whole: `digits` is the number, ready to use. piece: `digits` are the digits so far, more are
    to come. confirm: `digits` is the number put together from pieces, to be read back and
    confirmed. other: nothing gathered; the reading is judged as usual.
    """

    kind: StepKind
    digits: str = ""


def heard_digits(text: str) -> str:
    """The digit string in a reading, as the slot parser reads it ("" when there is none)."""
    return extract_digit_string(digit_homophones(text)) or ""


def read_back(digits: str) -> str:
    """Digits spaced for a voice to say one by one, in groups: "1 1 8 1, 5 9 2 8"."""
    groups = [digits[i : i + READ_BACK_GROUP] for i in range(0, len(digits), READ_BACK_GROUP)]
    return ", ".join(" ".join(group) for group in groups)


@dataclass
class DigitGatherer:
    """The pieces of one number of `length` digits given so far, for the question `question` (what
    the session is asking: another question starts another gatherer).

    `secret` numbers (a PIN) are never read back, so they are not confirmed either: checking
    them is what verification does.
    """

    question: str
    length: int
    secret: bool = False
    so_far: str = ""
    pieces: int = 0
    pending: str | None = None  # a number put together from pieces, read back and awaiting a yes or no

    @property
    def remaining(self) -> int:
        """Digits still to come for the number under way (the whole length when none is)."""
        return self.length - len(self.so_far)

    def reset(self) -> None:
        """Forget the pieces and any number awaiting confirmation."""
        self.so_far, self.pieces, self.pending = "", 0, None

    def take(self, text: str) -> DigitStep:
        """A reading the slot parser did not accept as the whole number (one it accepts is used as it
        is, and the session resets the gatherer: the caller started again)."""
        digits = heard_digits(text)
        if self.so_far and digits:
            combined = self.so_far + digits
            if len(combined) == self.length:
                self.reset()
                if self.secret:
                    return DigitStep("whole", combined)
                self.pending = combined
                return DigitStep("confirm", combined)
            if len(combined) > self.length:
                self.reset()  # more digits than the number has: misheard, not a piece of it
                return DigitStep("other")
            if self.pieces < MAX_PIECES and len(digits) >= MIN_PIECE_DIGITS:
                self.so_far, self.pieces = combined, self.pieces + 1
                return DigitStep("piece", combined)
        self.reset()
        if MIN_PIECE_DIGITS <= len(digits) <= self.length - LOST_DIGITS - 1:
            self.so_far, self.pieces = digits, 1
            return DigitStep("piece", digits)
        return DigitStep("other")
