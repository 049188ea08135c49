"""Intent classification with a calibrated out-of-scope rejection, on top of sentence embeddings.

Each intent is scored by blending the cosine to its centroid (robust to one odd
example) with the mean cosine of its ``top_k`` closest examples (keeps
multi-modal intents such as "my internet is down" / "no signal on my phone"
reachable). The best score must clear a threshold that is chosen at fit time from
two samples of data the classifier has not memorised:

* leave-one-out scores of the in-scope examples (how well a new in-scope phrasing
  scores when its own example is not there to match), and
* a shipped list of generic out-of-domain utterances (``runtime/data/out_of_domain.txt``).

The threshold maximises in-scope acceptance + background rejection (Youden's J,
with a cost ratio), and then sits in the middle of the best-scoring band rather
than at its edge, so one calibration sentence does not decide it. Agent-specific
``negatives`` (things the agent must refuse) are matched like examples: an
utterance closer to a negative than to its best intent is out of scope. The
generic background list is used the same way, as a safety net for the far-off
requests it covers.

``confidence`` is a logistic (Platt) mapping of the top score and the margin to
the runner-up, fitted on the same calibration data, so it reads as the estimated
probability that the top intent is right.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxgate.runtime.nlu.embeddings import Embedder, default_embedder

__all__ = [
    "Calibration",
    "IntentClassifier",
    "IntentPrediction",
    "load_out_of_domain",
]

#: Background utterances this similar to one of an agent's own examples describe
#: the agent's domain, not "elsewhere", and are dropped for that agent.
BACKGROUND_OVERLAP = 0.80
#: Shipped as package data (pyproject: runtime/data/*); found next to this package
#: because voxgate.runtime may be a namespace package, which importlib.resources cannot read.
OUT_OF_DOMAIN_FILE = Path(__file__).resolve().parent.parent / "data" / "out_of_domain.txt"

_PUNCTUATION = re.compile(r"[^\w' ]+")
_FILLERS = re.compile(r"\b(?:u+m+|u+h+|e+r+m*|h+m+|a+h+)\b")


@dataclass(frozen=True)
class IntentPrediction:
    """The classifier's answer for one utterance.

    ``intent`` is None when the utterance is out of scope; ``nearest`` still names
    the best-scoring intent so logs can show what was rejected.
    """

    intent: str | None
    confidence: float
    scores: dict[str, float]
    out_of_scope: bool
    margin: float
    nearest: str | None = None
    reason: str = "in_scope"  # "in_scope" | "below_threshold" | "negative" | "background" | "empty"


@dataclass(frozen=True)
class Calibration:
    """How the out-of-scope threshold and the confidence mapping were chosen (for audit logs)."""

    threshold: float
    method: str
    n_in_scope: int
    n_background: int
    n_background_dropped: int
    n_negatives: int
    loo_accuracy: float
    expected_false_reject: float
    expected_background_rejection: float
    confidence_weights: tuple[float, float, float]
    loo_score_quantiles: dict[str, float] = field(default_factory=dict)
    background_score_quantiles: dict[str, float] = field(default_factory=dict)


def load_out_of_domain() -> list[str]:
    """The shipped generic out-of-domain utterances (comments and blank lines skipped)."""
    text = OUT_OF_DOMAIN_FILE.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class _Scored:
    """Scores of a batch of queries: (m, n_intents) plus the best example cosine per intent."""

    scores: np.ndarray
    best_example: np.ndarray


class IntentClassifier:
    """Nearest-centroid + top-k example classifier with a calibrated out-of-scope threshold."""

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        top_k: int = 3,
        centroid_weight: float = 0.5,
        background: Sequence[str] | None = None,
        reject_cost: float = 1.0,
    ) -> None:
        """``reject_cost`` weighs a wrongly rejected in-scope caller against an accepted
        out-of-scope one when choosing the threshold (>1 = reject less readily)."""
        self._embedder = embedder
        self.top_k = top_k
        self.centroid_weight = centroid_weight
        self.reject_cost = reject_cost
        self._background_texts = list(background) if background is not None else None
        self._intents: list[str] = []
        self._example_vecs = np.zeros((0, 0), dtype=np.float32)
        self._example_labels = np.zeros(0, dtype=np.int64)
        self._centroids = np.zeros((0, 0), dtype=np.float32)
        self._negative_vecs = np.zeros((0, 0), dtype=np.float32)
        self._background_vecs = np.zeros((0, 0), dtype=np.float32)
        self._calibration: Calibration | None = None

    # --- public API -----------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    @property
    def intents(self) -> tuple[str, ...]:
        return tuple(self._intents)

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    @property
    def calibration(self) -> Calibration:
        if self._calibration is None:
            raise RuntimeError("IntentClassifier.fit() has not been called")
        return self._calibration

    @property
    def fitted(self) -> bool:
        return self._calibration is not None

    def _require_fitted(self) -> None:
        if self._calibration is None:
            raise RuntimeError("IntentClassifier.fit() has not been called")

    def fit(self, examples: Mapping[str, Sequence[str]], negatives: Sequence[str] | None = None) -> None:
        """Learn the intents from example utterances and calibrate the out-of-scope threshold.

        ``negatives`` are agent-specific utterances that must be refused (e.g.
        "cancel my contract" for an agent that cannot do cancellations).
        """
        cleaned = {name: [canonical_text(t) for t in texts if t and canonical_text(t)] for name, texts in examples.items()}
        cleaned = {name: texts for name, texts in cleaned.items() if texts}
        if not cleaned:
            raise ValueError("fit() needs at least one intent with at least one example")
        self._intents = list(cleaned)
        texts = [t for name in self._intents for t in cleaned[name]]
        self._example_labels = np.asarray(
            [k for k, name in enumerate(self._intents) for _ in cleaned[name]], dtype=np.int64
        )
        self._example_vecs = self.embedder.embed(texts)
        self._centroids = _normalise(
            np.stack([self._example_vecs[self._example_labels == k].mean(axis=0) for k in range(len(self._intents))])
        )
        self._negative_vecs = self._embed_or_empty([canonical_text(t) for t in (negatives or []) if canonical_text(t)])
        background = self._background_texts if self._background_texts is not None else load_out_of_domain()
        background_vecs = self._embed_or_empty([canonical_text(t) for t in background if canonical_text(t)])
        overlap = (background_vecs @ self._example_vecs.T).max(axis=1) if len(background_vecs) else np.zeros(0)
        self._background_vecs = background_vecs[overlap < BACKGROUND_OVERLAP]
        self._calibration = self._calibrate(n_dropped=int((overlap >= BACKGROUND_OVERLAP).sum()))

    def predict(self, text: str) -> IntentPrediction:
        """Classify one utterance."""
        self._require_fitted()
        canonical = canonical_text(text or "")
        if not canonical:
            return self._empty_prediction()
        query = self.embedder.embed_one(canonical)[np.newaxis, :]
        return self._predictions(query)[0]

    def predict_many(self, texts: Sequence[str]) -> list[IntentPrediction]:
        """Classify several utterances in one embedding batch."""
        self._require_fitted()
        results: list[IntentPrediction | None] = [None] * len(texts)
        canonical = [canonical_text(t or "") for t in texts]
        live = [i for i, t in enumerate(canonical) if t]
        if live:
            vecs = self.embedder.embed([canonical[i] for i in live])
            for i, prediction in zip(live, self._predictions(vecs)):
                results[i] = prediction
        return [r if r is not None else self._empty_prediction() for r in results]

    # --- scoring --------------------------------------------------------------------

    def _embed_or_empty(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed(list(texts)) if texts else np.zeros((0, self._example_vecs.shape[1]), np.float32)

    def _score(self, queries: np.ndarray, exclude: int | None = None) -> _Scored:
        """Blended intent scores for ``queries``; ``exclude`` leaves one example out (for calibration)."""
        sims = queries @ self._example_vecs.T
        centroids = self._centroids
        if exclude is not None:
            sims = sims.copy()
            sims[:, exclude] = -np.inf
            centroids = self._centroids_without(exclude)
        centroid_sims = queries @ centroids.T
        n_intents = len(self._intents)
        top_mean = np.empty((len(queries), n_intents), dtype=np.float32)
        best = np.empty((len(queries), n_intents), dtype=np.float32)
        for k in range(n_intents):
            own = sims[:, self._example_labels == k]
            own = own[:, np.isfinite(own).all(axis=0)] if exclude is not None else own
            if own.shape[1] == 0:  # an intent whose only example was left out
                top_mean[:, k] = centroid_sims[:, k]
                best[:, k] = centroid_sims[:, k]
                continue
            kk = min(self.top_k, own.shape[1])
            top = -np.partition(-own, kk - 1, axis=1)[:, :kk]
            top_mean[:, k] = top.mean(axis=1)
            best[:, k] = top.max(axis=1)
        w = self.centroid_weight
        return _Scored(w * centroid_sims + (1.0 - w) * top_mean, best)

    def _centroids_without(self, index: int) -> np.ndarray:
        label = self._example_labels[index]
        members = (self._example_labels == label)
        members[index] = False
        centroids = self._centroids.copy()
        if members.any():
            centroids[label] = _normalise(self._example_vecs[members].mean(axis=0, keepdims=True))[0]
        return centroids

    def _decide(self, scores: np.ndarray, best_example: np.ndarray, queries: np.ndarray) -> list[tuple[int, str]]:
        """Top intent index and the reason for accepting or rejecting it, per query."""
        out: list[tuple[int, str]] = []
        negative_best = _max_sim(queries, self._negative_vecs)
        background_best = _max_sim(queries, self._background_vecs)
        threshold = self.calibration.threshold
        for i in range(len(scores)):
            top = int(np.argmax(scores[i]))
            if scores[i, top] < threshold:
                out.append((top, "below_threshold"))
            elif negative_best[i] > best_example[i, top]:
                out.append((top, "negative"))
            elif background_best[i] > best_example[i, top]:
                out.append((top, "background"))
            else:
                out.append((top, "in_scope"))
        return out

    def _predictions(self, queries: np.ndarray) -> list[IntentPrediction]:
        scored = self._score(queries)
        decisions = self._decide(scored.scores, scored.best_example, queries)
        weights = self.calibration.confidence_weights
        results: list[IntentPrediction] = []
        for row, (top, reason) in zip(scored.scores, decisions):
            top_score, margin = _top_and_margin(row)
            accepted = reason == "in_scope"
            results.append(
                IntentPrediction(
                    intent=self._intents[top] if accepted else None,
                    confidence=_confidence(weights, top_score, margin),
                    scores={name: round(float(s), 4) for name, s in zip(self._intents, row)},
                    out_of_scope=not accepted,
                    margin=round(margin, 4),
                    nearest=self._intents[top],
                    reason=reason,
                )
            )
        return results

    def _empty_prediction(self) -> IntentPrediction:
        return IntentPrediction(None, 0.0, {name: 0.0 for name in self._intents}, True, 0.0, None, "empty")

    # --- calibration ----------------------------------------------------------------

    def _calibrate(self, *, n_dropped: int) -> Calibration:
        loo_top, loo_margin, loo_correct = self._leave_one_out()
        bg = self._score(self._background_vecs) if len(self._background_vecs) else None
        bg_top = bg.scores.max(axis=1) if bg is not None else np.zeros(0)
        bg_margin = np.asarray([_top_and_margin(r)[1] for r in bg.scores]) if bg is not None else np.zeros(0)

        threshold, method = self._choose_threshold(loo_top[loo_correct], bg_top)
        weights = _fit_platt(
            np.concatenate([loo_top, bg_top]),
            np.concatenate([loo_margin, bg_margin]),
            np.concatenate([loo_correct.astype(np.float64), np.zeros(len(bg_top))]),
        )
        return Calibration(
            threshold=round(float(threshold), 4),
            method=method,
            n_in_scope=len(loo_top),
            n_background=len(bg_top),
            n_background_dropped=n_dropped,
            n_negatives=len(self._negative_vecs),
            loo_accuracy=round(float(loo_correct.mean()), 4),
            expected_false_reject=round(float((loo_top < threshold).mean()), 4),
            expected_background_rejection=round(float((bg_top < threshold).mean()), 4) if len(bg_top) else math.nan,
            confidence_weights=weights,
            loo_score_quantiles=_quantiles(loo_top),
            background_score_quantiles=_quantiles(bg_top),
        )

    def _leave_one_out(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each example, its top score/margin and correctness with that example removed."""
        n = len(self._example_vecs)
        tops, margins, correct = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
        for i in range(n):
            row = self._score(self._example_vecs[i:i + 1], exclude=i).scores[0]
            tops[i], margins[i] = _top_and_margin(row)
            correct[i] = int(np.argmax(row)) == self._example_labels[i]
        return tops, margins, correct

    def _choose_threshold(self, in_scope: np.ndarray, background: np.ndarray) -> tuple[float, str]:
        if len(background) == 0 or len(in_scope) == 0:
            fallback = float(np.quantile(in_scope, 0.05)) if len(in_scope) else 0.0
            return fallback, "5th percentile of leave-one-out in-scope scores (no background data)"
        candidates = np.unique(np.concatenate([in_scope, background]))
        # Youden's J with a cost ratio: accepted in-scope share * cost + rejected background share.
        accept = (in_scope[None, :] >= candidates[:, None]).mean(axis=1)
        reject = (background[None, :] < candidates[:, None]).mean(axis=1)
        objective = self.reject_cost * accept + reject
        best = objective.max()
        # Thresholds within a hair of the best form a band; the band's middle is less
        # sensitive to any single calibration utterance than its edge.
        band = candidates[objective >= best - 1e-9]
        low, high = float(band.min()), float(band.max())
        # The band's upper edge is an in-scope score; step half-way to the next lower score
        # so that utterance itself stays accepted.
        below = candidates[candidates < low]
        low_mid = (low + float(below.max())) / 2 if len(below) else low
        threshold = (low_mid + high) / 2
        method = (
            f"max of {self.reject_cost:g}*in-scope acceptance (leave-one-out, n={len(in_scope)}) + background "
            f"rejection (n={len(background)}); middle of the optimal band [{low_mid:.4f}, {high:.4f}]"
        )
        return threshold, method


