"""Spot abusive language in caller text; the level comes from the agent's generative settings."""

from __future__ import annotations

import re
from importlib import resources

_LEVEL_MIN_SEVERITY = {"off": 99, "low": 3, "medium": 2, "high": 1}


def _load_lexicon() -> dict[str, int]:
    terms: dict[str, int] = {}
    text = resources.files("voxgate.runtime").joinpath("data/abuse_lexicon.txt").read_text("utf-8")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        term, _, severity = line.rpartition(" ")
        terms[term.strip().lower()] = int(severity)
    return terms


_LEXICON = _load_lexicon()
_PATTERN = re.compile(
    r"\b(" + "|".join(sorted((re.escape(t) for t in _LEXICON), key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)


def abusive_terms(text: str, level: str = "medium") -> list[str]:
    """Terms at or above the level's severity (1 mild, 2 insulting, 3 threatening/slur)."""
    threshold = _LEVEL_MIN_SEVERITY.get(level, 2)
    found = [m.group(1).lower() for m in _PATTERN.finditer(text)]
    return [t for t in found if _LEXICON.get(t, 0) >= threshold]
