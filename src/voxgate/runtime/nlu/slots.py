"""Typed slot parsing: turns a caller's answer (speech-recognition text) into a typed value or an error code.

:func:`parse_slot` never raises for bad caller input; it returns a
:class:`SlotParse` whose ``error`` is a short machine code the conversation
engine can branch on (re-prompt, confirm, hand off):

* ``no_digits`` / ``wrong_length`` — digit-like slots (``detail["heard"]`` says how many digits were heard)
* ``no_date`` / ``invalid_date`` — dates
* ``unclear`` — yes/no answers that are neither, or hedged ("I'm not sure")
* ``no_amount`` / ``ambiguous`` — money
* ``no_match`` / ``ambiguous`` — enums
* ``empty`` — free text
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from voxgate.runtime.nlu.embeddings import Embedder
from voxgate.runtime.nlu.numbers import NumberSpan, extract_digit_string, normalize_numbers

__all__ = ["DIGIT_SLOT_TYPES", "SLOT_TYPES", "SlotParse", "parse_slot"]

SLOT_TYPES = frozenset(
    {
        "digits",
        "account_number",
        "pin",
        "postcode",
        "phone",
        "date",
        "yes_no",
        "money",
        "enum",
        "free_text",
    }
)

#: The slot types whose answer is a string of digits (said, or keyed on a phone's keypad).
DIGIT_SLOT_TYPES = frozenset({"digits", "account_number", "pin", "postcode", "phone"})

# Defaults per digit-like slot type: (length, min_length, max_length).
_DIGIT_DEFAULTS: dict[str, tuple[int | None, int | None, int | None]] = {
    "digits": (None, None, None),
    "account_number": (None, 4, 20),
    "pin": (4, None, None),
    "postcode": (5, None, None),
}

#: Cosine similarity an enum answer needs to an option (or a synonym) when no word matched.
DEFAULT_ENUM_THRESHOLD = 0.45
#: ...and how far ahead of the runner-up it must be, so near-ties are not guessed.
DEFAULT_ENUM_MARGIN = 0.05


@dataclass(frozen=True)
class SlotParse:
    """The outcome of parsing one slot answer."""

    ok: bool
    value: object | None = None
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, value: object, **detail: Any) -> SlotParse:
        """A slot value that parsed."""
        return cls(True, value, None, detail)

    @classmethod
    def failure(cls, error: str, **detail: Any) -> SlotParse:
        """A failed parse, with the error to tell the caller."""
        return cls(False, None, error, detail)


def parse_slot(
    slot_type: str,
    text: str,
    *,
    length: int | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    values: Mapping[str, Sequence[str]] | None = None,
    today: dt.date | None = None,
    embedder: Embedder | None = None,
    enum_threshold: float = DEFAULT_ENUM_THRESHOLD,
    prefer_future: bool = True,
    default_country_code: str = "1",
) -> SlotParse:
    """Parse ``text`` as a value of ``slot_type`` (one of :data:`SLOT_TYPES`).

    ``length``/``min_length``/``max_length`` constrain digit-like slots; ``values``
    maps each enum option to its synonyms; ``today`` anchors relative dates;
    ``embedder`` enables the semantic fallback for enums; ``prefer_future`` picks
    the next occurrence for dates said without a year ("march third");
    ``default_country_code`` completes national phone numbers.
    """
    if slot_type in _DIGIT_DEFAULTS:
        d_len, d_min, d_max = _DIGIT_DEFAULTS[slot_type]
        if length is None and min_length is None and max_length is None:
            length, min_length, max_length = d_len, d_min, d_max
        return _parse_digits(text, length=length, min_length=min_length, max_length=max_length)
    if slot_type == "phone":
        return _parse_phone(text, default_country_code=default_country_code)
    if slot_type == "date":
        return _parse_date(text, today=today or dt.date.today(), prefer_future=prefer_future)
    if slot_type == "yes_no":
        return _parse_yes_no(text)
    if slot_type == "money":
        return _parse_money(text)
    if slot_type == "enum":
        if not values:
            raise ValueError("an enum slot needs values={canonical: [synonyms, ...]}")
        return _parse_enum(text, values, embedder=embedder, threshold=enum_threshold)
    if slot_type == "free_text":
        cleaned = " ".join(text.split())
        return SlotParse.success(cleaned) if cleaned else SlotParse.failure("empty")
    raise ValueError(f"unknown slot type {slot_type!r}; expected one of {sorted(SLOT_TYPES)}")


# --- digits -------------------------------------------------------------------------


# Failure details never carry the digits themselves: they are often PII and details get logged.
# Words speech recognition writes for digit names when it lacks the context that digits are
# being dictated ("6 for 6 8", "when when 815 908"). Only read as digits next to other digits.
_DIGIT_HOMOPHONES = {
    "won": "one",
    "when": "one",
    "wan": "one",
    "to": "two",
    "too": "two",
    "tu": "two",
    "tree": "three",
    "free": "three",
    "for": "four",
    "fore": "four",
    "far": "four",
    "sicks": "six",
    "sex": "six",
    "ate": "eight",
    "eat": "eight",
    "nein": "nine",
    "niner": "nine",
}
_DIGITISH_RE = re.compile(
    r"^(?:\d+|zero|oh|o|one|two|three|four|five|six|seven|eight|nine|double|triple)$", re.IGNORECASE
)


def digit_homophones(text: str) -> str:
    """Rewrite digit homophones that sit in a run of dictated digits; leave other words alone."""
    tokens = re.findall(r"[A-Za-z']+|\d+|[^\sA-Za-z\d]+|\s+", text)
    words = [i for i, t in enumerate(tokens) if not t.isspace() and re.match(r"[A-Za-z\d]", t)]
    digitish = {i for i in words if _DIGITISH_RE.match(tokens[i])}
    if not digitish:
        return text
    homophones = {i for i in words if tokens[i].lower() in _DIGIT_HOMOPHONES}
    changed = True
    while changed:  # a homophone next to a digit (or a rewritten homophone) is a digit too
        changed = False
        for pos, i in enumerate(words):
            if i in homophones and i not in digitish:
                neighbours = [words[pos - 1]] if pos > 0 else []
                neighbours += [words[pos + 1]] if pos + 1 < len(words) else []
                if any(n in digitish for n in neighbours):
                    digitish.add(i)
                    tokens[i] = _DIGIT_HOMOPHONES[tokens[i].lower()]
                    changed = True
    return "".join(tokens)


_CORRECTION_RE = re.compile(
    r"\b(?:sorry|no|i mean|actually|wait|correction|let me (?:try|say) (?:that|it) again)\b", re.IGNORECASE
)
#: A repeat shorter than a whole number must still be this long to count as one (a lone extra
#: digit is a mishearing, not a repeat).
_MIN_PARTIAL_REPEAT = 3


def _one_reading(digits: str, length: int, text: str) -> str | None:
    """The number, when more than `length` digits are one number said more than once.

    Callers repeat a number to be sure ("1181 5908, that's 1181 5908"), correct themselves
    ("1181 5908, sorry, 1181 5907"), and Whisper sometimes writes a digit string twice or
    starts looping on it ("7 9 0 4 1 7 7 8. 7 9 0 4 1 7 7 8."). Kept: with a correction word
    and exactly two readings, the last; otherwise the first, when what follows it repeats it
    exactly (a whole second reading, or at least `_MIN_PARTIAL_REPEAT` digits of one, a loop's
    ragged tail after a whole repeat ignored). Anything else is not guessed at.
    """
    first, rest = digits[:length], digits[length:]
    if len(rest) == length and _CORRECTION_RE.search(text):
        return rest
    if len(rest) >= length:
        return first if rest[:length] == first else None
    if len(rest) >= _MIN_PARTIAL_REPEAT and first.startswith(rest):
        return first
    return None


def _parse_digits(text: str, *, length: int | None, min_length: int | None, max_length: int | None) -> SlotParse:
    digits = extract_digit_string(digit_homophones(text))
    if digits is None:
        return SlotParse.failure("no_digits", heard=0)
    heard = len(digits)
    if length is not None and heard > length:
        kept = _one_reading(digits, length, text)
        if kept is not None:
            return SlotParse.success(kept, heard=heard, repeated=True)
    if length is not None and heard != length:
        return SlotParse.failure("wrong_length", heard=heard, expected=length)
    if min_length is not None and heard < min_length:
        return SlotParse.failure("wrong_length", heard=heard, min_length=min_length)
    if max_length is not None and heard > max_length:
        return SlotParse.failure("wrong_length", heard=heard, max_length=max_length)
    return SlotParse.success(digits, heard=heard)


_INTERNATIONAL_PREFIX_RE = re.compile(r"^\s*(?:\+|plus\b|00\b|double (?:oh|o|zero)\b)", re.IGNORECASE)


def _parse_phone(text: str, *, default_country_code: str) -> SlotParse:
    """Normalise to E.164-ish "+<country><number>"; national numbers get ``default_country_code``."""
    digits = extract_digit_string(digit_homophones(text))
    if digits is None:
        return SlotParse.failure("no_digits", heard=0)
    international = bool(_INTERNATIONAL_PREFIX_RE.match(text))
    if international and digits.startswith("00"):
        digits = digits[2:]
    if not international:
        if digits.startswith("0"):
            digits = default_country_code + digits[1:]  # national trunk prefix, e.g. UK 07...
        elif len(digits) == 10:
            digits = default_country_code + digits
        elif not (len(digits) == 11 and digits.startswith(default_country_code)):
            return SlotParse.failure("wrong_length", heard=len(digits), min_length=10)
    # E.164 allows at most 15 digits; anything under 8 cannot be a full number.
    if not 8 <= len(digits) <= 15:
        return SlotParse.failure("wrong_length", heard=len(digits), min_length=10, max_length=15)
    return SlotParse.success("+" + digits, heard=len(digits))


# --- dates --------------------------------------------------------------------------

_MONTHS: dict[str, int] = {
    name: number
    for number in range(1, 13)
    for name in (calendar.month_name[number].lower(), calendar.month_abbr[number].lower())
}
_MONTHS["sept"] = 9
_WEEKDAYS: dict[str, int] = {calendar.day_name[d].lower(): d for d in range(7)}
_RELATIVE_DAYS: dict[str, int] = {
    "day after tomorrow": 2,
    "day before yesterday": -2,
    "tomorrow": 1,
    "today": 0,
    "tonight": 0,
    "yesterday": -1,
}
_ISO_RE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_NUMERIC_DATE_RE = re.compile(r"\b(\d{1,2})[/.-](\d{1,2})(?:[/.-](\d{2}|\d{4}))?\b")
_IN_DAYS_RE = re.compile(r"\bin (\d+) (day|days|week|weeks)\b")
_WEEKDAY_RE = re.compile(r"\b(?:(next|this|last|coming)\s+)?(" + "|".join(_WEEKDAYS) + r")\b")
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_MONTH = r"(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\b\.?"
_YEAR = r"(?:,?\s*(?:of\s+)?(\d{4}|\d{2})\b)?"
_DAY_MONTH_RE = re.compile(r"\b(?:the\s+)?" + _DAY + r"\s+(?:of\s+)?" + _MONTH + _YEAR)
_MONTH_DAY_RE = re.compile(r"\b" + _MONTH + r"\s+(?:the\s+)?" + _DAY + r"\b" + _YEAR)
_DAY_ONLY_RE = re.compile(r"(?:^|\bthe\s+|\bon\s+)(\d{1,2})(st|nd|rd|th)?\b")


def _parse_date(text: str, *, today: dt.date, prefer_future: bool) -> SlotParse:
    normalized = normalize_numbers(text).text.lower()
    for parser in (_date_iso, _date_numeric, _date_words, _date_relative, _date_weekday, _date_day_only):
        result = parser(normalized, today, prefer_future)
        if result is not None:
            return result
    return SlotParse.failure("no_date")


def _make_date(year: int, month: int, day: int, **detail: Any) -> SlotParse:
    try:
        return SlotParse.success(dt.date(year, month, day), **detail)
    except ValueError:
        return SlotParse.failure("invalid_date", year=year, month=month, day=day)


def _full_year(year: int, today: dt.date) -> int:
    """Two-digit years: up to ten years ahead are this century, the rest the last one."""
    if year >= 100:
        return year
    century = today.year - today.year % 100
    return century + year if century + year <= today.year + 10 else century - 100 + year


def _next_occurrence(month: int, day: int, today: dt.date, prefer_future: bool) -> SlotParse:
    """A month and day without a year: this year, or next year if that date has passed."""
    result = _make_date(today.year, month, day, year_inferred=True)
    if result.ok and prefer_future and isinstance(result.value, dt.date) and result.value < today:
        return _make_date(today.year + 1, month, day, year_inferred=True)
    return result


def _date_iso(text: str, today: dt.date, prefer_future: bool) -> SlotParse | None:
    match = _ISO_RE.search(text)
    return _make_date(int(match[1]), int(match[2]), int(match[3])) if match else None


def _date_numeric(text: str, today: dt.date, prefer_future: bool) -> SlotParse | None:
    """3/14/1985 (month first, as in the US) or 14/3/1985 when the first number cannot be a month."""
    match = _NUMERIC_DATE_RE.search(text)
    if not match:
        return None
    first, second = int(match[1]), int(match[2])
    month, day = (second, first) if first > 12 >= second else (first, second)
    if match[3] is None:
        return _next_occurrence(month, day, today, prefer_future)
    return _make_date(_full_year(int(match[3]), today), month, day)


def _date_words(text: str, today: dt.date, prefer_future: bool) -> SlotParse | None:
    """ "the 3rd of march 1985", "14 march", "march 3rd", "march the 3rd, 1985"."""
    for regex, day_group, month_group in ((_DAY_MONTH_RE, 1, 2), (_MONTH_DAY_RE, 2, 1)):
        match = regex.search(text)
        if match:
            month = _MONTHS[match[month_group]]
            day = int(match[day_group])
            if match[3] is None:
                return _next_occurrence(month, day, today, prefer_future)
            return _make_date(_full_year(int(match[3]), today), month, day)
    return None


def _date_relative(text: str, today: dt.date, prefer_future: bool) -> SlotParse | None:
    for phrase, offset in _RELATIVE_DAYS.items():  # longest phrases first, by construction
        if re.search(rf"\b{phrase}\b", text):
            return SlotParse.success(today + dt.timedelta(days=offset))
    match = _IN_DAYS_RE.search(text)
    if match:
        days = int(match[1]) * (7 if match[2].startswith("week") else 1)
        return SlotParse.success(today + dt.timedelta(days=days))
    return None


def _date_weekday(text: str, today: dt.date, prefer_future: bool) -> SlotParse | None:
    """ "friday"/"this friday" = the coming one (today counts); "next friday" = strictly after today."""
    match = _WEEKDAY_RE.search(text)
    if not match:
        return None
    modifier, weekday = match[1], _WEEKDAYS[match[2]]
    if modifier == "last":
        back = (today.weekday() - weekday) % 7 or 7
        return SlotParse.success(today - dt.timedelta(days=back))
    ahead = (weekday - today.weekday()) % 7
    if ahead == 0 and modifier == "next":
        ahead = 7
    return SlotParse.success(today + dt.timedelta(days=ahead))


def _date_day_only(text: str, today: dt.date, prefer_future: bool) -> SlotParse | None:
    """ "on the 3rd": this month, or next month if the day has passed."""
    match = _DAY_ONLY_RE.search(text)
    if not match or (match[2] is None and not re.fullmatch(r"\s*(?:on\s+)?(?:the\s+)?\d{1,2}\s*", text)):
        return None  # a bare number is only a day when it is the whole answer
    day = int(match[1])
    result = _make_date(today.year, today.month, day, month_inferred=True)
    if prefer_future and (not result.ok or (isinstance(result.value, dt.date) and result.value < today)):
        year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
        return _make_date(year, month, day, month_inferred=True)
    return result


# --- yes / no -----------------------------------------------------------------------

# Checked before anything else: a hedge is neither yes nor no.
_HEDGES = ("not sure", "don't know", "dont know", "do not know", "no idea", "maybe", "perhaps")
# Phrases that contain a negative word but mean yes; removed before looking for negatives.
_AFFIRMING_NEGATIVES = ("no problem", "no worries", "why not", "not a problem", "don't mind", "do not mind")
_NEGATIVE = (
    "no",
    "nope",
    "nah",
    "nay",
    "not",
    "don't",
    "dont",
    "do not",
    "never",
    "cancel",
    "negative",
    "incorrect",
    "wrong",
    "stop",
    "no thanks",
    "no thank you",
    "isn't",
    "wasn't",
    "that's not",
)
_AFFIRMATIVE = (
    *_AFFIRMING_NEGATIVES,
    "yes",
    "yeah",
    "yea",
    "yep",
    "yup",
    "ya",
    "sure",
    "correct",
    "right",
    "that's right",
    "go ahead",
    "please do",
    "ok",
    "okay",
    "absolutely",
    "definitely",
    "affirmative",
    "of course",
    "certainly",
    "sounds good",
    "do it",
    "that's it",
    "exactly",
    "uh huh",
    "yes please",
    "please",
    "alright",
    "all right",
    "fine",
    "confirm",
    "confirmed",
    "indeed",
    "true",
    "go for it",
    "sure thing",
)


def _contains_phrase(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w']){re.escape(phrase)}(?![\w'])", text) is not None


def _parse_yes_no(text: str) -> SlotParse:
    """Negation wins over affirmation ("no, that's not right" is no); hedges are unclear."""
    cleaned = " " + re.sub(r"[^\w' ]+", " ", text.lower().replace("\u2019", "'")) + " "
    if any(_contains_phrase(cleaned, h) for h in _HEDGES):
        return SlotParse.failure("unclear", reason="hedged")
    without_idioms = cleaned
    for idiom in _AFFIRMING_NEGATIVES:
        without_idioms = re.sub(rf"(?<![\w']){re.escape(idiom)}(?![\w'])", " ", without_idioms)
    if any(_contains_phrase(without_idioms, n) for n in _NEGATIVE):
        return SlotParse.success(False)
    if any(_contains_phrase(cleaned, a) for a in _AFFIRMATIVE):
        return SlotParse.success(True)
    return SlotParse.failure("unclear")


# --- money --------------------------------------------------------------------------

_MAJOR_UNITS: dict[str, str] = {
    "dollar": "USD",
    "dollars": "USD",
    "buck": "USD",
    "bucks": "USD",
    "pound": "GBP",
    "pounds": "GBP",
    "quid": "GBP",
    "euro": "EUR",
    "euros": "EUR",
}
_MINOR_UNITS = frozenset({"cent", "cents", "penny", "pence", "p"})
_CURRENCY_SIGNS: dict[str, str] = {"$": "USD", "£": "GBP", "€": "EUR"}
_CENT = Decimal("0.01")


@dataclass
class _Amount:
    value: Decimal
    has_marker: bool
    currency: str | None


def _span_decimal(span: NumberSpan) -> Decimal | None:
    """The amount a single number span stands for; a spoken pair reads as units and cents."""
    if span.kind == "ordinal":
        return None
    if span.kind == "pair":
        return Decimal(span.parts[0]) + Decimal(span.parts[1]) / 100
    try:
        return Decimal(span.text.replace(",", ""))
    except InvalidOperation:
        return None  # "3/14", "3rd" and the like are not amounts


def _parse_money(text: str) -> SlotParse:
    normalized = normalize_numbers(text)
    amounts = _money_amounts(normalized.text.lower(), normalized.spans)
    if not amounts:
        return SlotParse.failure("no_amount")
    marked = [a for a in amounts if a.has_marker]
    if len(amounts) > 1:
        if len(marked) != 1:
            return SlotParse.failure("ambiguous", amounts=[str(a.value.quantize(_CENT)) for a in amounts])
        amounts = marked
    amount = amounts[0]
    return SlotParse.success(amount.value.quantize(_CENT), currency=amount.currency)


def _words_between(text: str, start: int, end: int) -> list[str]:
    return re.findall(r"[a-z]+", text[start:end])


def _money_amounts(text: str, spans: Sequence[NumberSpan]) -> list[_Amount]:
    """Group the number spans into amounts, joining "X dollars (and) Y cents" and "23 50"."""
    usable = [(s, v) for s in spans if (v := _span_decimal(s)) is not None]
    amounts: list[_Amount] = []
    k = 0
    while k < len(usable):
        span, value = usable[k]
        after = _words_between(text, span.end, usable[k + 1][0].start if k + 1 < len(usable) else len(text))
        sign = text[max(0, span.start - 1) : span.start]
        currency = _CURRENCY_SIGNS.get(sign)
        unit = after[0] if after else ""
        if unit in _MINOR_UNITS:
            amounts.append(_Amount(value / 100, True, currency))
            k += 1
            continue
        if unit in _MAJOR_UNITS:
            currency = currency or _MAJOR_UNITS[unit]
            cents = _following_cents(text, usable, k, after)
            if cents is not None:
                amounts.append(_Amount(value + cents / 100, True, currency))
                k += 2
                continue
            amounts.append(_Amount(value, True, currency))
            k += 1
            continue
        cents = _numeral_cents(text, usable, k)
        if cents is not None:
            amounts.append(_Amount(value + cents / 100, currency is not None, currency))
            k += 2
            continue
        amounts.append(_Amount(value, currency is not None, currency))
        k += 1
    return amounts


def _following_cents(
    text: str, usable: Sequence[tuple[NumberSpan, Decimal]], k: int, after: list[str]
) -> Decimal | None:
    """Cents after "X dollars": "and fifty cents", "fifty", "and fifty"."""
    if k + 1 >= len(usable) or any(w not in ("and",) for w in after[1:]):
        return None
    span, value = usable[k + 1]
    if span.kind not in ("cardinal", "numeral", "digits") or not (0 <= value < 100) or value != value.to_integral():
        return None
    tail = _words_between(text, span.end, usable[k + 2][0].start if k + 2 < len(usable) else len(text))
    if tail and tail[0] in _MAJOR_UNITS:
        return None  # "5 dollars and 3 dollars" is two amounts
    return value


def _numeral_cents(text: str, usable: Sequence[tuple[NumberSpan, Decimal]], k: int) -> Decimal | None:
    """ "23 50" as written by a recogniser for "twenty three fifty"."""
    if k + 1 >= len(usable):
        return None
    (first, _), (second, value) = usable[k], usable[k + 1]
    if first.kind != "numeral" or second.kind != "numeral" or not first.text.isdigit() or len(second.text) != 2:
        return None
    if len(first.text) > 3 or text[first.end : second.start].strip():
        return None
    return value


# --- enums --------------------------------------------------------------------------


def _enum_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", normalize_numbers(text).text.lower())


def _contains_words(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def _parse_enum(
    text: str, values: Mapping[str, Sequence[str]], *, embedder: Embedder | None, threshold: float
) -> SlotParse:
    """Word match on the canonical names and synonyms first; then, with an embedder, semantic similarity."""
    words = _enum_words(text)
    if not words:
        return SlotParse.failure("no_match")
    best_len: dict[str, int] = {}
    for canonical, synonyms in values.items():
        for phrase in (canonical, *synonyms):
            phrase_words = _enum_words(phrase)
            if _contains_words(words, phrase_words):
                best_len[canonical] = max(best_len.get(canonical, 0), len(phrase_words))
    if best_len:
        longest = max(best_len.values())
        winners = [c for c, n in best_len.items() if n == longest]
        if len(winners) == 1:
            return SlotParse.success(winners[0], method="lexical")
        return SlotParse.failure("ambiguous", candidates=sorted(winners))
    if embedder is None:
        return SlotParse.failure("no_match")
    return _enum_by_embedding(text, values, embedder, threshold)


def _enum_by_embedding(
    text: str, values: Mapping[str, Sequence[str]], embedder: Embedder, threshold: float
) -> SlotParse:
    query = embedder.embed_one(text)
    best: dict[str, float] = {}
    for canonical, synonyms in values.items():
        # embed_one caches, so the option phrases are embedded once per process
        options = np.stack([embedder.embed_one(p) for p in (canonical.replace("_", " "), *synonyms)])
        best[canonical] = float(np.max(options @ query))
    ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)
    top, score = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else -1.0
    detail = {"method": "embedding", "similarity": round(score, 4), "runner_up": round(runner_up, 4)}
    if score < threshold:
        return SlotParse.failure("no_match", **detail)
    if score - runner_up < DEFAULT_ENUM_MARGIN:
        return SlotParse.failure("ambiguous", candidates=[c for c, _ in ranked[:2]], **detail)
    return SlotParse.success(top, **detail)
