"""Text around speech: normalisation and chunking for TTS, transcript comparison (WER), backchannel detection.

To speech: :func:`normalize_for_speech` rewrites what TTS engines read badly
(reference codes, long digit strings, money) and :func:`split_for_speech` cuts a
reply so the first chunk is short (low time to first audio) and the rest follows
sentence by sentence.

From speech: :func:`normalize_transcript` and :func:`word_error_rate` compare a
recogniser's output with a reference the way WER is usually scored (case,
punctuation and digit/word spelling ignored), and :func:`is_backchannel` tells
listener noises ("uh-huh", "okay", "right") from a real interruption.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# ---- to speech -------------------------------------------------------------------------------

_CURRENCIES = {"$": ("dollar", "dollars"), "€": ("euro", "euros"), "£": ("pound", "pounds")}
_MONEY = re.compile(r"(?P<cur>[$€£])\s?(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<cents>\d{2}))?(?!\d)")
# A code-like token: letters/digits joined by - _ / or nothing, e.g. HT-199603, CASE-000002, A12B.
_TOKEN = re.compile(r"(?<![\w$€£.,])[A-Za-z0-9]+(?:[-_/][A-Za-z0-9]+)*(?![\w])")
_DATE = re.compile(r"^\d{4}[-/]\d{1,2}[-/]\d{1,2}$|^\d{1,2}[-/]\d{1,2}[-/]\d{2,4}$")
_VOWELS = set("aeiouyAEIOUY")
#: Digit runs at least this long are read digit by digit (account numbers, ZIP codes), shorter ones as numbers.
LONG_DIGITS = 5
#: Hyphen-grouped digits with at least this many digits in all are read digit by digit (phone numbers).
GROUPED_DIGITS = 7


def _speakable_word(letters: str) -> bool:
    """Whether a letter group is read as a word ("CASE", "ORDER") rather than spelled ("HT", "ACCT")."""
    if len(letters) < 4 or not any(c in _VOWELS for c in letters):
        return False
    return re.search(r"[^aeiouyAEIOUY]{3,}", letters) is None


def _spell_token(token: str) -> str:
    parts: list[str] = []
    for group in re.findall(r"[A-Za-z]+|\d+", token):
        if group.isdigit():
            parts.extend(group)
        elif _speakable_word(group):
            parts.append(group.lower())
        else:
            parts.extend(group.upper())
    return " ".join(parts)


def _rewrite_token(match: re.Match[str]) -> str:
    token = match.group(0)
    has_letter = any(c.isalpha() for c in token)
    has_digit = any(c.isdigit() for c in token)
    if has_letter and has_digit:
        return _spell_token(token)
    if has_digit and not has_letter:
        if _DATE.match(token):
            return token  # dates are the engine's job
        digits = re.findall(r"\d+", token)
        if any(len(d) >= LONG_DIGITS for d in digits) or (len(digits) > 1 and sum(map(len, digits)) >= GROUPED_DIGITS):
            return _spell_token(token)
    return token


def _rewrite_money(match: re.Match[str]) -> str:
    singular, plural = _CURRENCIES[match.group("cur")]
    whole = match.group("whole")
    cents = int(match.group("cents") or 0)
    amount = int(whole.replace(",", ""))
    if amount == 0 and cents:
        return f"{cents} cent" + ("" if cents == 1 else "s")
    text = f"{whole} {singular if amount == 1 else plural}"
    return f"{text} {cents}" if cents else text


def normalize_for_speech(text: str) -> str:
    """Rewrite text so a TTS engine reads it the way a person would on the phone.

    * Codes that mix letters and digits, and long digit strings, are read one
      character at a time: ``"HT-199603"`` → ``"H T 1 9 9 6 0 3"``; a pronounceable
      letter part stays a word: ``"CASE-000002"`` → ``"case 0 0 0 0 0 2"``;
      ``"94103"`` → ``"9 4 1 0 3"``; ``"555-010-4477"`` → ``"5 5 5 0 1 0 4 4 7 7"``.
    * Money: ``"$23.50"`` → ``"23 dollars 50"``, ``"$1"`` → ``"1 dollar"``, ``"$0.75"`` → ``"75 cents"``.
    * Ordinary numbers ("3 items", "1,200", "2.5") and dates are left to the engine.

    Idempotent: normalising the output again changes nothing.
    """
    text = _MONEY.sub(_rewrite_money, text)
    return _TOKEN.sub(_rewrite_token, text)


_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "approx", "no", "jr", "sr", "inc", "ltd"}
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_CLAUSE_BREAK = re.compile(r"[,;:]$|[—–]$|^[—–-]$")
#: Words that always start a clause: a natural place to cut a long first sentence.
_SUBORDINATORS = {"because", "which", "while", "although", "though", "if", "when", "unless", "since"}
#: Coordinators start a clause only when a subject follows ("and I can see", not "nine and eleven").
_COORDINATORS = {"and", "but", "so", "or", "then"}
_SUBJECTS = {
    "i",
    "we",
    "you",
    "it",
    "he",
    "she",
    "they",
    "that",
    "this",
    "there",
    "your",
    "my",
    "our",
    "the",
    "a",
    "an",
}
#: The first chunk is kept to about this many words so audio starts quickly.
FIRST_CHUNK_WORDS = 8


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        candidate = text[start : m.start()].strip()
        last_word = candidate.rsplit(None, 1)[-1].rstrip(".!?\"')]").lower() if candidate else ""
        if candidate.endswith(".") and (last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha())):
            continue  # "Mr. Smith", "J. Doe": not a sentence end
        if candidate:
            out.append(candidate)
        start = m.end()
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


def _is_clause_start(words: list[str], i: int) -> bool:
    word = words[i].lower()
    if word in _SUBORDINATORS:
        return True
    return word in _COORDINATORS and i + 1 < len(words) and words[i + 1].lower().strip(",") in _SUBJECTS


def _split_first(sentence: str, max_words: int) -> list[str]:
    words = sentence.split()
    if len(words) <= max_words:
        return [sentence]

    def cut(i: int) -> list[str]:
        return [" ".join(words[:i]), " ".join(words[i:])]

    def punct(i: int) -> bool:
        return _CLAUSE_BREAK.search(words[i - 1]) is not None

    # The rest must be worth a chunk of its own.
    last = len(words) - 2
    # 1. punctuation (comma, colon, dash) within the first max_words words — even after
    #    one word: "Sure," / "Okay," is a natural pause;
    for i in range(1, min(last, max_words) + 1):
        if punct(i):
            return cut(i)
    # 2. a clause start ("because ...", "and I ...") a little further, but not after one
    #    or two words, which would sound clipped without a comma;
    for i in range(3, min(last, max_words + 4) + 1):
        if _is_clause_start(words, i):
            return cut(i)
    # 3. either, up to twice the budget; beyond that the sentence stays whole.
    for i in range(max_words + 1, min(last, 2 * max_words) + 1):
        if punct(i) or _is_clause_start(words, i):
            return cut(i)
    return [sentence]


def first_clause(chunk: str, min_rest_words: int = 2) -> list[str]:
    """A chunk cut after its first clause break ("Thanks Elena," / "you're verified."), when what
    follows is at least `min_rest_words` words; else the chunk whole.

    For a first chunk that must be synthesised before the caller hears anything (one not in the
    speech cache): the shorter it is, the sooner the first audio, and the rest is synthesised
    while the first clause plays.
    """
    words = chunk.split()
    for i in range(1, len(words) - min_rest_words + 1):
        if _CLAUSE_BREAK.search(words[i - 1]):
            return [" ".join(words[:i]), " ".join(words[i:])]
    return [chunk]


def split_for_speech(text: str, first_max_words: int = FIRST_CHUNK_WORDS) -> list[str]:
    """Cut a reply into TTS chunks: a short first chunk, then one chunk per sentence.

    The first chunk is the first sentence if it has at most `first_max_words` words,
    else its first clause (cut at a comma/colon/dash within those words, or before a
    word such as "and"/"because"); if it has no natural break it stays whole rather
    than being cut mid-phrase. Empty input gives an empty list.
    """
    sentences = _sentences(" ".join(text.split()))
    if not sentences:
        return []
    return _split_first(sentences[0], first_max_words) + sentences[1:]


# ---- from speech -----------------------------------------------------------------------------

_ONES = (
    "zero one two three four five six seven eight nine ten "
    "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_SUBS = {
    "mr": "mister",
    "mrs": "missus",
    "dr": "doctor",
    "st": "saint",
    "ok": "okay",
    "oh": "zero",
    "%": "percent",
}


def _number_words(digits: str) -> list[str]:
    """0-99 as words ("45" → forty five); longer digit strings digit by digit, as people read codes."""
    n = int(digits)
    if len(digits) <= 2:
        if n < 20:
            return [_ONES[n]]
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    return [_ONES[int(d)] for d in digits]


def normalize_transcript(text: str) -> str:
    """Lower-case words for scoring: no punctuation, hyphens split, digits spelled ("10" → "ten", "29340" → digits).

    "oh" is scored as "zero" (digit readings), "Mr." as "mister", "ok" as "okay".
    """
    text = text.lower().replace("-", " ").replace("/", " ")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,200 → 1200
    text = re.sub(r"(?<=\d)\.(?=\d)", " point ", text)
    words: list[str] = []
    for token in re.findall(r"[a-z']+|\d+|%", text):
        token = token.strip("'")
        if not token:
            continue
        if token.isdigit():
            words.extend(_number_words(token))
        else:
            words.append(_WORD_SUBS.get(token, token))
    return " ".join(words)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count) after :func:`normalize_transcript`."""
    ref = normalize_transcript(reference).split()
    hyp = normalize_transcript(hypothesis).split()
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate of one hypothesis against one reference (0.0 when both are empty)."""
    errors, n = word_errors(reference, hypothesis)
    return errors / n if n else float(errors > 0)


#: Listener noises and acknowledgements that do not take the turn while the agent speaks.
DEFAULT_BACKCHANNELS: tuple[str, ...] = (
    "uh huh",
    "mm hmm",
    "mhm",
    "mhmm",
    "mm",
    "hmm",
    "hm",
    "uh",
    "um",
    "ah",
    "oh",
    "huh",
    "okay",
    "ok",
    "alright",
    "all right",
    "yeah",
    "yep",
    "yes",
    "yup",
    "right",
    "sure",
    "got it",
    "i see",
    "cool",
    "great",
    "fine",
    "good",
    "thanks",
    "thank you",
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("-", " "))


def is_backchannel(text: str, backchannels: Iterable[str] | None = None) -> bool:
    """Whether `text` consists only of backchannel phrases ("uh huh", "okay yeah", "mm-hmm right").

    Works on pocketsphinx partials and Whisper finals alike (case, punctuation and
    hyphens ignored). Text with no words at all counts as a backchannel: nothing in
    it claims the turn. Pass `backchannels` to replace :data:`DEFAULT_BACKCHANNELS`.
    """
    words = _words(text)
    if not words:
        return True
    phrases = {tuple(_words(p)) for p in (DEFAULT_BACKCHANNELS if backchannels is None else backchannels)}
    phrases.discard(())
    # Can the words be covered exactly by backchannel phrases? (reachable[i]: words[:i] can)
    reachable = [True] + [False] * len(words)
    for i in range(len(words)):
        if reachable[i]:
            for phrase in phrases:
                if tuple(words[i : i + len(phrase)]) == phrase:
                    reachable[i + len(phrase)] = True
    return reachable[-1]
