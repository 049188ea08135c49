"""PII redaction before storage: Presidio with pattern recognizers, spoken numbers, the agent's own identifiers.

``Redactor.redact(text)`` finds personal data in a caller's or agent's words and replaces it with
typed placeholders (``<CREDIT_CARD>``, ``<PHONE_NUMBER>``, ``<EMAIL_ADDRESS>``, ``<US_SSN>``,
``<ACCOUNT_NUMBER>``, ``<PIN>``, ``<PERSON>``, ``<DATE_OF_BIRTH>``, ``<POSTCODE>``, ``<CASE_ID>``,
``<IBAN_CODE>``).

How, and why:

- Speech-recognition text is first normalised (:mod:`voxgate.compliance.spoken_numbers`):
  "four one one one …" becomes digits and "john dot smith at gmail dot com" an address, so the
  pattern recognizers see what they expect; an offset map puts every span back on the original.
- Presidio's analyzer runs with our own NLP engine (a blank spaCy tokenizer, lower-cased tokens as
  lemmas, so context words still work) and no model download; its phone (libphonenumber), e-mail,
  SSN and IBAN recognizers do the well-known types, with our own beside them: numbers dialled with
  "+" or announced as a phone that libphonenumber's tables call invalid (new or reserved ranges),
  nine digits announced as a social however they were grouped.
- Cards: a brand's prefix and length and a passing Luhn check, in any grouping (Amex 4-6-5, the
  Mastercard 2-series). A 16-digit number that fails the check is a card only when the caller
  calls it one ("my card number is ..."); otherwise it is an account number, which is likelier.
- Identifiers that only the agent knows the shape of come from its declaration
  (:func:`config_for_agent`): account-number and PIN length, postcode and other identifier slots.
  A digit string counts by the nearest context word before (or just after) it: "account" makes it
  an account number, "order"/"invoice"/"tracking" make it nothing; a bare long digit string is an
  identifier by default (privacy first).
- Dates of birth: a date (written, or spoken as "the fourth of july nineteen eighty") with a birth
  cue nearest ("born", "DOB", "date of birth", "birthday"); an appointment date stays.
- Names without a model: cue phrases ("my name is", "this is", "spoke to"), a shipped list of
  frequent given names and surnames (:mod:`voxgate.compliance.pii_names`), and capitals.
- Cue words are looked for before a number, or else after it within the same clause ("pay with X
  and send the receipt to ..." says nothing about X).
- Values the caller is known to have (``known=``: the verified account number, the customer's
  name) are always found, however they are written or spoken.

Overlapping findings merge into one span (so nothing is half-redacted), typed by the strongest
(a name yields to any other type found over it).
Raw text never reaches a log from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

# Presidio's e-mail recognizer uses tldextract, which fetches the public suffix list unless told not to.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import phonenumbers
import spacy
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
from presidio_analyzer.predefined_recognizers import (
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
from presidio_anonymizer.entities import RecognizerResult as AnonymizerResult
from pydantic import BaseModel, ConfigDict, Field, model_validator
from spacy.lang.en.stop_words import STOP_WORDS

from voxgate.compliance.pii_names import AMBIGUOUS, GIVEN_NAMES, SURNAMES
from voxgate.compliance.spoken_numbers import normalize_spoken
from voxgate.errors import InvalidError

if TYPE_CHECKING:
    from voxgate.bundle.models import Agent, Topic

__all__ = [
    "ENTITY_TYPES",
    "IdentifierRule",
    "RedactionConfig",
    "RedactionError",
    "RedactionResult",
    "RedactionSpan",
    "Redactor",
    "config_for_agent",
    "default_redactor",
    "KnownCaller",
    "known_caller",
    "known_values",
    "redactor_for_agent",
    "redactor_for_config",
]

ENTITY_TYPES = (
    "CREDIT_CARD",
    "PHONE_NUMBER",
    "EMAIL_ADDRESS",
    "US_SSN",
    "IBAN_CODE",
    "ACCOUNT_NUMBER",
    "PIN",
    "POSTCODE",
    "CASE_ID",
    "PERSON",
    "DATE_OF_BIRTH",
)
MAX_TEXT_CHARS = 20_000


class RedactionError(InvalidError):
    """The input cannot be redacted (wrong type, or too long for one utterance)."""


class RedactionSpan(BaseModel):
    """One piece of personal data: its type and where it is in the ORIGINAL text."""

    model_config = ConfigDict(frozen=True)

    type: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class RedactionResult(BaseModel):
    """The redacted text, the spans found in the original, and how many of each type."""

    text: str
    spans: list[RedactionSpan] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)


class IdentifierRule(BaseModel):
    """A digit identifier the agent uses: its type, length range and the words that announce it."""

    model_config = ConfigDict(frozen=True)

    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    min_digits: int = Field(ge=3, le=32)
    max_digits: int = Field(ge=3, le=32)
    context: tuple[str, ...] = Field(min_length=1, description="Words or phrases that announce the identifier.")
    require_context: bool = Field(default=True, description="If false, a bare digit string of exact_digits counts too.")
    exact_digits: int | None = Field(default=None, ge=3, le=32)

    @model_validator(mode="after")
    def _ordered(self) -> IdentifierRule:
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits {self.min_digits} is above max_digits {self.max_digits}")
        return self


class RedactionConfig(BaseModel):
    """What to look for. The defaults suit any agent; :func:`config_for_agent` narrows them."""

    model_config = ConfigDict(frozen=True)

    account_number_digits: tuple[int, int] = Field(default=(6, 19), description="Length range after an 'account' cue.")
    account_number_length: int | None = Field(
        default=None, ge=4, le=20, description="The agent's own length: a bare digit string of it is an account number."
    )
    bare_identifier_min_digits: int = Field(
        default=8,
        ge=4,
        le=32,
        description="A digit string this long with no telling context is treated as an identifier.",
    )
    pin_digits: tuple[int, int] = Field(default=(4, 8))
    postcodes: bool = True
    case_ids: bool = True
    names: bool = True
    identifiers: tuple[IdentifierRule, ...] = ()
    phone_regions: tuple[str, ...] = ("US", "GB", "CA", "AU", "IE", "DE", "FR", "IN")
    score_threshold: float = Field(default=0.35, ge=0.0, le=1.0)


# --- words that steer the digit recognizers -------------------------------------------------

_ACCOUNT_WORDS = (
    "account",
    "acct",
    "account number",
    "account no",
    "customer number",
    "customer no",
    "member number",
    "membership number",
    "customer id",
    "account id",
    "member id",
    "membership id",
    "member no",
    "membership no",
    "customer reference",
    "customer reference number",
    "account reference",
    "account ref",
    "client number",
    "client id",
    "policy number",
    "policy no",
    "subscriber number",
    "subscriber id",
    "billing account",
    "loyalty number",
    "customer account",
)
_PIN_WORDS = (
    "pin",
    "pin number",
    "pin code",
    "passcode",
    "pass code",
    "security code",
    "secret code",
    "security number",
    "password",
)
_POSTCODE_WORDS = ("postcode", "post code", "postal code", "zip", "zip code", "zipcode")
_PHONE_WORDS = (
    "phone",
    "phone number",
    "telephone",
    "mobile",
    "cell",
    "landline",
    "call",
    "text",
    "reach",
    "contact number",
    "number to reach",
    "fax",
    "whatsapp",
    "area code",
    "ring",
    "dial",
)
_CARD_WORDS = (
    "card",
    "card number",
    "credit card",
    "debit card",
    "visa",
    "mastercard",
    "master card",
    "amex",
    "american express",
    "discover",
    "long number",
    "cc",
    "jcb",
    "diners",
    "diners club",
    "maestro",
)
_SSN_WORDS = ("social", "social security", "social security number", "social security no", "ssn", "ss")
_CASE_WORDS = ("case", "ticket", "complaint", "claim", "dispute", "incident")
# Numbers that name things, not people: a digit string announced by these is left alone.
_THING_ID_WORDS = (
    "order",
    "order number",
    "tracking",
    "tracking number",
    "invoice",
    "reference",
    "ref",
    "confirmation",
    "model",
    "serial",
    "room",
    "flight",
    "booking",
    "extension",
    "ext",
    "apartment",
    "flat",
    "unit",
    "suite",
    "floor",
    "building",
    "plan",
    "item",
    "sku",
    "product",
    "version",
    "page",
    "step",
    "channel",
    "store",
    "code",
    "receipt",
    "transaction",
)
# Words about money, speed and time: they make a nearby number an amount, not an identifier, unless an
# identifier cue ("account", "card") stands further back in the same stretch ("the acct # on my bill is ...").
_AMOUNT_WORDS = (
    "speed",
    "mbps",
    "megabits",
    "year",
    "years",
    "price",
    "cost",
    "costs",
    "charged",
    "paid",
    "pay",
    "owe",
    "dollars",
    "pounds",
    "euros",
    "total",
    "amount",
    "balance",
    "bill",
)
_NOT_PERSONAL_WORDS = _THING_ID_WORDS + _AMOUNT_WORDS

_DIGITS_RE = re.compile(
    r"(?<![\w.,/:$£€#+-])"  # not part of a price, date, time, decimal or word
    r"(\d+(?:[ -]\d{3,})*(?:[ -]\d{1,2}(?=\s*(?:[.;!?]|$)))?)"  # a short last group only at the end: "6003 7856 2."
    r"(?![\w%/:]|[.,]\d)"
)
# Digit groups however they are split ("439 03 9766", "575 22, 6007", "4429 2399 1037 6606").
_GROUPS_RE = re.compile(r"(?<![\w.,/:$£€#+-])(\d+(?:(?:,? |-)\d+)*)(?![\w%/:]|[.,]\d)")
_CASE_ID_RE = re.compile(r"(?<![\w-])([A-Za-z]{1,6}-?\d{3,12}|\d{4,12})(?![\w-])")
_UK_POSTCODE_RE = re.compile(r"(?<!\w)([A-Za-z]{1,2}\d[A-Za-z\d]?\s*\d[A-Za-z]{2})(?!\w)")
_US_ZIP_RE = re.compile(r"(?<![\w-])(\d{5}(?:-\d{4})?)(?![\w-])")
_WORD_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")  # letters, accented ones too ("Siobhán")


def _cue_word(word: str) -> str:
    """Lower case, without a plural or possessive "s" ("accounts", "account's" -> "account")."""
    word = word.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def _words_before(text: str, pos: int, limit: int = 6) -> list[str]:
    return [_cue_word(w) for w in _WORD_RE.findall(text[max(0, pos - 60) : pos])][-limit:]


_CLAUSE_END = re.compile(r"[.;!?,]|\b(?:and|but|or|then)\b", re.IGNORECASE)


def _words_after(text: str, pos: int, limit: int = 8) -> list[str]:
    """The words that follow, up to the end of the clause: in "pay with X and send the receipt to ..."
    the receipt says nothing about X."""
    window = text[pos : pos + 60]
    if (stop := _CLAUSE_END.search(window)) is not None:
        window = window[: stop.start()]
    return [_cue_word(w) for w in _WORD_RE.findall(window)][:limit]


@lru_cache(maxsize=512)
def _phrase_index(phrases: tuple[str, ...]) -> tuple[tuple[int, frozenset[tuple[str, ...]]], ...]:
    """The phrases as word tuples grouped by length, longest first (built once per list of phrases)."""
    by_length: dict[int, set[tuple[str, ...]]] = {}
    for phrase in phrases:
        parts = tuple(phrase.split())
        by_length.setdefault(len(parts), set()).add(parts)
    return tuple((n, frozenset(group)) for n, group in sorted(by_length.items(), reverse=True))


def _phrase_at(words: list[str], phrases: Iterable[str]) -> dict[int, int]:
    """{index of the phrase's last word: phrase length} for every phrase occurring in ``words``."""
    found: dict[int, int] = {}
    for n, group in _phrase_index(phrases if isinstance(phrases, tuple) else tuple(phrases)):
        for i in range(n - 1, len(words)):
            if i not in found and tuple(words[i - n + 1 : i + 1]) in group:
                found[i] = n  # the longest phrase ending here: lengths come longest first
    return found


def _nearest_cue(text: str, start: int, end: int, positive: Iterable[str], negative: Iterable[str]) -> str | None:
    """'pos', 'neg' or None: which kind of cue word stands nearest before (or else just after) a number."""
    before = _words_before(text, start)
    pos_at, neg_at = _phrase_at(before, positive), _phrase_at(before, negative)
    best_pos, best_neg = max(pos_at, default=-1), max(neg_at, default=-1)
    if best_pos >= 0 or best_neg >= 0:
        if best_pos == best_neg:  # "account number" vs "number": the longer phrase wins
            return "pos" if pos_at[best_pos] >= neg_at[best_neg] else "neg"
        return "pos" if best_pos > best_neg else "neg"
    # after: a phrase that starts within the next four words of the same clause ("... that's my date of birth")
    after = _words_after(text, end)
    pos_after, neg_after = _phrase_starts(after, positive), _phrase_starts(after, negative)
    first_pos, first_neg = min(pos_after, default=99), min(neg_after, default=99)
    if first_pos == first_neg == 99:
        return None
    if first_pos == first_neg:
        return "pos" if pos_after[first_pos] > neg_after[first_neg] else "neg"
    return "pos" if first_pos < first_neg else "neg"


def _phrase_starts(words: list[str], phrases: Iterable[str], within: int = 4) -> dict[int, int]:
    """{index of the phrase's first word: phrase length} for phrases starting among the first ``within`` words."""
    found: dict[int, int] = {}
    for last, n in _phrase_at(words, phrases).items():
        first = last - n + 1
        if first < within:
            found[first] = max(found.get(first, 0), n)
    return found


# --- the NLP engine: a tokenizer, no model ------------------------------------------------


class _BlankNlpEngine(NlpEngine):
    """Tokens from spaCy's blank English tokenizer; lemmas are the lower-cased tokens; no NER."""

    # spaCy's string store grows with every new token: start a fresh tokenizer now and then.
    RENEW_EVERY = 20_000

    def __init__(self) -> None:
        self._nlp = spacy.blank("en")
        self._used = 0
        self._lock = threading.Lock()

    def load(self) -> None:
        return None

    def is_loaded(self) -> bool:
        return True

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        with self._lock:
            self._used += 1
            if self._used >= self.RENEW_EVERY:
                self._nlp, self._used = spacy.blank("en"), 0
            doc = self._nlp.make_doc(text)
        return NlpArtifacts(
            entities=[],
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            lemmas=[t.lower_ for t in doc],
            nlp_engine=self,
            language=language,
        )

    def process_batch(
        self, texts: Iterable[str], language: str, batch_size: int = 1, n_process: int = 1, **kwargs: Any
    ) -> Iterator[tuple[str, NlpArtifacts]]:
        for text in texts:
            yield text, self.process_text(text, language)

    def is_stopword(self, word: str, language: str) -> bool:
        return word.lower() in STOP_WORDS

    def is_punct(self, word: str, language: str) -> bool:
        return bool(word) and all(not c.isalnum() for c in word)

    def get_supported_entities(self) -> list[str]:
        return []

    def get_supported_languages(self) -> list[str]:
        return ["en"]


_BLANK_ENGINE: _BlankNlpEngine | None = None
_BLANK_ENGINE_LOCK = threading.Lock()


def _blank_nlp_engine() -> _BlankNlpEngine:
    """The process's one tokenizer engine, shared by every redactor (each made its own: spaCy's blank
    English pipeline takes 0.2-0.8 s of CPU to build, and each agent's settings made a redactor)."""
    global _BLANK_ENGINE
    with _BLANK_ENGINE_LOCK:
        if _BLANK_ENGINE is None:
            _BLANK_ENGINE = _BlankNlpEngine()
        return _BLANK_ENGINE


# --- recognizers ----------------------------------------------------------------------------


def _result(entity: str, start: int, end: int, score: float, name: str) -> RecognizerResult:
    return RecognizerResult(
        entity_type=entity,
        start=start,
        end=end,
        score=score,
        recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: name},
    )


