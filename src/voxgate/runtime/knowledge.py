"""Grounded answers: split knowledge/*.md into sections, embed them, and retrieve with citations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from rank_bm25 import BM25Okapi

from voxgate.bundle.models import KnowledgeDoc

# Dense similarity decides whether a passage answers at all; a light lexical score breaks
# near-ties between sections that share a theme ("Saturday" picks the opening-hours section).
LEXICAL_WEIGHT = 0.12
_STOP = frozenset(
    "a an the and or but of to in on at for from by with is are was were be been do does did "
    "i you we they it my your our me us what when where which who how can could would will "
    "please tell about this that there any".split()
)


def _terms(text: str) -> list[str]:
    out = []
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if word in _STOP:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 2 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        out.append(word)
    return out


class TextEmbedder(Protocol):
    """Turns texts into embedding vectors (the agent runtime's sentence embedder)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One embedding per text, as rows of a matrix."""
        ...


@dataclass(frozen=True)
class Passage:
    """One section of a knowledge document."""

    doc: str
    section: str
    text: str

    @property
    def citation(self) -> str:
        """The document and section anchor a reply cites (`doc#section`)."""
        anchor = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"{self.doc}#{anchor}" if anchor else self.doc


@dataclass(frozen=True)
class Hit:
    """A passage found for a query, with its score."""

    passage: Passage
    score: float


def split_sections(doc: KnowledgeDoc) -> list[Passage]:
    """One passage per heading; text before the first sub-heading belongs to the document title."""
    passages: list[Passage] = []
    section = doc.title
    lines: list[str] = []

    def flush() -> None:
        body = " ".join(ln.strip() for ln in lines if ln.strip())
        if body:
            passages.append(Passage(doc.path, section, body))

    for line in doc.text.splitlines():
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            flush()
            lines = []
            section = m.group(2).strip()
        else:
            lines.append(line)
    flush()
    return passages


class KnowledgeIndex:
    """The passages of an agent's knowledge documents, searchable by embedding and BM25."""

    def __init__(self, docs: Sequence[KnowledgeDoc], embedder: TextEmbedder):
        self.embedder = embedder
        self.passages = [p for d in docs for p in split_sections(d)]
        # the heading carries much of a short section's meaning ("Opening hours")
        texts = [f"{p.section}. {p.text}" for p in self.passages]
        self.matrix = embedder.embed(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        self.bm25 = BM25Okapi([_terms(t) or ["_"] for t in texts]) if texts else None

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """Passages ranked by dense similarity plus a small lexical bonus; score is the dense part."""
        if not self.passages or self.bm25 is None:
            return []
        dense = self.matrix @ self.embedder.embed([query])[0]
        lexical = np.asarray(self.bm25.get_scores(_terms(query)), dtype=np.float32)
        top = float(lexical.max()) if lexical.size else 0.0
        ranking = dense + LEXICAL_WEIGHT * (lexical / top if top > 0 else 0.0)
        order = np.argsort(-ranking)[:k]
        return [Hit(self.passages[i], float(dense[i])) for i in order]

    def answer(self, query: str, min_score: float) -> Hit | None:
        """The best passage for `query` if it scores at least `min_score`, else None."""
        hits = self.search(query, k=1)
        return hits[0] if hits and hits[0].score >= min_score else None