def canonical_text(text: str) -> str:
    """The form both examples and caller turns are embedded in.

    Recognisers differ in punctuation and keep hesitations ("um", "er") that
    authors never write in examples; removing both on each side keeps the
    comparison about the words that matter.
    """
    text = _PUNCTUATION.sub(" ", text.lower().replace("\u2019", "'"))
    return " ".join(_FILLERS.sub(" ", text).split())


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.clip(norms, 1e-12, None)).astype(np.float32)


def _max_sim(queries: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    if len(vecs) == 0:
        return np.full(len(queries), -np.inf, dtype=np.float32)
    return (queries @ vecs.T).max(axis=1)


def _top_and_margin(row: np.ndarray) -> tuple[float, float]:
    if len(row) == 1:
        return float(row[0]), float(row[0])
    two = -np.partition(-row, 1)[:2]
    return float(two[0]), float(two[0] - two[1])


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {f"p{q}": round(float(np.quantile(values, q / 100)), 4) for q in (5, 25, 50, 75, 95)}


def _confidence(weights: tuple[float, float, float], top: float, margin: float) -> float:
    a, b, c = weights
    z = a * top + b * margin + c
    return round(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z)))), 4)


def _fit_platt(top: np.ndarray, margin: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Logistic regression of "top intent is right" on (top score, margin), by Newton's method.

    The two classes are weighted equally: the calibration data hold far more
    background than in-scope utterances, but that ratio says nothing about real
    calls, so the fitted confidence assumes even odds a priori. A small L2 penalty
    keeps the weights finite when the data are perfectly separable, which they
    often are with few examples.
    """
    if labels.min(initial=1.0) == labels.max(initial=0.0):
        return 0.0, 0.0, (4.0 if labels.size and labels[0] > 0 else -4.0)
    x = np.column_stack([top, margin, np.ones_like(top)])
    # Platt's target smoothing: never fit to exactly 0 or 1.
    n_pos, n_neg = labels.sum(), (1 - labels).sum()
    y = np.where(labels > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    sample_weight = np.where(labels > 0, 0.5 / max(n_pos, 1.0), 0.5 / max(n_neg, 1.0)) * len(labels)
    w = np.zeros(3)
    penalty = np.diag([1e-2, 1e-2, 0.0])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -60, 60)))
        gradient = x.T @ (sample_weight * (p - y)) + penalty @ w
        hessian = (x * (sample_weight * p * (1 - p))[:, None]).T @ x + penalty + 1e-9 * np.eye(3)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1]), float(w[2])