class _DigitIdentifierRecognizer(EntityRecognizer):
    """Digit strings that are account numbers, PINs, postcodes or the agent's own identifiers, by context."""

    name: str  # set by EntityRecognizer.__init__ (untyped there)

    def __init__(self, config: RedactionConfig):
        self.config = config
        entities = ["ACCOUNT_NUMBER", "PIN"] + (["POSTCODE"] if config.postcodes else [])
        entities += [rule.entity for rule in config.identifiers if rule.entity not in entities]
        super().__init__(supported_entities=entities, name="voxgate_digit_identifiers")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        cfg = self.config
        out: list[RecognizerResult] = []
        for match in _DIGITS_RE.finditer(text):
            start, end = match.span(1)
            n = sum(c.isdigit() for c in match.group(1))
            found = self._classify(text, start, end, n)
            if found is not None:
                out.append(_result(found[0], start, end, found[1], self.name))
        if cfg.postcodes:
            for match in _UK_POSTCODE_RE.finditer(text):
                start, end = match.span(1)
                if _nearest_cue(text, start, end, _POSTCODE_WORDS, ()) == "pos":
                    out.append(_result("POSTCODE", start, end, 0.85, self.name))
        return out

    def _classify(self, text: str, start: int, end: int, n: int) -> tuple[str, float] | None:
        cfg = self.config
        if _phone_shaped(text, start, end):
            return None  # the phone recognizer's to judge
        for rule in cfg.identifiers:
            if rule.min_digits <= n <= rule.max_digits:
                cue = _nearest_cue(text, start, end, rule.context, _NOT_PERSONAL_WORDS)
                if cue == "pos":
                    return rule.entity, 0.85
                if cue is None and not rule.require_context and n == rule.exact_digits:
                    return rule.entity, 0.5
        if 12 <= n <= 19 and _nearest_cue(text, start, end, _CARD_WORDS, _NOT_PERSONAL_WORDS + _ACCOUNT_WORDS) == "pos":
            return "CREDIT_CARD", 0.6  # announced as a card, even if misread (the Luhn check fails)
        if cfg.pin_digits[0] <= n <= cfg.pin_digits[1]:
            if _nearest_cue(text, start, end, _PIN_WORDS, _NOT_PERSONAL_WORDS + _ACCOUNT_WORDS) == "pos":
                return "PIN", 0.85
        if cfg.postcodes and n in (5, 9) and _US_ZIP_RE.fullmatch(text[start:end]):
            if _nearest_cue(text, start, end, _POSTCODE_WORDS, _NOT_PERSONAL_WORDS) == "pos":
                return "POSTCODE", 0.85
        # another identifier's cue ("order", "case", "pin", "social") nearer than any account cue: not an account
        cue = _nearest_cue(text, start, end, _ACCOUNT_WORDS, _THING_ID_WORDS + _PIN_WORDS + _CASE_WORDS + _SSN_WORDS)
        if cue == "neg":
            return None
        if cue is None and _nearest_cue(text, start, end, (), _AMOUNT_WORDS) == "neg":
            return None  # an amount ("the bill was 1250"), unless an account cue stands further back
        if cue == "pos" and cfg.account_number_digits[0] <= n <= cfg.account_number_digits[1]:
            return "ACCOUNT_NUMBER", 0.85
        if cfg.account_number_length is not None and n == cfg.account_number_length:
            return "ACCOUNT_NUMBER", 0.5
        if n >= cfg.bare_identifier_min_digits:
            return "ACCOUNT_NUMBER", 0.35
        return None


