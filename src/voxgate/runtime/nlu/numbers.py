"""Spoken-number normalisation for speech-recognition text, with an offset map back to the original.

Speech recognisers hand us "my account is four five six seven" or "twenty three
fifty". :func:`normalize_numbers` rewrites the numbers as digits and records, for
every number, where it sits in both the normalised and the original text, so that
later steps (slot parsing, PII redaction) can work on digits but act on the
caller's original words.

Rules, and why:

* Adjacent single digits join into one digit string ("four five six seven" ->
  "4567"): callers read account numbers, PINs and phone numbers digit by digit.
* "double two" -> "22", "triple five" -> "555".
* "zero" and "nought" are always 0; "oh" and "o" only inside a run of digits
  ("one oh five", "oh two oh seven") so that "oh I see" keeps its "oh".
* Ordinary cardinals: "twenty three" -> 23, "one hundred and five" -> 105,
  "two thousand and twenty six" -> 2026, "a hundred" -> 100.
* Two spoken two-digit groups make a *pair* ("nineteen eighty five",
  "twenty three fifty", "twelve oh five"): the text gets the digits ("1985",
  "2350", "1205") and the span keeps the parts, so a year, a PIN and a money
  parser (23.50) can each read it their own way.
* Longer mixed runs ("five five five twenty three forty") join into one digit
  string, as phone numbers are often read in groups.
* Ordinals become "3rd", "21st" when they look like dates ("the third",
  "march third", "third of march"); a bare "first"/"second" elsewhere is left
  alone because it is usually an adverb ("first I want...", "wait a second").
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Normalized",
    "NumberSpan",
    "SpanKind",
    "extract_digit_string",
    "normalize_numbers",
]

SpanKind = Literal["digits", "cardinal", "pair", "ordinal", "decimal", "numeral"]

UNITS: dict[str, int] = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
TEENS: dict[str, int] = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS: dict[str, int] = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fourty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
UNIT_ORDINALS: dict[str, int] = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
}
TEEN_ORDINALS: dict[str, int] = {
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
}
TENS_ORDINALS: dict[str, int] = {
    "twentieth": 20,
    "thirtieth": 30,
    "fortieth": 40,
    "fiftieth": 50,
    "sixtieth": 60,
    "seventieth": 70,
    "eightieth": 80,
    "ninetieth": 90,
}
BIG_SCALES: dict[str, int] = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
ALWAYS_ZERO = frozenset({"zero", "nought", "naught"})
MAYBE_ZERO = frozenset({"oh", "o"})
REPEATERS: dict[str, int] = {"double": 2, "triple": 3, "treble": 3}
MONTHS = frozenset(
    {
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    }
)
# A lone "one" after these is a pronoun ("the one I ordered"), not a number.
_ONE_PRONOUN_AFTER = frozenset(
    {
        "the",
        "this",
        "that",
        "which",
        "no",
        "every",
        "any",
        "each",
        "some",
        "another",
        "other",
        "last",
        "next",
        "only",
        "right",
        "wrong",
        "new",
        "old",
        "little",
        "big",
        "same",
        "a",
    }
)
# A lone ordinal word counts as a date ordinal after these words...
_ORDINAL_CONTEXT_BEFORE = frozenset({"the", "on", "of"}) | MONTHS
# ...or when followed by "of" and one of these ("third of march", "first of the month").
_ORDINAL_OF_FOLLOWERS = frozenset({"the", "this", "next", "last", "every"}) | MONTHS

_TOKEN_RE = re.compile(
    r"\d+(?:[.,:/-]\d+)*(?:st|nd|rd|th)?"  # numerals, incl. 23.50, 1,200, 3/14/1985, 3rd
    r"|[A-Za-z]+(?:'[A-Za-z]+)*"  # words, incl. contractions
    r"|\S"  # any other single character (punctuation, currency signs)
)
_RUN_SEPARATORS = frozenset({",", "-"})


@dataclass(frozen=True)
class NumberSpan:
    """One number in the text: where it is in the normalised and the original text, and what it is.

    ``parts`` holds the spoken groups of a ``pair`` ((23, 50) for "twenty three
    fifty"), the value of a ``cardinal``/``ordinal`` as a 1-tuple, and is empty for
    digit strings, decimals and numerals the recogniser already wrote as digits.
    """

    start: int
    end: int
    orig_start: int
    orig_end: int
    kind: SpanKind
    text: str
    parts: tuple[int, ...] = ()

    @property
    def spoken(self) -> bool:
        """True if this number was rewritten from words (False for digits already in the text)."""
        return self.kind != "numeral"


@dataclass(frozen=True)
class Normalized:
    """The normalised text, the original, and every number found, in order."""

    text: str
    original: str
    spans: tuple[NumberSpan, ...]

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a ``[start, end)`` range of :attr:`text` onto the original text.

        A range that touches part of a rewritten number widens to the whole of the
        original words, so a redaction never leaves half a spoken number behind.
        """
        if not 0 <= start <= end <= len(self.text):
            raise ValueError(f"range [{start}, {end}) is outside the normalised text")
        return self._map(start, is_end=False), self._map(end, is_end=True)

    def original_index(self, index: int) -> int:
        """Original-text position of normalised-text position ``index``."""
        return self._map(index, is_end=False)

    def _map(self, pos: int, *, is_end: bool) -> int:
        changed = [s for s in self.spans if s.spoken]
        k = bisect.bisect_right([s.start for s in changed], pos) - 1
        if k < 0:
            return pos  # before the first rewritten number nothing has moved
        span = changed[k]
        if pos == span.start:
            return span.orig_start
        if pos < span.end:  # strictly inside a rewritten number: widen to all of it
            return span.orig_end if is_end else span.orig_start
        return pos - span.end + span.orig_end


@dataclass(frozen=True)
class _Token:
    text: str
    low: str
    start: int
    end: int
    kind: Literal["word", "num", "numx", "punct"]


_GroupKind = Literal["unit", "zero", "oh", "word2", "scaled", "ordinal", "numeral", "repeat", "decimal"]
_DIGITISH: frozenset[str] = frozenset({"unit", "zero", "oh", "word2", "numeral", "repeat"})


@dataclass(frozen=True)
class _Group:
    """A number-like stretch of tokens ``[first, last]`` before runs are combined."""

    first: int
    last: int
    kind: _GroupKind
    digits: str  # the digits it stands for ("23", "55", "0", "23.5")
    value: int = 0


def _ordinal_word_value(word: str, *, opens_chunk: bool, after_tens: bool) -> int | None:
    """The value of an ordinal word where the grammar allows one ("third", "twenty *third*")."""
    if word in UNIT_ORDINALS and (opens_chunk or after_tens):
        return UNIT_ORDINALS[word]
    if opens_chunk:
        return TEEN_ORDINALS.get(word, TENS_ORDINALS.get(word))
    return None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    for match in _TOKEN_RE.finditer(text):
        raw = match.group()
        # isdecimal, not isdigit: "²" is a digit to str.isdigit yet neither \d nor int() takes it
        if raw[0].isdecimal():
            kind: Literal["word", "num", "numx", "punct"] = "num" if raw.isdecimal() else "numx"
        elif raw[0].isalpha():
            kind = "word"
        else:
            kind = "punct"
        tokens.append(_Token(raw, raw.lower(), match.start(), match.end(), kind))
    return tokens


class _Parser:
    """Finds the number groups in a token list and combines adjacent ones into spans."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)

    # --- token helpers -------------------------------------------------------------

    def low(self, i: int) -> str:
        return self.toks[i].low if 0 <= i < len(self.toks) else ""

    def is_word(self, i: int, vocab: Container[str]) -> bool:
        return 0 <= i < len(self.toks) and self.toks[i].kind == "word" and self.toks[i].low in vocab

    def is_single_digit_numeral(self, i: int) -> bool:
        return 0 <= i < len(self.toks) and self.toks[i].kind == "num" and len(self.toks[i].text) == 1

    def starts_digit(self, i: int) -> bool:
        """Could token ``i`` start a digit-ish group (used for look-ahead decisions)?"""
        if not 0 <= i < len(self.toks):
            return False
        tok = self.toks[i]
        if tok.kind == "num":
            return True
        if tok.kind != "word":
            return False
        return any(tok.low in vocab for vocab in (UNITS, TEENS, TENS, ALWAYS_ZERO, MAYBE_ZERO, REPEATERS))

    # --- groups -------------------------------------------------------------------

    def parse_group(self, i: int) -> _Group | None:
        group = self._parse_basic_group(i)
        if group is None or group.kind == "ordinal":
            return group
        return self._extend_decimal(group)

    def _parse_basic_group(self, i: int) -> _Group | None:
        tok = self.toks[i]
        if tok.kind == "num":
            return _Group(i, i, "numeral", tok.text, int(tok.text))
        if tok.kind != "word":
            return None
        if tok.low in ALWAYS_ZERO:
            return _Group(i, i, "zero", "0", 0)
        if tok.low in MAYBE_ZERO:
            return _Group(i, i, "oh", "0", 0)
        if tok.low in REPEATERS:
            return self._parse_repeat(i)
        return self._parse_cardinal(i)

    def _digit_at(self, i: int) -> str | None:
        """The single digit that token ``i`` names, if it names exactly one."""
        if self.is_single_digit_numeral(i):
            return self.toks[i].text
        if self.is_word(i, UNITS):
            return str(UNITS[self.low(i)])
        if self.is_word(i, ALWAYS_ZERO | MAYBE_ZERO):
            return "0"
        return None

    def _parse_repeat(self, i: int) -> _Group | None:
        j = i + 1
        if self.low(j) == "-":
            j += 1
        digit = self._digit_at(j)
        if digit is None:
            return None
        return _Group(i, j, "repeat", digit * REPEATERS[self.low(i)])

    def _parse_cardinal(self, i: int) -> _Group | None:
        """Parse an English cardinal (or a cardinal ending in an ordinal word) starting at ``i``."""
        total = 0
        current = 0
        state = "start"
        last_big = float("inf")
        words = 0
        has_scale = False
        end = -1  # index of the last token that belongs to the number
        j = i
        n = len(self.toks)
        while j < n:
            tok = self.toks[j]
            low = tok.low
            if tok.kind == "punct":
                # "twenty-three": a hyphen only joins a tens word to a unit/ordinal word
                joins = self.is_word(j + 1, UNITS) or self.is_word(j + 1, UNIT_ORDINALS)
                if low == "-" and state == "tens" and joins:
                    j += 1
                    continue
                break
            if tok.kind != "word":
                break
            scale_follows = self.low(j + 1) == "hundred" or self.low(j + 1) in BIG_SCALES
            if low in ("a", "an") and state == "start" and scale_follows:
                current, state = 1, "a"
                j += 1
                continue
            if low == "and":
                follows_number = (
                    self.is_word(j + 1, UNITS)
                    or self.is_word(j + 1, TEENS)
                    or self.is_word(j + 1, TENS)
                    or self.is_word(j + 1, UNIT_ORDINALS)
                    or self.is_word(j + 1, TEEN_ORDINALS)
                    or self.is_word(j + 1, TENS_ORDINALS)
                )
                if state in ("hundred", "big") and follows_number and self.low(j + 1) != "zero":
                    state = "and"
                    j += 1
                    continue
                break
            opens_chunk = state in ("start", "hundred", "and", "big")
            ordinal = _ordinal_word_value(low, opens_chunk=opens_chunk, after_tens=state == "tens")
            if ordinal is not None:  # an ordinal word always ends the number ("twenty third")
                value = total + current + ordinal
                return _Group(i, j, "ordinal", str(value), value)
            if low in UNITS and low != "zero":
                if opens_chunk:
                    current += UNITS[low]
                    state = "unit"
                elif state == "tens":
                    current += UNITS[low]
                    state = "tens_unit"
                else:
                    break
            elif low in TEENS and opens_chunk:
                current += TEENS[low]
                state = "teen"
            elif low in TENS and opens_chunk:
                current += TENS[low]
                state = "tens"
            elif low == "hundred" and state in ("start", "a", "unit", "teen", "tens", "tens_unit") and current < 100:
                current = max(current, 1) * 100
                state = "hundred"
                has_scale = True
            elif (
                low in BIG_SCALES
                and BIG_SCALES[low] < last_big
                and state in ("start", "a", "unit", "teen", "tens", "tens_unit", "hundred")
            ):
                total += max(current, 1) * BIG_SCALES[low]
                current = 0
                last_big = BIG_SCALES[low]
                state = "big"
                has_scale = True
            else:
                break
            words += 1
            end = j
            j += 1
        if end < i:
            return None
        value = total + current
        if has_scale:
            kind: _GroupKind = "scaled"
        elif words == 1 and value < 10:
            kind = "unit"
        else:
            kind = "word2"
        return _Group(i, end, kind, str(value), value)

    def _extend_decimal(self, group: _Group) -> _Group:
        """Absorb "point five" after a number: "twenty three point five" -> 23.5."""
        j = group.last + 1
        if self.low(j) != "point":
            return group
        fraction = ""
        k = j + 1
        while (digit := self._digit_at(k)) is not None:
            fraction += digit
            k += 1
        if not fraction:
            return group
        return _Group(group.first, k - 1, "decimal", f"{group.digits}.{fraction}", group.value)

    # --- runs ---------------------------------------------------------------------

    def collect_run(self, i: int) -> tuple[list[_Group], int]:
        """Groups starting at ``i`` that follow one another with at most a comma or hyphen between."""
        groups: list[_Group] = []
        j = i
        while j < len(self.toks):
            group = self.parse_group(j)
            if group is None:
                break
            groups.append(group)
            j = group.last + 1
            if group.kind in ("ordinal", "decimal", "scaled"):
                break  # these never join a digit string
            if self.low(j) in _RUN_SEPARATORS and self.starts_digit(j + 1):
                j += 1
        end = groups[-1].last + 1 if groups else i + 1
        return groups, end

    def resolve_oh(self, groups: list[_Group]) -> list[list[_Group]]:
        """Decide which "oh"/"o" are zeros, splitting the run where one is a plain word."""
        keep: list[bool] = []
        for k, group in enumerate(groups):
            if group.kind != "oh":
                keep.append(True)
                continue
            prev1 = k >= 1 and keep[k - 1] and groups[k - 1].kind in _DIGITISH
            prev2 = prev1 and k >= 2 and keep[k - 2] and groups[k - 2].kind in _DIGITISH
            next1 = k + 1 < len(groups) and groups[k + 1].kind in _DIGITISH
            next2 = next1 and k + 2 < len(groups) and groups[k + 2].kind in _DIGITISH
            keep.append((prev1 and next1) or next2 or prev2)
        parts: list[list[_Group]] = [[]]
        for group, kept in zip(groups, keep):
            if kept:
                parts[-1].append(group)
            elif parts[-1]:
                parts.append([])
        return [p for p in parts if p]


def _pair_parts(groups: Sequence[_Group]) -> tuple[int, int] | None:
    """(first, second) if the groups read as a spoken pair like "nineteen eighty five" or "twelve oh five"."""
    if len(groups) == 2:
        a, b = groups
        if a.kind in ("unit", "word2") and a.value > 0 and b.kind == "word2":
            return a.value, b.value
    if len(groups) == 3:
        a, b, c = groups
        if a.kind == "word2" and b.kind in ("oh", "zero") and c.kind == "unit":
            return a.value, c.value
    return None


def _split_digitish(groups: list[_Group]) -> list[list[_Group]]:
    """Split a run so that scaled numbers, ordinals and decimals stand alone."""
    pieces: list[list[_Group]] = []
    for group in groups:
        if group.kind in _DIGITISH and pieces and pieces[-1][-1].kind in _DIGITISH:
            pieces[-1].append(group)
        else:
            pieces.append([group])
    return pieces


@dataclass(frozen=True)
class _Replacement:
    orig_start: int
    orig_end: int
    kind: SpanKind
    text: str
    parts: tuple[int, ...]


def _ordinal_suffix(value: int) -> str:
    if 10 <= value % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")


class _Emitter:
    """Turns combined runs into replacements on the original text."""

    def __init__(self, parser: _Parser) -> None:
        self.parser = parser
        self.out: list[_Replacement] = []

    def span_of(self, groups: Sequence[_Group]) -> tuple[int, int]:
        toks = self.parser.toks
        return toks[groups[0].first].start, toks[groups[-1].last].end

    def add(self, groups: Sequence[_Group], kind: SpanKind, text: str, parts: tuple[int, ...] = ()) -> None:
        start, end = self.span_of(groups)
        self.out.append(_Replacement(start, end, kind, text, parts))

    def emit_piece(self, piece: list[_Group]) -> None:
        if len(piece) == 1:
            self.emit_single(piece[0])
            return
        if all(g.kind == "numeral" for g in piece):
            if all(len(g.digits) == 1 for g in piece):
                self.add(piece, "digits", "".join(g.digits for g in piece))
            else:
                for g in piece:  # "12 34 56": the recogniser grouped them; keep its grouping
                    self.add([g], "numeral", g.digits)
            return
        pair = _pair_parts(piece)
        if pair is not None:
            self.add(piece, "pair", f"{pair[0]}{pair[1]:02d}", pair)
            return
        self.add(piece, "digits", "".join(g.digits for g in piece))

    def emit_single(self, group: _Group) -> None:
        parser = self.parser
        if group.kind == "numeral":
            self.add([group], "numeral", group.digits)
        elif group.kind == "repeat":
            self.add([group], "digits", group.digits)
        elif group.kind == "decimal":
            self.add([group], "decimal", group.digits)
        elif group.kind == "ordinal":
            if self.is_date_ordinal(group):
                self.add([group], "ordinal", f"{group.value}{_ordinal_suffix(group.value)}", (group.value,))
        elif group.kind == "oh":
            return  # a lone "oh" is an interjection
        elif group.kind == "unit" and group.value == 1 and parser.low(group.first - 1) in _ONE_PRONOUN_AFTER:
            return  # "the one I ordered"
        else:
            self.add([group], "cardinal", group.digits, (group.value,))

    def is_date_ordinal(self, group: _Group) -> bool:
        """Multi-word ordinals always count; a lone ordinal word only in a date-like context."""
        parser = self.parser
        if group.last > group.first:
            return True
        before, after = parser.low(group.first - 1), parser.low(group.last + 1)
        if before in _ORDINAL_CONTEXT_BEFORE:
            return True
        if after == "of" and parser.low(group.last + 2) in _ORDINAL_OF_FOLLOWERS:
            return True
        # the whole utterance is the ordinal ("third.")
        return all(t.kind == "punct" for k, t in enumerate(parser.toks) if k != group.first)


def _rebuild(original: str, replacements: list[_Replacement]) -> Normalized:
    pieces: list[str] = []
    spans: list[NumberSpan] = []
    cursor = 0
    length = 0
    for rep in replacements:
        gap = original[cursor : rep.orig_start]
        pieces.append(gap)
        length += len(gap)
        end = length + len(rep.text)
        spans.append(NumberSpan(length, end, rep.orig_start, rep.orig_end, rep.kind, rep.text, rep.parts))
        pieces.append(rep.text)
        length += len(rep.text)
        cursor = rep.orig_end
    pieces.append(original[cursor:])
    return Normalized("".join(pieces), original, tuple(spans))


def normalize_numbers(text: str) -> Normalized:
    """Rewrite the spoken numbers in ``text`` as digits; see the module docstring for the rules."""
    parser = _Parser(text)
    emitter = _Emitter(parser)
    i = 0
    while i < len(parser.toks):
        tok = parser.toks[i]
        if tok.kind == "numx":
            emitter.out.append(_Replacement(tok.start, tok.end, "numeral", tok.text, ()))
            i += 1
            continue
        groups, end = parser.collect_run(i)
        for run in parser.resolve_oh(groups):
            for piece in _split_digitish(run):
                emitter.emit_piece(piece)
        i = end
    return _rebuild(text, emitter.out)


_ORDINAL_NUMERAL_RE = re.compile(r"\d+(?:st|nd|rd|th)$")


def extract_digit_string(text: str) -> str | None:
    """Every digit the caller said, in order ("one two three four" and "12 34" alike), or None.

    Ordinals ("the third", "3rd") are not digits the caller dictated and are skipped.
    """
    digits = "".join(
        re.sub(r"\D", "", span.text)
        for span in normalize_numbers(text).spans
        if span.kind != "ordinal" and not _ORDINAL_NUMERAL_RE.match(span.text)
    )
    return digits or None
