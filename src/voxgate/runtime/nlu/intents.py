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


@dataclass(frozen=True)
class _Scored:
    """Blended scores of a batch of queries, (m, n_intents), and each intent's best example cosine."""

    scores: np.ndarray
    best_example: np.ndarray


@dataclass(frozen=True)
class _Index:
    """Everything fit() learns. It is replaced as a whole, so a predict() running on
    another thread during a re-fit sees either the old model or the new one."""

    intents: tuple[str, ...]
    example_vecs: np.ndarray
    labels: np.ndarray
    centroids: np.ndarray
    negative_vecs: np.ndarray
    background_vecs: np.ndarray
    top_k: int
    centroid_weight: float

    def score(self, queries: np.ndarray, exclude: int | None = None) -> _Scored:
        """Blended intent scores; ``exclude`` leaves one example out (for calibration)."""
        sims = queries @ self.example_vecs.T
        keep = np.ones(len(self.labels), dtype=bool)
        centroids = self.centroids
        if exclude is not None:
            keep[exclude] = False
            centroids = self._centroids_without(exclude)
        centroid_sims = queries @ centroids.T
        top_mean = np.empty((len(queries), len(self.intents)), dtype=np.float32)
        best = np.empty_like(top_mean)
        for k in range(len(self.intents)):
            own = sims[:, (self.labels == k) & keep]
            if own.shape[1] == 0:  # an intent whose only example was left out
                top_mean[:, k] = best[:, k] = centroid_sims[:, k]
                continue
            kk = min(self.top_k, own.shape[1])
            top = -np.partition(-own, kk - 1, axis=1)[:, :kk]
            top_mean[:, k] = top.mean(axis=1)
            best[:, k] = top.max(axis=1)
        w = self.centroid_weight
        return _Scored(w * centroid_sims + (1.0 - w) * top_mean, best)

    def _centroids_without(self, index: int) -> np.ndarray:
        label = self.labels[index]
        members = self.labels == label
        members[index] = False
        centroids = self.centroids.copy()
        if members.any():
            centroids[label] = _normalise(self.example_vecs[members].mean(axis=0, keepdims=True))[0]
        return centroids


def _decide(
    scored: _Scored, threshold: float, negative_best: np.ndarray, background_best: np.ndarray
) -> list[tuple[int, str]]:
    """Top intent index and the reason it is accepted or rejected, per query.

    A query whose nearest negative (or generic background utterance) is closer than
    the best example of its top intent is rejected: it looks more like something the
    agent must refuse than like anything it handles.
    """
    out: list[tuple[int, str]] = []
    for i, row in enumerate(scored.scores):
        top = int(np.argmax(row))
        if row[top] < threshold:
            out.append((top, "below_threshold"))
        elif negative_best[i] > scored.best_example[i, top]:
            out.append((top, "negative"))
        elif background_best[i] > scored.best_example[i, top]:
            out.append((top, "background"))
        else:
            out.append((top, "in_scope"))
    return out