_PHONE_SHAPE = re.compile(
    r"(?:1[ -])?\d{3}[ -.]\d{3}[ -.]\d{4}|\d{4,5} \d{6}|\d{3} \d{4} \d{4}|0\d{3} \d{3} \d{4}|0\d{4} \d{3} \d{3}"
)


def _phone_shaped(text: str, start: int, end: int) -> bool:
    """Grouped like a telephone number ("212-555-0147", "(020) 7946 0958", "07700 900123")."""
    before = text[max(0, start - 2) : start]
    return bool(_PHONE_SHAPE.fullmatch(text[start:end])) or ")" in before or "(" in before or "+" in before


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_issuer(digits: str) -> bool:
    """Whether a digit string has the issuer prefix and length of a payment card brand."""
    n = len(digits)
    if n < 12 or n > 19:
        return False
    p2, p3, p4 = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard, including the 2-series
    if p2 in (34, 37):
        return n == 15  # American Express
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65:
        return n >= 16  # Discover
    if 3528 <= p4 <= 3589:
        return n >= 16  # JCB
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):
        return n >= 14  # Diners Club
    if p2 == 62 or 2200 <= p4 <= 2204:
        return n >= 16  # UnionPay, Mir
    if p2 == 50 or 56 <= p2 <= 69:
        return True  # Maestro
    return False


