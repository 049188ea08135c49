"""PII redaction before storage: Presidio with pattern recognizers, spoken numbers, the agent's own identifiers.

``Redactor.redact(text)`` finds personal data in a caller's or agent's words and replaces it with
typed placeholders (``<CREDIT_CARD>``, ``<PHONE_NUMBER>``, ``<EMAIL_ADDRESS>``, ``<US_SSN>``,
``<ACCOUNT_NUMBER>``, ``<PIN>``, ``<PERSON>``, ``<POSTCODE>``, ``<CASE_ID>``, ``<IBAN_CODE>``).

How, and why:

- Speech-recognition text is first normalised (:mod:`voxgate.compliance.spoken_numbers`):
  "four one one one …" becomes digits and "john dot smith at gmail dot com" an address, so the
  pattern recognizers see what they expect; an offset map puts every span back on the original.
- Presidio's analyzer runs with our own NLP engine (a blank spaCy tokenizer, lower-cased tokens as
  lemmas, so context words still work) and no model download; its card (Luhn), phone
  (libphonenumber), e-mail, SSN and IBAN recognizers do the well-known types.
- Identifiers that only the agent knows the shape of come from its declaration
  (:func:`config_for_agent`): account-number and PIN length, postcode and other identifier slots.
  A digit string counts by the nearest context word before (or just after) it: "account" makes it
  an account number, "order"/"invoice"/"tracking" make it nothing; a bare long digit string is an
  identifier by default (privacy first).
- Names without a model: cue phrases ("my name is", "this is", "spoke to"), a shipped list of
  frequent given names and surnames (:mod:`voxgate.compliance.pii_names`), and capitals.
- Values the caller is known to have (``known=``: the verified account number, the customer's
  name) are always found, however they are written or spoken.

Overlapping findings merge into one span (so nothing is half-redacted), typed by the strongest.
Raw text never reaches a log from here.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator

# Presidio's e-mail recognizer uses tldextract, which fetches the public suffix list unless told not to.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import spacy  # noqa: E402
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult  # noqa: E402
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer  # noqa: E402
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine  # noqa: E402
from presidio_analyzer.predefined_recognizers import (  # noqa: E402
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)
from presidio_anonymizer import AnonymizerEngine  # noqa: E402
from presidio_anonymizer.entities import OperatorConfig  # noqa: E402
from presidio_anonymizer.entities import RecognizerResult as AnonymizerResult  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, model_validator  # noqa: E402
from spacy.lang.en.stop_words import STOP_WORDS  # noqa: E402

from voxgate.compliance.pii_names import AMBIGUOUS, GIVEN_NAMES, SURNAMES  # noqa: E402
from voxgate.compliance.spoken_numbers import normalize_spoken  # noqa: E402

if TYPE_CHECKING:
    from voxgate.spec.models import Agent, Topic

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
    "known_values",
    "redactor_for_agent",
    "redactor_for_config",
]

ENTITY_TYPES = (
    "CREDIT_CARD", "PHONE_NUMBER", "EMAIL_ADDRESS", "US_SSN", "IBAN_CODE",
    "ACCOUNT_NUMBER", "PIN", "POSTCODE", "CASE_ID", "PERSON",
)
MAX_TEXT_CHARS = 20_000


class RedactionError(ValueError):
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
    def _ordered(self) -> "IdentifierRule":
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
        default=8, ge=4, le=32, description="A digit string this long with no telling context is treated as an identifier."
    )
    pin_digits: tuple[int, int] = Field(default=(4, 8))
    postcodes: bool = True
    case_ids: bool = True
    names: bool = True
    identifiers: tuple[IdentifierRule, ...] = ()
    phone_regions: tuple[str, ...] = ("US", "GB", "CA", "AU", "IE", "DE", "FR", "IN")
    score_threshold: float = Field(default=0.35, ge=0.0, le=1.0)


# --- words that steer the digit recognizers -------------------------------------------------

_ACCOUNT_WORDS = ("account", "acct", "account number", "account no", "customer number", "customer no",
                  "member number", "membership number", "customer id", "account id")
_PIN_WORDS = ("pin", "pin number", "pin code", "passcode", "pass code", "security code", "secret code",
              "security number", "password")
_POSTCODE_WORDS = ("postcode", "post code", "postal code", "zip", "zip code", "zipcode")
_PHONE_WORDS = ("phone", "phone number", "telephone", "mobile", "cell", "landline", "call", "text", "reach",
                "contact number", "number to reach", "fax", "whatsapp")
_CARD_WORDS = ("card", "card number", "credit card", "debit card", "visa", "mastercard", "master card", "amex",
               "american express", "discover", "long number")
_CASE_WORDS = ("case", "ticket", "complaint", "claim", "dispute", "incident")
# Numbers that name things, not people: a digit string announced by these is left alone.
_NOT_PERSONAL_WORDS = (
    "order", "order number", "tracking", "tracking number", "invoice", "reference", "ref", "confirmation",
    "model", "serial", "room", "flight", "booking", "extension", "ext", "apartment", "flat", "unit", "suite",
    "floor", "building", "plan", "speed", "mbps", "megabits", "item", "sku", "product", "version", "year",
    "years", "price", "cost", "costs", "charged", "paid", "pay", "owe", "dollars", "pounds", "euros", "total",
    "amount", "balance", "bill", "receipt", "transaction", "page", "step", "channel", "store", "code",
)

_DIGITS_RE = re.compile(
    r"(?<![\w.,/:$£€#+-])"  # not part of a price, date, time, decimal or word
    r"(\d+(?:[ -]\d{3,})*)"
    r"(?![\w%/:]|[.,]\d)"
)
_CASE_ID_RE = re.compile(r"(?<![\w-])([A-Za-z]{1,6}-?\d{3,12}|\d{4,12})(?![\w-])")
_UK_POSTCODE_RE = re.compile(r"(?<!\w)([A-Za-z]{1,2}\d[A-Za-z\d]?\s*\d[A-Za-z]{2})(?!\w)")
_US_ZIP_RE = re.compile(r"(?<![\w-])(\d{5}(?:-\d{4})?)(?![\w-])")
_WORD_RE = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*")


def _cue_word(word: str) -> str:
    """Lower case, without a plural or possessive "s" ("accounts", "account's" -> "account")."""
    word = word.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def _words_before(text: str, pos: int, limit: int = 6) -> list[str]:
    return [_cue_word(w) for w in _WORD_RE.findall(text[max(0, pos - 60):pos])][-limit:]


def _words_after(text: str, pos: int, limit: int = 4) -> list[str]:
    return [_cue_word(w) for w in _WORD_RE.findall(text[pos:pos + 40])][:limit]


def _phrase_at(words: list[str], phrases: Iterable[str]) -> dict[int, int]:
    """{index of the phrase's last word: phrase length} for every phrase occurring in ``words``."""
    found: dict[int, int] = {}
    for phrase in phrases:
        parts = phrase.split()
        n = len(parts)
        for i in range(n - 1, len(words)):
            if words[i - n + 1:i + 1] == parts:
                found[i] = max(found.get(i, 0), n)
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
    after = _words_after(text, end)
    pos_after, neg_after = _phrase_at(after, positive), _phrase_at(after, negative)
    first_pos, first_neg = min(pos_after, default=99), min(neg_after, default=99)
    if first_pos == first_neg == 99:
        return None
    return "pos" if first_pos < first_neg else "neg"


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
        return NlpArtifacts(entities=[], tokens=doc, tokens_indices=[t.idx for t in doc],
                            lemmas=[t.lower_ for t in doc], nlp_engine=self, language=language)

    def process_batch(self, texts: Iterable[str], language: str, batch_size: int = 1, n_process: int = 1,
                      **kwargs: Any) -> Iterator[tuple[str, NlpArtifacts]]:
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


# --- recognizers ----------------------------------------------------------------------------


def _result(entity: str, start: int, end: int, score: float, name: str) -> RecognizerResult:
    return RecognizerResult(entity_type=entity, start=start, end=end, score=score,
                            recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: name})


