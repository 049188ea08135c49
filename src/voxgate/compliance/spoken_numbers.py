"""Spoken numbers and spoken e-mail symbols rewritten for PII detection, with a map back to the original.

Speech recognisers write "four one one one, double five, oh two" and "john dot smith at gmail
dot com". Pattern recognizers need "411155 02" and "john.smith@gmail.com". :func:`normalize_spoken`
rewrites both and keeps an offset map, so a span found in the rewritten text lands on the
caller's original words (widened to whole rewritten pieces, so no half-number is left behind).

Two passes, each an :class:`OffsetMap`:

1. numbers — the conversation engine's own normaliser (:mod:`voxgate.runtime.nlu.numbers`:
   digit runs, "double"/"triple", "oh" inside digit runs, cardinals, spoken pairs);
2. symbols — "dash"/"hyphen" between digits ("dash oh one" too), "plus" before digits, and spoken
   e-mail addresses ("at" / "dot" / "underscore", only when the address ends in a known top-level
   domain; a local part the recogniser split into words, "d garcia", "m a r y", joins up to an
   ordinary word such as "is" or "to"; a spelled domain, "g m x dot de", too).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from spacy.lang.en.stop_words import STOP_WORDS

from voxgate.runtime.nlu.numbers import normalize_numbers

__all__ = ["Edit", "OffsetMap", "SpokenText", "normalize_spoken"]


@dataclass(frozen=True)
class Edit:
    """Replace ``source[start:end]`` with ``text``."""

    start: int
    end: int
    text: str


class OffsetMap:
    """A text rewritten by non-overlapping edits, and the way back to the source positions."""

    def __init__(self, source: str, edits: Sequence[Edit]):
        self.source = source
        pieces: list[str] = []
        self._new_starts: list[int] = []
        self._new_ends: list[int] = []
        self._edits: list[Edit] = []
        cursor = length = 0
        for edit in sorted(edits, key=lambda e: e.start):
            if edit.start < cursor or edit.end < edit.start:
                raise ValueError(f"overlapping or inverted edit at {edit.start}")
            gap = source[cursor : edit.start]
            pieces.append(gap)
            length += len(gap)
            self._new_starts.append(length)
            pieces.append(edit.text)
            length += len(edit.text)
            self._new_ends.append(length)
            self._edits.append(edit)
            cursor = edit.end
        pieces.append(source[cursor:])
        self.text = "".join(pieces)

    def to_source(self, start: int, end: int) -> tuple[int, int]:
        """Map ``[start, end)`` of :attr:`text` to the source; touching an edit widens to all of it."""
        if not 0 <= start <= end <= len(self.text):
            raise ValueError(f"range [{start}, {end}) is outside the rewritten text")
        return self._map(start, is_end=False), self._map(end, is_end=True)

    def _map(self, pos: int, *, is_end: bool) -> int:
        # a start belongs to the edit it falls in; an end to the edit it closes or falls in
        k = (bisect.bisect_left(self._new_starts, pos) if is_end else bisect.bisect_right(self._new_starts, pos)) - 1
        if k < 0:
            return pos
        new_end, edit = self._new_ends[k], self._edits[k]
        if pos < new_end or (is_end and pos == new_end):
            return edit.end if is_end else edit.start
        return pos - new_end + edit.end


@dataclass(frozen=True)
class SpokenText:
    """The original text, the normalised text, and the maps between them (applied in order)."""

    original: str
    text: str
    maps: tuple[OffsetMap, ...]

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        for offset_map in reversed(self.maps):
            start, end = offset_map.to_source(start, end)
        return start, end


_TLDS = (
    "com|net|org|edu|gov|mil|int|info|biz|io|co|me|us|uk|ca|au|nz|ie|de|fr|es|it|nl|be|ch|at|se|no|dk|fi"
    "|pl|pt|br|mx|in|jp|cn|za|ai|app|dev|online|email|mail"
)
_DOT = r"(?:\s+(?:dot|period|point)\s+|\.)"
_SEP_WORDS = {"dot": ".", "period": ".", "point": ".", "underscore": "_", "dash": "-", "hyphen": "-", "minus": "-"}
_WORD = r"[a-z0-9](?:[a-z0-9._%+'-]*[a-z0-9])?"
# a domain label may be spelled out ("g m x dot de")
_LABEL = rf"(?:[a-z](?:\s+[a-z]){{1,7}}(?![\w'])|{_WORD})"
_LOCAL_SEP = r"\s+(?:dot|period|underscore|under\s+score|dash|hyphen)\s+|[._-]"
_SPOKEN_EMAIL = re.compile(
    rf"(?<![\w@.])(?P<local>{_WORD}(?:(?:{_LOCAL_SEP}){_WORD})*(?:\s+\d+)*)"
    rf"(?:\s+at(?:\s+(?:sign|symbol))?\s+|\s*@\s*)"
    # greedy, so that "health dot state dot ca dot us" ends at its last top-level domain
    rf"(?P<domain>{_LABEL}(?:(?:{_DOT}|\s+(?:dash|hyphen)\s+|-){_LABEL})*{_DOT}(?:{_TLDS}))"
    r"(?![\w@-])",
    re.IGNORECASE,
)
# Speech recognisers split a local part into words ("d garcia", "mary dot o connor", "m a r y"): the
# words just before the matched part belong to it unless they are ordinary words ("my email is ...").
_LOCAL_BEFORE = re.compile(rf"(?:^|(?<=\s))(?P<word>[a-z]+|\d+)(?P<sep>{_LOCAL_SEP}|\s+)$", re.IGNORECASE)
_NOT_LOCAL = (
    frozenset(
        """