def _card_like(digits: str) -> bool:
    return _card_issuer(digits) and _luhn(digits)


class _CardRecognizer(EntityRecognizer):
    """Payment cards: a brand's prefix and length and a passing Luhn check, however the groups are split.

    A digit string that fails the check is a misread card only when the caller calls it a card
    (:class:`_DigitIdentifierRecognizer`); otherwise an account number or some other identifier is
    likelier. A card-shaped number announced as an account is left to the account rules; one announced
    as an order or a reference is still redacted, as a card.
    """

    name: str  # set by EntityRecognizer.__init__ (untyped there)

    def __init__(self) -> None:
        super().__init__(supported_entities=["CREDIT_CARD"], name="voxgate_cards")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out: list[RecognizerResult] = []
        for match in _GROUPS_RE.finditer(text):
            start, end = match.span(1)
            groups = re.findall(r"\d+", match.group(1))
            if not 12 <= sum(map(len, groups)) <= 21 or not self._has_card(groups):
                continue
            if _nearest_cue(text, start, end, _CARD_WORDS, _ACCOUNT_WORDS + _SSN_WORDS) == "neg":
                continue  # called an account: the account rules type it
            cue = _nearest_cue(text, start, end, _CARD_WORDS, _THING_ID_WORDS)
            # called an order or a reference, a number that passes as a card is still redacted (privacy first)
            score = {"pos": 0.95, None: 0.8, "neg": 0.5}[cue]
            out.append(_result("CREDIT_CARD", start, end, score, self.name))
        return out

    @staticmethod
    def _has_card(groups: list[str]) -> bool:
        digits = "".join(groups)
        if _card_like(digits):
            return True
        # a stray spoken digit joined on at either end ("try this one 4539 ...", "... 6467 two"):
        # a short first or last group, or one digit of a number the speech normaliser wrote as one run
        if len(groups) > 1:
            return (len(groups[0]) <= 2 and _card_like("".join(groups[1:]))) or (
                len(groups[-1]) <= 2 and _card_like("".join(groups[:-1]))
            )
        return len(digits) > 13 and (_card_like(digits[1:]) or _card_like(digits[:-1]))


def _valid_ssn(digits: str) -> bool:
    """The SSA's rules: no area 000, 666 or 9xx, no group 00, no serial 0000, not a published sample."""
    return (
        len(digits) == 9
        and digits[:3] not in ("000", "666")
        and digits[0] != "9"
        and digits[3:5] != "00"
        and digits[5:] != "0000"
        and len(set(digits)) > 1
        and digits not in ("123456789", "078051120", "219099999", "457555462")
    )


class _AnnouncedSsnRecognizer(EntityRecognizer):
    """Nine digits announced as a social security number, however they were grouped ("575 22, 6007")."""

    name: str  # set by EntityRecognizer.__init__ (untyped there)

    def __init__(self) -> None:
        super().__init__(supported_entities=["US_SSN"], name="voxgate_ssn")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out: list[RecognizerResult] = []
        for match in _GROUPS_RE.finditer(text):
            start, end = match.span(1)
            if not _valid_ssn(re.sub(r"\D", "", match.group(1))):
                continue
            others = _ACCOUNT_WORDS + _THING_ID_WORDS + _PHONE_WORDS + _CARD_WORDS + _PIN_WORDS + _CASE_WORDS
            if _nearest_cue(text, start, end, _SSN_WORDS, others) == "pos":
                out.append(_result("US_SSN", start, end, 0.85, self.name))
        return out


# dialled with "+" or the international prefix "00" ("double oh four four ...")
_INTL_PHONE_RE = re.compile(r"(?<![\w+])(\+ ?[1-9](?:[ .()-]{0,3}\d){6,14}|00[1-9](?:[ .()-]{0,3}\d){6,14})(?!\d)")


class _PossiblePhoneRecognizer(EntityRecognizer):
    """Numbers of a possible length for their country, dialled with "+" or announced as a phone number.

    The phone recognizer wants numbers valid in libphonenumber's current tables: a new range, a
    reserved one or one misheard digit fails that, and the caller's number would be stored.
    """

    name: str  # set by EntityRecognizer.__init__ (untyped there)

    def __init__(self, regions: Iterable[str]):
        self.regions = tuple(regions)
        super().__init__(supported_entities=["PHONE_NUMBER"], name="voxgate_possible_phones")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out: list[RecognizerResult] = []
        others = _ACCOUNT_WORDS + _THING_ID_WORDS + _AMOUNT_WORDS + _SSN_WORDS + _CARD_WORDS + _PIN_WORDS + _CASE_WORDS
        for match in _INTL_PHONE_RE.finditer(text):
            number = match.group(1)
            if number.startswith("00"):
                if _nearest_cue(text, match.start(1), match.end(1), _PHONE_WORDS, others) == "neg":
                    continue
                number = "+" + number[2:]
            if self._possible(number, None):
                out.append(_result("PHONE_NUMBER", match.start(1), match.end(1), 0.6, self.name))
        for match in _GROUPS_RE.finditer(text):
            start, end = match.span(1)
            if (
                not 7 <= sum(c.isdigit() for c in match.group(1)) <= 12
                or text[max(0, start - 2) : start].strip() == "+"
            ):
                continue
            if _nearest_cue(text, start, end, _PHONE_WORDS, others) != "pos":
                continue
            if any(self._possible(match.group(1), region) for region in self.regions):
                out.append(_result("PHONE_NUMBER", start, end, 0.55, self.name))
        return out

    @staticmethod
    def _possible(number: str, region: str | None) -> bool:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_possible_number(parsed)