class _DigitIdentifierRecognizer(EntityRecognizer):
    """Digit strings that are account numbers, PINs, postcodes or the agent's own identifiers, by context."""

    def __init__(self, config: RedactionConfig):
        self.config = config
        entities = ["ACCOUNT_NUMBER", "PIN"] + (["POSTCODE"] if config.postcodes else [])
        entities += [rule.entity for rule in config.identifiers if rule.entity not in entities]
        super().__init__(supported_entities=entities, name="voxgate_digit_identifiers")

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
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
        cue = _nearest_cue(text, start, end, _ACCOUNT_WORDS, _NOT_PERSONAL_WORDS + _PIN_WORDS + _CASE_WORDS)
        if cue == "neg":
            return None
        if cue == "pos" and cfg.account_number_digits[0] <= n <= cfg.account_number_digits[1]:
            return "ACCOUNT_NUMBER", 0.85
        if cfg.account_number_length is not None and n == cfg.account_number_length:
            return "ACCOUNT_NUMBER", 0.5
        if n >= cfg.bare_identifier_min_digits:
            return "ACCOUNT_NUMBER", 0.35
        return None


_PHONE_SHAPE = re.compile(r"(?:1[ -])?\d{3}[ -.]\d{3}[ -.]\d{4}|\d{4,5} \d{6}|\d{3} \d{4} \d{4}")