class IntentClassifier:
    """Nearest-centroid + top-k example classifier with a calibrated out-of-scope threshold.

    ``fit`` once, then ``predict`` from any number of threads.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        top_k: int = 3,
        centroid_weight: float = 0.5,
        background: Sequence[str] | None = None,
        reject_cost: float = 1.0,
    ) -> None:
        """``background`` replaces the shipped out-of-domain list; ``reject_cost`` weighs a
        wrongly rejected in-scope caller against an accepted out-of-scope one when choosing
        the threshold (>1 rejects less readily)."""
        self._embedder = embedder
        self.top_k = top_k
        self.centroid_weight = centroid_weight
        self.reject_cost = reject_cost
        self._background_texts = list(background) if background is not None else None
        self._fitted: tuple[_Index, Calibration] | None = None

    # --- public API -----------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The sentence embedder (the default one, made on first use, unless one was given)."""
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    @property
    def fitted(self) -> bool:
        """Whether `fit` has been called."""
        return self._fitted is not None

    @property
    def intents(self) -> tuple[str, ...]:
        """The intent names the classifier chooses from."""
        return self._model()[0].intents

    @property
    def calibration(self) -> Calibration:
        """The out-of-scope calibration learnt by `fit`."""
        return self._model()[1]

    @property
    def threshold(self) -> float:
        """The calibrated confidence below which an utterance is out of scope."""
        return self.calibration.threshold

    def fit(self, examples: Mapping[str, Sequence[str]], negatives: Sequence[str] | None = None) -> None:
        """Learn the intents from example utterances and calibrate the out-of-scope threshold.

        ``negatives`` are agent-specific utterances that must be refused (e.g.
        "cancel my contract" for an agent that cannot do cancellations).
        """
        cleaned = {name: _canonical_all(texts) for name, texts in examples.items()}
        cleaned = {name: texts for name, texts in cleaned.items() if texts}
        if not cleaned:
            raise ValueError("fit() needs at least one intent with at least one example")
        intents = tuple(cleaned)
        example_vecs = self.embedder.embed([t for name in intents for t in cleaned[name]], keep=True)
        labels = np.asarray([k for k, name in enumerate(intents) for _ in cleaned[name]], dtype=np.int64)
        centroids = _normalise(np.stack([example_vecs[labels == k].mean(axis=0) for k in range(len(intents))]))

        background = self._background_texts if self._background_texts is not None else load_out_of_domain()
        background_vecs = self._embed(_canonical_all(background))
        overlap = (background_vecs @ example_vecs.T).max(axis=1) if len(background_vecs) else np.zeros(0)
        index = _Index(
            intents=intents,
            example_vecs=example_vecs,
            labels=labels,
            centroids=centroids,
            negative_vecs=self._embed(_canonical_all(negatives or [])),
            background_vecs=background_vecs[overlap < BACKGROUND_OVERLAP],
            top_k=self.top_k,
            centroid_weight=self.centroid_weight,
        )
        calibration = _calibrate(index, self.reject_cost, n_dropped=int((overlap >= BACKGROUND_OVERLAP).sum()))
        self._fitted = (index, calibration)

    def predict(self, text: str) -> IntentPrediction:
        """Classify one utterance."""
        model = self._model()
        canonical = canonical_text(text or "")
        if not canonical:
            return _empty_prediction(model[0])
        return _predictions(model, self.embedder.embed_one(canonical)[np.newaxis, :])[0]

    def predict_many(self, texts: Sequence[str]) -> list[IntentPrediction]:
        """Classify several utterances in one embedding batch."""
        model = self._model()
        canonical = [canonical_text(t or "") for t in texts]
        live = [i for i, t in enumerate(canonical) if t]
        results = [_empty_prediction(model[0])] * len(texts)
        if live:
            predictions = _predictions(model, self.embedder.embed([canonical[i] for i in live]))
            for i, prediction in zip(live, predictions):
                results[i] = prediction
        return results

    # --- helpers ----------------------------------------------------------------------

    def _model(self) -> tuple[_Index, Calibration]:
        fitted = self._fitted
        if fitted is None:
            raise RuntimeError("IntentClassifier.fit() has not been called")
        return fitted

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        # the agent's own texts (and the packaged background): their vectors may be kept on disk
        return self.embedder.embed(list(texts), keep=True) if texts else np.zeros((0, self.embedder.dims), np.float32)


def _predictions(model: tuple[_Index, Calibration], queries: np.ndarray) -> list[IntentPrediction]:
    index, calibration = model
    scored = index.score(queries)
    decisions = _decide(
        scored, calibration.threshold, _max_sim(queries, index.negative_vecs), _max_sim(queries, index.background_vecs)
    )
    results: list[IntentPrediction] = []
    for row, (top, reason) in zip(scored.scores, decisions):
        top_score, margin = _top_and_margin(row)
        accepted = reason == "in_scope"
        results.append(
            IntentPrediction(
                intent=index.intents[top] if accepted else None,
                confidence=_confidence(calibration.confidence_weights, top_score, margin),
                scores={name: round(float(s), 4) for name, s in zip(index.intents, row)},
                out_of_scope=not accepted,
                margin=round(margin, 4),
                nearest=index.intents[top],
                reason=reason,
            )
        )
    return results


def _empty_prediction(index: _Index) -> IntentPrediction:
    return IntentPrediction(None, 0.0, {name: 0.0 for name in index.intents}, True, 0.0, None, "empty")


# --- calibration ----------------------------------------------------------------------