_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:(?:19|20)\d{2}|'?\d{2})"
_DATE_RE = re.compile(
    r"(?<![\w/.-])(?:"
    rf"(?:the\s+)?{_DAY}\s+(?:of\s+)?(?:{_MONTHS})\.?(?:,?\s+{_YEAR})?"  # the 4th of July 1980, 3 March 1975
    rf"|(?:{_MONTHS})\.?\s+(?:the\s+)?{_DAY}(?:,?\s+{_YEAR})?"  # March 3rd, 1975; march the 3rd 1979
    rf"|(?:{_MONTHS})\.?,?\s+(?:19|20)\d{{2}}"  # March 1975
    rf"|(?:the\s+)?{_DAY}\s+of\s+the\s+(?:1[0-2]|0?[1-9])(?:st|nd|rd|th)(?:,?\s+{_YEAR})?"  # the 7th of the 9th 88
    r"|\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})"  # 04/07/1980, 17.09.1988, 5/14/62
    r"|(?:19|20)\d{2}[/.-]\d{1,2}[/.-]\d{1,2}"  # 1979-11-02
    r"|\d{8}|\d{6}"  # read out as digits: 04071980, 120375
    r")(?![\w/]|[.-]\d)",
    re.IGNORECASE,
)
_DOB_WORDS = ("born", "date of birth", "birth date", "birthdate", "dob", "d o b", "birthday", "bday", "birth")
# Words that make a date something else: an appointment, a bill, a delivery, an expiry.
_OTHER_DATE_WORDS = (
    "appointment",
    "booked",
    "booking",
    "delivered",
    "delivery",
    "arrive",
    "due",
    "expires",
    "expiry",
    "exp",
    "visit",
    "meeting",
    "paid",
    "payment",
    "bill",
    "statement",
    "dated",
    "contract",
    "moved",
    "started",
    "start",
    "ends",
    "until",
    "since",
    "today",
    "tomorrow",
    "yesterday",
    "engineer",
    "technician",
    "install",
    "installation",
)


def _plausible_date(digits: str) -> bool:
    """A run of 6 or 8 digits that reads as a day, a month and a year in some common order."""

    def ok(day: str, month: str, year: str) -> bool:
        d, m = int(day), int(month)
        return 1 <= d <= 31 and 1 <= m <= 12 and (len(year) == 2 or 1900 <= int(year) <= 2099)

    if len(digits) == 8:
        return (
            ok(digits[:2], digits[2:4], digits[4:])
            or ok(digits[2:4], digits[:2], digits[4:])
            or ok(digits[6:], digits[4:6], digits[:4])
        )
    return (
        ok(digits[:2], digits[2:4], digits[4:])
        or ok(digits[2:4], digits[:2], digits[4:])
        or ok(digits[0], digits[1], digits[2:])
    )


class _DateOfBirthRecognizer(EntityRecognizer):
    """Dates announced as a date of birth ("born on", "DOB", "my birthday is"), written or spoken.

    Works on the normalised text, where "the fourth of july nineteen eighty" reads "the 4th of july
    1980". A date with no birth cue (an appointment, a bill date) is left alone.
    """

    name: str  # set by EntityRecognizer.__init__ (untyped there)

    def __init__(self) -> None:
        super().__init__(supported_entities=["DATE_OF_BIRTH"], name="voxgate_date_of_birth")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out: list[RecognizerResult] = []
        others = _OTHER_DATE_WORDS + _ACCOUNT_WORDS + _PHONE_WORDS + _SSN_WORDS + _CARD_WORDS + _PIN_WORDS
        for match in _DATE_RE.finditer(text):
            start, end = match.span()
            found = match.group()
            if found.isdigit() and not _plausible_date(found):
                continue
            if _nearest_cue(text, start, end, _DOB_WORDS, others) == "pos":
                out.append(_result("DATE_OF_BIRTH", start, end, 0.9, self.name))
        return out


class _CaseIdRecognizer(EntityRecognizer):
    """Case and ticket ids ("case CASE-000123", "ticket 48213") announced by a case word."""

    name: str  # set by EntityRecognizer.__init__ (untyped there)

    def __init__(self) -> None:
        super().__init__(supported_entities=["CASE_ID"], name="voxgate_case_ids")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out = []
        for match in _CASE_ID_RE.finditer(text):
            start, end = match.span(1)
            if _nearest_cue(text, start, end, _CASE_WORDS, _NOT_PERSONAL_WORDS + _ACCOUNT_WORDS) == "pos":
                out.append(_result("CASE_ID", start, end, 0.8, self.name))
        return out


# Cue phrases before a name. Strong ones take any word that is not a common word; weak ones
# need a listed or capitalised name.
_STRONG_NAME_CUES = (
    "my name is",
    "my name's",
    "name is",
    "name's",
    "call me",
    "under the name",
    "under the name of",
    "in the name of",
    "holder is",
    "hi this is",
    "hello this is",
    "hey this is",
    "hi i'm",
    "hello i'm",
    "hey i'm",
    "hi it's",
    "hello it's",
    "mr",
    "mrs",
    "ms",
    "miss",
    "mister",
    "dr",
    "doctor",
    "named",
    "spelled",
    "surname is",
    "surname's",
    "last name is",
    "last name's",
    "first name is",
    "first name's",
    "family name is",
    "maiden name",
    "maiden name is",
    "full name is",
    "prof",
    "professor",
    "someone called",
    "somebody called",
    "guy called",
    "lady called",
    "woman called",
    "man called",
    "girl called",
    "bloke called",
    "chap called",
    "gentleman called",
    "person called",
    "agent called",
    "advisor called",
    "adviser called",
)
# "calling from Chicago", "moved to Austin": the word after these is a place, whatever list it is on.
_PLACE_CUES = (
    "calling from",
    "ringing from",
    "phoning from",
    "moved to",
    "moving to",
    "move to",
    "live in",
    "living in",
    "lived in",
    "based in",
    "located in",
    "fly to",
    "flying to",
    "flew to",
    "travel to",
    "travelling to",
    "traveling to",
    "back from",
    "i'm in",
    "i am in",
    "over in",
    "out in",
    "down in",
    "up in",
    "near",
)
_FILLERS = frozenset({"uh", "um", "er", "erm", "ah", "uhm", "hmm", "like", "so", "yeah", "well"})
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "mister", "dr", "doctor", "prof", "professor", "sir", "madam"})
# A name spelled out letter by letter: "O'Neill, N-E-I-L-L".
_SPELLED_RE = re.compile(r"(?<![\w-])[A-Za-z](?:-[A-Za-z]){2,}(?![\w-])")
_WEAK_NAME_CUES = (
    "this is",
    "i'm",
    "i am",
    "it's",
    "it is",
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank you",
    "name",
    "speak to",
    "speak with",
    "spoke to",
    "spoke with",
    "talk to",
    "talked to",
    "talking to",
    "talk with",
    "ask for",
    "through to",
    "transfer me to",
    "on behalf of",
    "for",
    "from",
    "with",
    "and",
    "to",
    "by",
    "wife",
    "husband",
    "partner",
    "son",
    "daughter",
    "mother",
    "father",
    "mom",
    "mum",
    "dad",
    "brother",
    "sister",
    "friend",
    "wife's",
    "husband's",
    "colleague",
    "agent",
    "is",
    "ask",
    "tell",
)
_SELF_ANNOUNCING = frozenset({"here", "speaking", "calling"})  # "Dagny Garcia here", "this is Ann speaking"
_CALENDAR = frozenset(
    """
january february march april may june july august september october november december
monday tuesday wednesday thursday friday saturday sunday today tomorrow yesterday
""".split()
)
# Common words in customer-service talk that the stop-word list lacks: never part of a name.
_NOT_NAMES = (
    frozenset(
        """
calling speaking here there please sorry again yes yeah yep no nope ok okay um uh er hmm hi hello hey
thanks thank bye someone somebody anyone human person agent representative manager supervisor operator
customer account number phone email card bill billing order router modem internet wifi broadband line
service outage engineer technician help problem issue question payment refund contract plan upgrade
cancel calling about regarding from the flat house apartment street road avenue speaking returning
call back soon today tonight morning afternoon evening week month year just also still really
visa mastercard amex discover paypal harbor support team sir madam ma'am dear fine good great well
dot underscore dash hyphen
""".split()
    )
    | STOP_WORDS
    | _CALENDAR
    | _TITLES
)