def _phone_shaped(text: str, start: int, end: int) -> bool:
    """Grouped like a telephone number ("212-555-0147", "(020) 7946 0958", "07700 900123")."""
    before = text[max(0, start - 2):start]
    return bool(_PHONE_SHAPE.fullmatch(text[start:end])) or ")" in before or "(" in before or "+" in before


class _CaseIdRecognizer(EntityRecognizer):
    """Case and ticket ids ("case CASE-000123", "ticket 48213") announced by a case word."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["CASE_ID"], name="voxgate_case_ids")

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        out = []
        for match in _CASE_ID_RE.finditer(text):
            start, end = match.span(1)
            if _nearest_cue(text, start, end, _CASE_WORDS, _NOT_PERSONAL_WORDS + _ACCOUNT_WORDS) == "pos":
                out.append(_result("CASE_ID", start, end, 0.8, self.name))
        return out


# Cue phrases before a name. Strong ones take any word that is not a common word; weak ones
# need a listed or capitalised name.
_STRONG_NAME_CUES = (
    "my name is", "my name's", "name is", "name's", "call me", "under the name", "under the name of",
    "in the name of", "holder is", "hi this is", "hello this is", "hey this is", "hi i'm", "hello i'm",
    "hey i'm", "hi it's", "hello it's", "mr", "mrs", "ms", "miss", "mister", "dr", "doctor", "named", "spelled",
)
_WEAK_NAME_CUES = (
    "this is", "i'm", "i am", "it's", "it is", "hi", "hello", "hey", "thanks", "thank you", "name",
    "speak to", "speak with", "spoke to", "spoke with", "talk to", "talked to", "talking to", "talk with",
    "ask for", "through to", "transfer me to", "on behalf of", "for", "from", "with", "and", "to", "by",
    "wife", "husband", "partner", "son", "daughter", "mother", "father", "mom", "mum", "dad", "brother",
    "sister", "friend", "wife's", "husband's", "colleague", "agent", "is", "ask", "tell",
)
_SELF_ANNOUNCING = frozenset({"here", "speaking", "calling"})  # "Dagny Garcia here", "this is Ann speaking"
_CALENDAR = frozenset("""
january february march april may june july august september october november december
monday tuesday wednesday thursday friday saturday sunday today tomorrow yesterday
""".split())
# Common words in customer-service talk that the stop-word list lacks: never part of a name.
_NOT_NAMES = frozenset("""
calling speaking here there please sorry again yes yeah yep no nope ok okay um uh er hmm hi hello hey
thanks thank bye someone somebody anyone human person agent representative manager supervisor operator
customer account number phone email card bill billing order router modem internet wifi broadband line
service outage engineer technician help problem issue question payment refund contract plan upgrade
cancel calling about regarding from the flat house apartment street road avenue speaking returning
call back soon today tonight morning afternoon evening week month year just also still really
visa mastercard amex discover paypal harbor support team sir madam ma'am dear fine good great well
""".split()) | STOP_WORDS | _CALENDAR


class _PersonRecognizer(EntityRecognizer):
    """Names without a model: cue phrases, a list of frequent names, and capitals in written text."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], name="voxgate_names")

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        tokens = [(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]
        lows = [t[0].lower().replace("’", "'") for t in tokens]
        has_case = text != text.lower()
        strong, weak = _phrase_at(lows, _STRONG_NAME_CUES), _phrase_at(lows, _WEAK_NAME_CUES)
        out: list[RecognizerResult] = []
        i = 0
        while i < len(tokens):
            cue = "strong" if (i - 1) in strong else ("weak" if (i - 1) in weak else None)
            if cue != "strong" and i >= 2 and lows[i - 1] in ("is", "was") and "name" in lows[max(0, i - 7):i - 1]:
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
        return out

    @staticmethod
    def _announced_length(lows: list[str], i: int, cue: str | None) -> int:
        """How many words from ``i`` name the speaker in "<name> here" / "this is <name> speaking" (0: none)."""
        if not (i == 0 or cue is not None):
            return 0
        for n in (1, 2):
            words = lows[i:i + n]
            if len(words) == n and i + n < len(lows) and lows[i + n] in _SELF_ANNOUNCING:
                if all(w not in _NOT_NAMES and len(w) > 1 and not _contraction(w) for w in words):
                    return n
        return 0

    @staticmethod
    def _sentence_start(tokens: list[tuple[str, int, int]], i: int, text: str) -> bool:
        if i == 0:
            return True
        between = text[tokens[i - 1][2]:tokens[i][1]]
        return any(c in between for c in ".!?")

    def _first_token_score(self, tokens: list[tuple[str, int, int]], lows: list[str], i: int,
                           cue: str | None, has_case: bool) -> float | None:
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
            if follower in SURNAMES and follower not in AMBIGUOUS and (capital or not has_case):
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
    def _continues(tokens: list[tuple[str, int, int]], lows: list[str], j: int, cue: str | None,
                   has_case: bool, text: str) -> bool:
        between = text[tokens[j - 1][2]:tokens[j][1]]
        if between.strip(" -"):
            return False  # a comma or full stop ends the name
        raw, low = tokens[j][0], lows[j]
        if low in _NOT_NAMES or len(low) < 2 or _contraction(low):
            return False
        if low in SURNAMES or (low in GIVEN_NAMES and low not in AMBIGUOUS):
            return True
        if has_case:
            return raw[0].isupper()
        # lower-case speech text: after a name, one more word that is not a common word is its surname
        return lows[j - 1] in GIVEN_NAMES or cue == "strong"


def _contraction(word: str) -> bool:
    """"i'll", "we're", "don't": a function word with an ending, never a name ("o'brien" is one)."""
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

    def __init__(self, entity: str, pattern: re.Pattern[str]):
        self.pattern = pattern
        super().__init__(supported_entities=[entity], name=f"voxgate_known_{entity.lower()}")

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        entity = self.supported_entities[0]
        return [_result(entity, m.start(), m.end(), 1.0, self.name) for m in self.pattern.finditer(text)]


# --- the redactor ---------------------------------------------------------------------------


class Redactor:
    """Finds PII in one utterance at a time and replaces it with typed placeholders. Thread-safe."""

    def __init__(self, config: RedactionConfig | None = None):
        self.config = config or RedactionConfig()
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in self._recognizers():
            registry.add_recognizer(recognizer)
        self._nlp = _BlankNlpEngine()
        # callers also say what a number is after it ("... that's my social"): look both ways
        enhancer = LemmaContextAwareEnhancer(context_prefix_count=6, context_suffix_count=4)
        self._analyzer = AnalyzerEngine(registry=registry, nlp_engine=self._nlp, supported_languages=["en"],
                                        default_score_threshold=self.config.score_threshold,
                                        context_aware_enhancer=enhancer)
        self._anonymizer = AnonymizerEngine()
        self._entities = sorted({e for r in registry.recognizers for e in r.supported_entities})

    def _recognizers(self) -> list[EntityRecognizer]:
        cfg = self.config
        recognizers: list[EntityRecognizer] = [
            CreditCardRecognizer(),
            PhoneRecognizer(supported_regions=list(cfg.phone_regions)),
            EmailRecognizer(),
            UsSsnRecognizer(),
            IbanRecognizer(),
            _DigitIdentifierRecognizer(cfg),
        ]
        if cfg.case_ids:
            recognizers.append(_CaseIdRecognizer())
        if cfg.names:
            recognizers.append(_PersonRecognizer())
        return recognizers

    @property
    def entities(self) -> list[str]:
        return list(self._entities)

    def find(self, text: str, known: Mapping[str, Iterable[str]] | None = None,
             allow: Iterable[str] = ()) -> list[RedactionSpan]:
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
        spoken = normalize_spoken(text)
        ad_hoc = [r for entity, values in (known or {}).items() if (r := _known_recognizer(entity, values))]
        entities = sorted(set(self._entities) | {r.supported_entities[0] for r in ad_hoc})
        results = self._analyzer.analyze(spoken.text, language="en", entities=entities,
                                         ad_hoc_recognizers=ad_hoc or None,
                                         score_threshold=self.config.score_threshold,
                                         allow_list=[a for a in allow if a] or None)
        found = []
        for r in results:
            if r.entity_type == "PHONE_NUMBER" and not _phone_in_context(spoken.text, r.start, r.end):
                continue
            start, end = spoken.to_original(r.start, r.end)
            start, end = _trim(text, start, end)
            if end > start:
                found.append((start, end, r.entity_type, r.score))
        return _merge(found)

    def redact(self, text: str, known: Mapping[str, Iterable[str]] | None = None,
               allow: Iterable[str] = ()) -> RedactionResult:
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

    def redact_json(self, value: Any, known: Mapping[str, Iterable[str]] | None = None,
                    keep: Iterable[str] = (), counts: Counter[str] | None = None) -> Any:
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


def _phone_in_context(text: str, start: int, end: int) -> bool:
    """False for a bare digit string that passes as a phone number but was called something else.

    "tracking number 9400111899" is phone-valid; a number written as a phone number
    ("+1 212…", "(212) 555-0147", "212-555-0147") is taken as one whatever is said around it.
    """
    if sum(c.isdigit() for c in text[start:end]) > 13:
        return False  # longer than any dialled number: a card or an account, judged elsewhere
    if not text[start:end].strip().isdigit():
        return True
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
            best = max(group, key=lambda f: (f[3], f[1] - f[0]))
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


def config_for_agent(agent: "Agent", topics: Iterable["Topic"] = ()) -> RedactionConfig:
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
                rules.append(IdentifierRule(entity=name.upper(), min_digits=max(3, low), max_digits=max(3, high, low),
                                            context=words))
    return RedactionConfig(
        account_number_length=auth.account_number_length if auth.identify_by == "account_number" else None,
        pin_digits=(auth.pin_length, auth.pin_length) if auth.verify_with == "pin" else (4, 8),
        identifiers=tuple(rules),
    )


def known_values(session: Any) -> dict[str, list[str]]:
    """What this caller is known to have said or be (found however it is written or spoken)."""
    known: dict[str, list[str]] = {}
    accounts = {v for v in (session.account_number, session.slots.get("account_number")) if v}
    if accounts:
        known["ACCOUNT_NUMBER"] = sorted(str(v) for v in accounts)
    if session.customer_name:
        known["PERSON"] = [session.customer_name]
    phone = session.slots.get("phone")
    if phone:
        known["PHONE_NUMBER"] = [str(phone)]
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


def redactor_for_agent(agent: "Agent", topics: Iterable["Topic"] = ()) -> Redactor:
    """The shared redactor for an agent and its topics."""
    return redactor_for_config(config_for_agent(agent, topics))