email e-mail mail address addresses send sent use using change changed update updated it's that's its thats
is was at to new old work personal home business reach contact cc copy reply try yes yeah yep ok okay sure
right so um uh er erm hmm thanks thank please hi hello hey me my mine the a an and or but of for on in it
this that there here its be been am are your you our we us they their i'm i've i'd i'll you've spell spelled
""".split()
    )
    | STOP_WORDS
)
_DASH_BETWEEN_DIGITS = re.compile(r"(?<=\d)\s+(?:dash|hyphen)\s+(?=\d)", re.IGNORECASE)
# "seven three one dash oh one dash ...": "oh" right after a spoken dash is a zero the number pass left as a word
_DASH_OH = re.compile(r"(?<=\d)\s+(?:dash|hyphen)\s+(?:oh|o)\s+(?=\d)", re.IGNORECASE)
_PLUS_BEFORE_DIGITS = re.compile(r"(?<![\w+])plus\s+(?=\d)", re.IGNORECASE)
_SPACED_SYMBOL = re.compile(r"\s+(dot|period|point|underscore|under\s+score|dash|hyphen|minus)\s+", re.IGNORECASE)


def _local_start(text: str, start: int) -> int:
    """Where a spoken address's local part really starts: back over the split-off pieces before it.

    Letters and short digit groups join ("m a r y", "tom h 1987"), and at most two whole words
    ("zoe martin 2001", "mary dot o connor"); an ordinary word ("is", "to", "email") ends it.
    """
    whole = 0
    spelling = False  # inside a run of spelled letters, "a" and "i" are letters too
    for _ in range(12):
        found = _LOCAL_BEFORE.search(text, max(0, start - 40), start)
        if found is None:
            break
        word = found.group("word").lower()
        letter = len(word) == 1 and (spelling or word not in ("a", "i"))
        if (word.isdigit() and len(word) <= 4) or letter:
            spelling = letter
        elif word in _NOT_LOCAL or word.isdigit() or whole >= 2:
            break
        else:
            whole += 1
        start = found.start()
    return start


def _email_text(text: str, start: int, match: re.Match[str]) -> str | None:
    local = text[start : match.start("local")] + match.group("local")
    domain = match.group("domain")
    if " at " in f" {local.lower()} ":
        return None
    written = "@" in match.group(0) and not _SPACED_SYMBOL.search(match.group(0))
    if written:
        return None  # already an address: the e-mail recognizer reads it as it is

    def squash(part: str) -> str:
        part = _SPACED_SYMBOL.sub(lambda m: _SEP_WORDS.get(m.group(1).lower().replace(" ", ""), "_"), part)
        return re.sub(r"\s+", "", part)

    return f"{squash(local)}@{squash(domain)}"


def _symbol_edits(text: str) -> list[Edit]:
    edits: list[Edit] = []
    taken: list[tuple[int, int]] = []
    for match in _SPOKEN_EMAIL.finditer(text):
        start = _local_start(text, match.start())
        if taken and start < taken[-1][1]:
            start = match.start()
        rewritten = _email_text(text, start, match)
        if rewritten is not None:
            edits.append(Edit(start, match.end(), rewritten))
            taken.append((start, match.end()))
    for pattern, repl in ((_DASH_OH, "-0"), (_DASH_BETWEEN_DIGITS, "-"), (_PLUS_BEFORE_DIGITS, "+")):
        for match in pattern.finditer(text):
            if not any(s <= match.start() < e for s, e in taken):
                edits.append(Edit(match.start(), match.end(), repl))
                taken.append((match.start(), match.end()))
    return edits


def normalize_spoken(text: str) -> SpokenText:
    """Digits for spoken numbers and symbols for spoken e-mail punctuation, with the offset maps."""
    numbers = normalize_numbers(text)
    first = OffsetMap(text, [Edit(s.orig_start, s.orig_end, s.text) for s in numbers.spans if s.spoken])
    second = OffsetMap(first.text, _symbol_edits(first.text))
    return SpokenText(original=text, text=second.text, maps=(first, second))