class _PersonRecognizer(EntityRecognizer):
    """Names without a model: cue phrases, a list of frequent names, and capitals in written text."""

    name: str  # set by EntityRecognizer.__init__ (untyped there)

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], name="voxgate_names")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        tokens = [(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]
        lows = [t[0].lower().replace("’", "'") for t in tokens]
        has_case = text != text.lower()
        strong, weak = _phrase_at(lows, _STRONG_NAME_CUES), _phrase_at(lows, _WEAK_NAME_CUES)
        places = _phrase_at(lows, _PLACE_CUES)
        out: list[RecognizerResult] = []
        i = 0
        while i < len(tokens):
            k = i - 1
            while k >= 0 and lows[k] in _FILLERS and k not in strong:
                k -= 1  # "my name is uh Fatima": the cue stands before the filler
            cue = "strong" if k in strong else ("weak" if k in weak and k not in places else None)
            if cue != "strong" and i >= 2 and lows[i - 1] in ("is", "was") and "name" in lows[max(0, i - 7) : i - 1]:
                cue = "strong"  # "the name on the card is ..."
            score = self._first_token_score(tokens, lows, i, cue, has_case)
            announced = self._announced_length(lows, i, cue)
            if score is None and announced:
                score = 0.6
            if score is None:
                i += 1
                continue
            j = i + 1
            while j < len(tokens) and j - i < 3 and self._continues(tokens, lows, j, cue, has_case, text):
                j += 1
            j = max(j, i + announced)
            if j - i > 1:
                score = max(score, 0.6)
            out.append(_result("PERSON", tokens[i][1], tokens[j - 1][2], score, self.name))
            i = j
        if out or "spell" in text.lower():
            out += [_result("PERSON", m.start(), m.end(), 0.6, self.name) for m in _SPELLED_RE.finditer(text)]
        return out

    @staticmethod
    def _announced_length(lows: list[str], i: int, cue: str | None) -> int:
        """How many words from ``i`` name the speaker in "<name> here" / "this is <name> speaking" (0: none)."""
        if not (i == 0 or cue is not None):
            return 0
        for n in (1, 2):
            words = lows[i : i + n]
            if len(words) == n and i + n < len(lows) and lows[i + n] in _SELF_ANNOUNCING:
                if all(w not in _NOT_NAMES and len(w) > 1 and not _contraction(w) for w in words):
                    return n
        return 0

    @staticmethod
    def _sentence_start(tokens: list[tuple[str, int, int]], i: int, text: str) -> bool:
        if i == 0:
            return True
        between = text[tokens[i - 1][2] : tokens[i][1]]
        return any(c in between for c in ".!?")

    def _first_token_score(
        self, tokens: list[tuple[str, int, int]], lows: list[str], i: int, cue: str | None, has_case: bool
    ) -> float | None:
        raw, low = tokens[i][0], lows[i]
        if low in _NOT_NAMES or len(low) < 2 or _contraction(low):
            return None
        capital = has_case and raw[0].isupper() and not raw.isupper()
        listed = low in GIVEN_NAMES or low in SURNAMES
        plain_listed = listed and low not in AMBIGUOUS
        if cue == "strong":
            if listed or capital:
                return 0.85
            return 0.6
        if cue == "weak":
            if plain_listed or (listed and capital):
                return 0.75
            follower = lows[i + 1] if i + 1 < len(lows) else ""
            if _surname_shaped(follower) and follower not in AMBIGUOUS and (capital or not has_case):
                return 0.6  # "... Kwame Jones": an unlisted given name before a listed surname
            if capital and not self._sentence_start(tokens, i, raw):
                return 0.5
            return None
        if low in GIVEN_NAMES and low not in AMBIGUOUS and not (has_case and not capital):
            return 0.5  # a frequent given name, written with a capital or in lower-case speech text
        if capital and low in GIVEN_NAMES and i + 1 < len(tokens) and lows[i + 1] in SURNAMES:
            return 0.6
        return None

    @staticmethod
    def _continues(
        tokens: list[tuple[str, int, int]], lows: list[str], j: int, cue: str | None, has_case: bool, text: str
    ) -> bool:
        between = text[tokens[j - 1][2] : tokens[j][1]]
        raw, low = tokens[j][0], lows[j]
        if between.strip(" -") and not (between.strip() == "." and _initial(tokens, j - 1, text)):
            return False  # a comma or full stop ends the name (but not a middle initial's: "Robert J. Kline")
        if has_case and _initial(tokens, j, text):
            return True
        if low in _NOT_NAMES or len(low) < 2 or _contraction(low):
            return False
        if _surname_shaped(low) or (low in GIVEN_NAMES and low not in AMBIGUOUS):
            return True
        if has_case:
            return raw[0].isupper()
        # lower-case speech text: after a name, one more word that is not a common word is its surname
        return lows[j - 1] in GIVEN_NAMES or cue == "strong"


def _initial(tokens: list[tuple[str, int, int]], j: int, text: str) -> bool:
    """A middle initial: one capital letter and a full stop, between capitalised words ("Robert J. Kline")."""
    raw, end = tokens[j][0], tokens[j][2]
    return (
        len(raw) == 1
        and raw.isupper()
        and 0 < j < len(tokens) - 1
        and text[end : end + 2] == ". "
        and tokens[j + 1][0][:1].isupper()
        and tokens[j - 1][0][:1].isupper()
    )


_SURNAME_PREFIX = re.compile(r"(?:o'|mc)[^\W\d_]{3,}")


def _surname_shaped(word: str) -> bool:
    """A listed surname, or one shaped like a surname ("o'malley", "mcallister")."""
    return word in SURNAMES or bool(_SURNAME_PREFIX.fullmatch(word))


def _contraction(word: str) -> bool:
    """ "i'll", "we're", "don't": a function word with an ending, never a name ("o'brien" is one)."""
    head, _, tail = word.partition("'")
    return bool(tail) and (head in STOP_WORDS or tail in ("t", "ll", "re", "ve", "d", "m"))


def _known_recognizer(entity: str, values: Iterable[str]) -> EntityRecognizer | None:
    patterns: list[str] = []
    for value in values:
        value = (value or "").strip()
        digits = re.sub(r"\D", "", value)
        if len(digits) >= 4 and len(digits) >= len(re.sub(r"[\s\-().+]", "", value)) - 1:
            patterns.append(r"(?<!\d)" + r"[\s\-.]?".join(digits) + r"(?!\d)")
        elif len(value) >= 2:
            patterns.append(r"(?<!\w)" + r"\s+".join(re.escape(p) for p in value.split()) + r"(?!\w)")
    if not patterns:
        return None
    return _KnownValues(entity, re.compile("|".join(patterns), re.IGNORECASE))


class _KnownValues(EntityRecognizer):
    """Values this caller is known to have (verified account number, name), wherever they appear."""

    name: str  # set by EntityRecognizer.__init__ (untyped there)

    def __init__(self, entity: str, pattern: re.Pattern[str]):
        self.pattern = pattern
        super().__init__(supported_entities=[entity], name=f"voxgate_known_{entity.lower()}")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        entity = self.supported_entities[0]
        return [_result(entity, m.start(), m.end(), 1.0, self.name) for m in self.pattern.finditer(text)]


# --- the redactor ---------------------------------------------------------------------------


#: texts whose spans a Redactor remembers (then it starts afresh)
FIND_MEMO_SIZE = 4096


def _find_key(text: str, known: Mapping[str, tuple[str, ...]], allow: tuple[str, ...]) -> bytes:
    """A digest of everything find()'s answer depends on besides the redactor's own configuration (JSON:
    no two different inputs serialise alike)."""
    canonical = json.dumps([text, sorted(known.items()), allow], ensure_ascii=True)
    return hashlib.blake2b(canonical.encode("ascii"), digest_size=20).digest()


class Redactor:
    """Finds PII in one utterance at a time and replaces it with typed placeholders. Thread-safe."""

    def __init__(self, config: RedactionConfig | None = None):
        self.config = config or RedactionConfig()
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in self._recognizers():
            registry.add_recognizer(recognizer)
        self._nlp = _blank_nlp_engine()
        # callers also say what a number is after it ("... that's my social"): look both ways
        enhancer = LemmaContextAwareEnhancer(context_prefix_count=6, context_suffix_count=4)
        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=self._nlp,
            supported_languages=["en"],
            default_score_threshold=self.config.score_threshold,
            context_aware_enhancer=enhancer,
        )
        self._anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]  # presidio leaves it untyped
        self._entities = sorted({e for r in registry.recognizers for e in r.supported_entities})
        # what find() answered for texts it saw recently, by a digest of (text, known values, allowed values):
        # an agent's own lines come back on every call and a handoff packet repeats the stored turns. Only
        # spans (positions and types) are kept, under keys that are digests, never the text itself.
        self._found: dict[bytes, tuple[RedactionSpan, ...]] = {}

    def _recognizers(self) -> list[EntityRecognizer]:
        cfg = self.config
        recognizers: list[EntityRecognizer] = [
            _CardRecognizer(),
            PhoneRecognizer(supported_regions=list(cfg.phone_regions)),
            _PossiblePhoneRecognizer(cfg.phone_regions),
            EmailRecognizer(),
            UsSsnRecognizer(),
            _AnnouncedSsnRecognizer(),
            IbanRecognizer(),
            _DigitIdentifierRecognizer(cfg),
            _DateOfBirthRecognizer(),
        ]
        if cfg.case_ids:
            recognizers.append(_CaseIdRecognizer())
        if cfg.names:
            recognizers.append(_PersonRecognizer())
        return recognizers

    @property
    def entities(self) -> list[str]:
        return list(self._entities)

    def find(
        self, text: str, known: Mapping[str, Iterable[str]] | None = None, allow: Iterable[str] = ()
    ) -> list[RedactionSpan]:
        """The PII spans in ``text`` (positions in ``text``), merged so that none overlap.

        ``allow``: values to leave in place (compared with the normalised span, so "one two
        three four" matches "1234"), for a reader who is shown them anyway.
        """
        if not isinstance(text, str):
            raise RedactionError(f"expected text, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise RedactionError(f"text is {len(text)} characters; redact at most {MAX_TEXT_CHARS} at a time")
        if not text.strip():
            return []
        known_values = {entity: tuple(values) for entity, values in (known or {}).items()}
        allowed = tuple(allow)
        key = _find_key(text, known_values, allowed)
        seen = self._found.get(key)
        if seen is not None:
            return list(seen)
        spans = self._find(text, known_values, allowed)
        if len(self._found) >= FIND_MEMO_SIZE:
            self._found.clear()
        self._found[key] = tuple(spans)
        return spans

    def _find(self, text: str, known: Mapping[str, tuple[str, ...]], allow: tuple[str, ...]) -> list[RedactionSpan]:
        spoken = normalize_spoken(text)
        ad_hoc = [r for entity, values in known.items() if (r := _known_recognizer(entity, values))]
        entities = sorted(set(self._entities) | {r.supported_entities[0] for r in ad_hoc})
        results = self._analyzer.analyze(
            spoken.text,
            language="en",
            entities=entities,
            ad_hoc_recognizers=ad_hoc or None,
            score_threshold=self.config.score_threshold,
            allow_list=[a for a in allow if a] or None,
        )
        found = []
        for hit in results:
            if hit.entity_type == "PHONE_NUMBER" and not _phone_in_context(spoken.text, hit.start, hit.end):
                continue
            start, end = spoken.to_original(hit.start, hit.end)
            start, end = _trim(text, start, end)
            if end > start:
                found.append((start, end, hit.entity_type, hit.score))
        return _merge(found)

    def redact(
        self, text: str, known: Mapping[str, Iterable[str]] | None = None, allow: Iterable[str] = ()
    ) -> RedactionResult:
        """``text`` with every PII span replaced by ``<TYPE>``; spans refer to the original text."""
        spans = self.find(text, known, allow)
        if not spans:
            return RedactionResult(text=text)
        anonymized = self._anonymizer.anonymize(
            text=text,
            analyzer_results=[AnonymizerResult(s.type, s.start, s.end, 1.0) for s in spans],
            operators={"DEFAULT": OperatorConfig("replace")},
        )
        counts = Counter(s.type for s in spans)
        return RedactionResult(text=anonymized.text, spans=spans, counts=dict(sorted(counts.items())))

    def redact_json(
        self,
        value: Any,
        known: Mapping[str, Iterable[str]] | None = None,
        keep: Iterable[str] = (),
        counts: Counter[str] | None = None,
    ) -> Any:
        """A copy of a JSON-like value with every string redacted, except under the keys in ``keep``."""
        keep_set = frozenset(keep)

        def walk(node: Any, key: str | None) -> Any:
            if key in keep_set:
                return node
            if isinstance(node, str):
                if _looks_structural(node):
                    return node
                result = self.redact(node, known)
                if counts is not None:
                    counts.update(result.counts)
                return result.text
            if isinstance(node, Mapping):
                return {k: walk(v, k) for k, v in node.items()}
            if isinstance(node, (list, tuple)):
                return [walk(v, None) for v in node]
            if isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 100_000:
                return walk(str(node), None) if self.find(str(node), known) else node  # an id stored as a number
            return node

        return walk(value, None)


_STRUCTURAL = re.compile(r"^[a-z][a-z0-9_.:\-]*$")


def _looks_structural(text: str) -> bool:
    """Event kinds, intent and state names: lower-case identifiers with no digits or spaces."""
    return bool(_STRUCTURAL.match(text)) and not any(c.isdigit() for c in text) and text not in GIVEN_NAMES


# a token of letters and digits together, right next to a number ("97A 03 5912 7741", "0113 496 0219 X7")
_MIXED_TOKEN = re.compile(
    r"(?:^|(?<=\s))(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z\d]+\s$"
    r"|^\s(?!\d{1,2}(?:am|pm|st|nd|rd|th)\b)[A-Za-z\d]*(?:[A-Za-z]\d|\d[A-Za-z])",  # not "6pm", "3rd"
    re.IGNORECASE,
)


def _phone_in_context(text: str, start: int, end: int) -> bool:
    """False for a bare digit string that passes as a phone number but was called something else.

    "tracking number 9400111899" is phone-valid; a number written as a phone number
    ("+1 212…", "(212) 555-0147", "212-555-0147") is taken as one whatever is said around it.
    """
    span = text[start:end].strip()
    if sum(c.isdigit() for c in span) > (15 if span.startswith(("+", "00")) else 13):
        return False  # longer than any dialled number: a card or an account, judged elsewhere
    if any(c in span for c in "+(") or "(" in text[max(0, start - 2) : start]:
        return True
    if _MIXED_TOKEN.search(text[max(0, start - 12) : start]) or _MIXED_TOKEN.match(text[end : end + 12]):
        return False  # digits inside a code of letters and digits ("1Z 4E5 97A 03 5912 7741"): a tracking number
    if start >= 2 and text[start - 1] in "-/" and text[start - 2].isalnum():
        return False  # the tail of a hyphenated code ("REF-2024-118830")
    if _PHONE_SHAPE.fullmatch(span):
        return True  # grouped as a phone number is written
    return _nearest_cue(text, start, end, _PHONE_WORDS, _NOT_PERSONAL_WORDS + _CASE_WORDS) != "neg"


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in " ,.;:!?":
        start += 1
    while end > start and text[end - 1] in " ,.;:!?":
        end -= 1
    return start, end


def _merge(found: list[tuple[int, int, str, float]]) -> list[RedactionSpan]:
    """One span per group of overlapping findings, covering them all, typed by the strongest."""
    spans: list[RedactionSpan] = []
    group: list[tuple[int, int, str, float]] = []
    group_end = -1

    def flush() -> None:
        if group:
            # a name is the vaguest finding: an e-mail or a number found over it names the whole span
            best = max(group, key=lambda f: (f[2] != "PERSON", f[3], f[1] - f[0]))
            spans.append(RedactionSpan(type=best[2], start=min(f[0] for f in group), end=max(f[1] for f in group)))

    for item in sorted(found):
        if group and item[0] >= group_end:
            flush()
            group = []
        group.append(item)
        group_end = max(group_end, item[1]) if len(group) > 1 else item[1]
    flush()
    return spans


# --- redactors per agent --------------------------------------------------------------------


def config_for_agent(agent: Agent, topics: Iterable[Topic] = ()) -> RedactionConfig:
    """The redaction settings an agent's declaration implies: account and PIN length, identifier slots.

    ``topics`` are the bundle's topics: a postcode slot turns on postcodes, and a ``sensitive``
    digits slot (a case id, a membership number) becomes an identifier announced by its own name.
    """
    auth = agent.authentication
    rules: list[IdentifierRule] = []
    for topic in topics:
        for name, slot in topic.slots.items():
            if slot.type.value == "digits" and slot.sensitive:
                low = slot.length or slot.min_length or 3
                high = slot.length or slot.max_length or 32
                words = tuple(dict.fromkeys([name.replace("_", " "), name.split("_")[0]]))
                rules.append(
                    IdentifierRule(
                        entity=name.upper(), min_digits=max(3, low), max_digits=max(3, high, low), context=words
                    )
                )
    return RedactionConfig(
        account_number_length=auth.account_number_length if auth.identify_by == "account_number" else None,
        pin_digits=(auth.pin_length, auth.pin_length) if auth.verify_with == "pin" else (4, 8),
        identifiers=tuple(rules),
    )


class KnownCaller(Protocol):
    """What a live conversation knows of its caller (a runtime Session has these)."""

    @property
    def account_number(self) -> str | None:
        """The verified account number."""

    @property
    def customer_name(self) -> str | None:
        """The verified customer's name."""

    @property
    def slots(self) -> Mapping[str, Any]:
        """The values the caller gave."""


def known_values(session: KnownCaller) -> dict[str, list[str]]:
    """What this caller is known to have said or be (found however it is written or spoken)."""
    accounts = {str(v) for v in (session.account_number, session.slots.get("account_number")) if v}
    phone = session.slots.get("phone")
    return known_caller(accounts=accounts, name=session.customer_name, phone=str(phone) if phone else None)


def known_caller(*, accounts: Collection[str], name: str | None, phone: str | None) -> dict[str, list[str]]:
    """The known values of a caller from their account numbers, name and phone number."""
    known: dict[str, list[str]] = {}
    if accounts:
        known["ACCOUNT_NUMBER"] = sorted(accounts)
    if name:
        known["PERSON"] = [name]
    if phone:
        known["PHONE_NUMBER"] = [phone]
    return known


@lru_cache(maxsize=16)
def _cached(config_json: str) -> Redactor:
    return Redactor(RedactionConfig.model_validate_json(config_json))


def redactor_for_config(config: RedactionConfig) -> Redactor:
    """A shared redactor for these settings (building one takes a while; using one is cheap)."""
    return _cached(config.model_dump_json())


def default_redactor() -> Redactor:
    """The shared redactor with the default settings (any agent, any caller)."""
    return redactor_for_config(RedactionConfig())


def redactor_for_agent(agent: Agent, topics: Iterable[Topic] = ()) -> Redactor:
    """The shared redactor for an agent and its topics."""
    return redactor_for_config(config_for_agent(agent, topics))