def _calibrate(index: _Index, reject_cost: float, *, n_dropped: int) -> Calibration:
    loo_scored, loo_correct, loo_negative, loo_background = _leave_one_out(index)
    loo_top = loo_scored.scores.max(axis=1)
    loo_margin = np.asarray([_top_and_margin(r)[1] for r in loo_scored.scores])
    bg = index.background_vecs
    bg_scores = index.score(bg).scores if len(bg) else np.zeros((0, len(index.intents)))
    bg_top = bg_scores.max(axis=1) if len(bg) else np.zeros(0)
    bg_margin = np.asarray([_top_and_margin(r)[1] for r in bg_scores])

    threshold, method = _choose_threshold(loo_top[loo_correct], bg_top, reject_cost)
    # What the full decision rule (threshold, negatives, background) would have done with
    # each left-out example: the expected false-reject rate on new in-scope phrasings.
    loo_decisions = _decide(loo_scored, threshold, loo_negative, loo_background)
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
        n_negatives=len(index.negative_vecs),
        loo_accuracy=round(float(loo_correct.mean()), 4),
        expected_false_reject=round(float(np.mean([r != "in_scope" for _, r in loo_decisions])), 4),
        expected_background_rejection=round(float((bg_top < threshold).mean()), 4) if len(bg_top) else math.nan,
        confidence_weights=weights,
        loo_score_quantiles=_quantiles(loo_top),
        background_score_quantiles=_quantiles(bg_top),
    )


def _leave_one_out(index: _Index) -> tuple[_Scored, np.ndarray, np.ndarray, np.ndarray]:
    """Each example scored with itself removed: scores, correctness, nearest negative and background."""
    rows = [index.score(index.example_vecs[i : i + 1], exclude=i) for i in range(len(index.labels))]
    scored = _Scored(np.vstack([r.scores for r in rows]), np.vstack([r.best_example for r in rows]))
    correct = scored.scores.argmax(axis=1) == index.labels
    negative = _max_sim(index.example_vecs, index.negative_vecs)
    background = _max_sim(index.example_vecs, index.background_vecs)
    return scored, correct, negative, background


def _choose_threshold(in_scope: np.ndarray, background: np.ndarray, reject_cost: float) -> tuple[float, str]:
    """Maximise reject_cost * in-scope acceptance + background rejection (a weighted Youden's J).

    Every threshold between two neighbouring calibration scores performs the same on
    the calibration data; of the optimal stretches, take the widest and its middle, so
    no single calibration utterance sits right on the boundary.
    """
    if len(in_scope) == 0:
        return 0.0, "no correctly classified leave-one-out example; threshold 0"
    if len(background) == 0:
        return float(np.quantile(in_scope, 0.05)), "5th percentile of leave-one-out in-scope scores (no background)"
    candidates = np.unique(np.concatenate([in_scope, background]))
    accept = (in_scope[None, :] >= candidates[:, None]).mean(axis=1)
    reject = (background[None, :] < candidates[:, None]).mean(axis=1)
    objective = reject_cost * accept + reject
    optimal = np.flatnonzero(objective >= objective.max() - 1e-9)
    # Threshold t in (candidates[j-1], candidates[j]] scores objective[j]; runs of
    # consecutive optimal j therefore form one optimal interval.
    runs = np.split(optimal, np.flatnonzero(np.diff(optimal) > 1) + 1)

    def interval(run: np.ndarray) -> tuple[float, float]:
        lower = candidates[run[0] - 1] if run[0] > 0 else candidates[run[0]] - 1e-3
        return float(lower), float(candidates[run[-1]])

    low, high = max((interval(r) for r in runs), key=lambda iv: iv[1] - iv[0])
    method = (
        f"max of {reject_cost:g} x in-scope acceptance (leave-one-out, n={len(in_scope)}) + background "
        f"rejection (n={len(background)}); middle of the optimal interval ({low:.4f}, {high:.4f}]"
    )
    return (low + high) / 2, method


def _canonical_all(texts: Sequence[str]) -> list[str]:
    return [c for c in (canonical_text(t) for t in texts if t) if c]


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
    unit: np.ndarray = (matrix / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit


def _max_sim(queries: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    if len(vecs) == 0:
        return np.full(len(queries), -np.inf, dtype=np.float32)
    best: np.ndarray = (queries @ vecs.T).max(axis=1)
    return best


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
