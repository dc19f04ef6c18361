"""``model="auto"``: pick the model (and its features) for a project by measured out-of-fold quality.

Candidates by data kind, in order of preference (the first is convex, with exact self-influence):

- tabular: logistic on robust z-scores (the only candidate: nothing is measured);
- text:    logistic on the text features (sentence embeddings, else TF-IDF), mlp on the same features;
- images:  logistic on pixels (8×8 grey), cnn on pixels (28×28 grey).

Each candidate is scored by k-fold cross-validation (``folds`` = 3, stratified, shuffled with the audit's
seed): it is fitted on k−1 folds and predicts the held-out one, so every item gets an out-of-fold
probability vector p̃_i. Quality is the out-of-fold log-loss L = −(1/n) Σ_i log p̃_i[y_i] (nats, lower is
better; p̃ clipped at 1e-15) with the accuracy beside it. Both are measured against the given labels,
noise included: a model that fits the clean structure better has the lower L on noisy labels too.

Choice: the candidate with the lowest L, except that a later (non-convex) candidate must beat the first by
more than ``MARGIN`` (5 %) of its L: a tie keeps the convex model, whose self-influence is exact.

Below ``MIN_ITEMS`` (200) labeled items nothing is measured and the first candidate is kept: a k-fold
log-loss on fewer items is too noisy to trade exact self-influence for.

Time budget (``budget_seconds``, default 300 s, the ``auto_budget_seconds`` setting): candidates run in
order; after a candidate's first fold, the remaining folds are projected at that fold's time, and a
candidate whose projection would pass the budget is not finished (nor are the ones after it once the
budget is spent). Only finished candidates are compared; the first is always finished.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from relabel.dataset import LabeledDataset
from relabel.errors import RelabelError

AUTO = "auto"
FOLDS = 3
MARGIN = 0.05
MIN_ITEMS = 200
DEFAULT_BUDGET_SECONDS = 300.0
AUTO_HELP = (
    "pick per project by k-fold out-of-fold log-loss among the candidates for its data kind (tabular: "
    "logistic; text: logistic, mlp; images: logistic on pixels, cnn), keeping logistic (exact "
    "self-influence) unless another is over 5% better; the choice and why are printed"
)


@dataclass(frozen=True)
class Candidate:
    """A model of the registry on one feature set ("tabular", "text", "pixels")."""

    model: str
    features: str

    @property
    def label(self) -> str:
        return f"{self.model} on {self.features}"


@dataclass
class CandidateScore:
    """One candidate's out-of-fold log-loss (nats) and accuracy, the seconds it took, and why it was not
    finished (None when it was)."""

    model: str
    features: str
    log_loss: float = math.nan
    accuracy: float = math.nan
    seconds: float = 0.0
    skipped: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model} on {self.features}"

    def describe(self) -> str:
        if self.skipped is not None:
            return f"{self.label}: not measured ({self.skipped})"
        return f"{self.label} {self.log_loss:.3f} (accuracy {self.accuracy:.1%}, {self.seconds:.0f} s)"


@dataclass
class ModelChoice:
    """What ``auto`` chose (``model``, on ``features``), why, and every candidate's measurement."""

    model: str
    features: str
    reason: str
    folds: int
    budget_seconds: float
    seconds: float
    candidates: list[CandidateScore] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the summary and the report."""
        measured = "; ".join(score.describe() for score in self.candidates)
        return f"model auto → {self.model} on {self.features}: {self.reason}" + (
            f" [out-of-fold log-loss, {self.folds}-fold: {measured}]" if len(self.candidates) > 1 else ""
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN → None)."""
        facts = asdict(self)
        for score in facts["candidates"]:
            for key in ("log_loss", "accuracy"):
                score[key] = None if math.isnan(score[key]) else round(float(score[key]), 6)
            score["seconds"] = round(float(score["seconds"]), 3)
        facts["seconds"] = round(float(facts["seconds"]), 3)
        return facts


#: Candidates per data kind, in order of preference; "text" stands for the resolved text features.
CANDIDATES: dict[str, tuple[Candidate, ...]] = {
    "tabular": (Candidate("logistic", "tabular"),),
    "text": (Candidate("logistic", "text"), Candidate("mlp", "text")),
    "image": (Candidate("logistic", "pixels"), Candidate("cnn", "pixels")),
}


def candidates_for(dataset: LabeledDataset, text_features: str = "auto") -> list[Candidate]:
    """The candidates for the dataset's kind, in order of preference (module docstring); for text, on the
    features ``text_features`` resolves to (embeddings, else TF-IDF)."""
    candidates = list(CANDIDATES.get(dataset.kind, CANDIDATES["tabular"]))
    if dataset.kind == "text":
        from relabel.featurizers import resolve_text_features

        features, _ = resolve_text_features(text_features)
        candidates = [
            Candidate(c.model, features if c.features == "text" else c.features) for c in candidates
        ]
    return candidates


def choose_model(
    dataset: LabeledDataset,
    settings: Any,
    *,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    folds: int = FOLDS,
    progress: bool = False,
) -> ModelChoice:
    """Measure the candidates for ``dataset`` and pick one (module docstring). ``settings``: the audit's
    :class:`~relabel.settings.AuditSettings` (l2, seed, image_size, features, device)."""
    started = time.perf_counter()
    candidates = candidates_for(dataset, settings.features)
    if len(candidates) == 1 or len(dataset) < MIN_ITEMS:
        first = candidates[0]
        reason = (
            f"the only candidate for {dataset.kind} data"
            if len(candidates) == 1
            else f"{len(dataset)} items, fewer than the {MIN_ITEMS} a k-fold comparison needs"
        )
        score = CandidateScore(first.model, first.features, skipped="not compared")
        return ModelChoice(first.model, first.features, reason, 0, budget_seconds, 0.0, [score])
    y, n_classes = _class_indices(dataset)
    splits = _folds(y, folds, settings.seed)
    scores: list[CandidateScore] = []
    features: dict[tuple[str, str], tuple[np.ndarray, Any]] = {}
    for position, candidate in enumerate(candidates):
        remaining = budget_seconds - (time.perf_counter() - started)
        if position == 0:
            remaining = math.inf  # the first (convex, cheap) candidate is always measured
        elif remaining <= 0:
            scores.append(CandidateScore(candidate.model, candidate.features, skipped="time budget spent"))
            continue
        measuring = time.perf_counter()
        X, image_shape = _features(candidate, dataset, settings, features)
        score = _measure(candidate, X, image_shape, y, n_classes, splits, settings, remaining)
        score.seconds = time.perf_counter() - measuring
        scores.append(score)
    return pick_candidate(scores, folds, budget_seconds, time.perf_counter() - started)


def _class_indices(dataset: LabeledDataset) -> tuple[np.ndarray, int]:
    lookup = {label: index for index, label in enumerate(dataset.classes)}
    return np.array([lookup[label] for label in dataset.labels], dtype=np.int64), len(dataset.classes)


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, shuffled k-fold splits (train rows, held-out rows), seeded."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer items than folds: still split
        return list(splitter.split(np.zeros(len(y)), y))


def _features(
    candidate: Candidate,
    dataset: LabeledDataset,
    settings: Any,
    cache: dict[tuple[str, str], tuple[np.ndarray, Any]],
) -> tuple[np.ndarray, Any]:
    """The candidate's feature matrix (or images), computed once per (inputs, feature set)."""
    from relabel.featurizers import featurize
    from relabel.models import model_kind

    key = (model_kind(candidate.model).inputs, candidate.features)
    if key not in cache:
        text = candidate.features if dataset.kind in ("text", "image") else "auto"
        cache[key] = featurize(
            dataset, candidate.model, settings.image_size, features=text, device=settings.device
        )
    return cache[key]


def _measure(
    candidate: Candidate,
    X: np.ndarray,
    image_shape: Any,
    y: np.ndarray,
    n_classes: int,
    splits: list[tuple[np.ndarray, np.ndarray]],
    settings: Any,
    budget: float,
) -> CandidateScore:
    """Out-of-fold log-loss and accuracy of one candidate, or why it was not finished (its folds are not
    all run when the first one projects past ``budget`` seconds)."""
    from relabel.influence.settings import InfluenceSettings
    from relabel.models import ModelSettings, model_kind

    started = time.perf_counter()
    score = CandidateScore(candidate.model, candidate.features)
    kind = model_kind(candidate.model)
    model_settings = ModelSettings(
        l2=settings.l2,
        seed=settings.seed,
        device=settings.device,
        image_shape=image_shape,
        max_training_seconds=min(600.0, budget),  # a network that cannot fit in the budget is not finished
    )
    influence = InfluenceSettings(seed=settings.seed, influence_parameters="last")
    held_out = np.zeros((len(y), n_classes))
    for fold, (train, test) in enumerate(splits):
        try:
            fitted = kind.fit(X[train], y[train], n_classes, model_settings, influence)
        except RelabelError as error:
            score.skipped = f"fold {fold + 1} did not fit: {error}"
            break
        held_out[test] = kind.predict_proba(fitted, X[test], model_settings)
        spent = time.perf_counter() - started
        if fold == 0 and spent * len(splits) > budget:
            score.skipped = (
                f"{len(splits)} folds estimated at {spent * len(splits):.0f} s > {budget:.0f} s left"
            )
            break
    if score.skipped is None:
        given = np.clip(held_out[np.arange(len(y)), y], 1e-15, None)
        score.log_loss = float(-np.log(given).mean())
        score.accuracy = float((held_out.argmax(axis=1) == y).mean())
    return score


def pick_candidate(scores: list[CandidateScore], folds: int, budget: float, seconds: float) -> ModelChoice:
    """The choice among measured ``scores`` (first = the convex candidate): the lowest log-loss, a later
    candidate only when more than ``MARGIN`` below the first's; skipped candidates are not eligible."""
    first = scores[0]
    finished = [score for score in scores if score.skipped is None]
    if not finished:
        return ModelChoice(
            first.model, first.features, "no candidate could be measured", folds, budget, seconds, scores
        )
    best = min(finished, key=lambda score: score.log_loss)
    if best is first or first.skipped is not None:
        reason = f"lowest out-of-fold log-loss ({best.log_loss:.3f} nats)"
        if len(finished) == 1 and best is first:
            reason = "the only candidate measured within the time budget"
    elif best.log_loss < (1 - MARGIN) * first.log_loss:
        reason = (
            f"out-of-fold log-loss {best.log_loss:.3f} vs {first.log_loss:.3f} for {first.label} "
            f"(more than {MARGIN:.0%} lower)"
        )
    else:
        reason = (
            f"{best.label} is within {MARGIN:.0%} of {first.label}'s out-of-fold log-loss "
            f"({best.log_loss:.3f} vs {first.log_loss:.3f}): keeping the convex model (exact self-influence)"
        )
        best = first
    if best is first and reason.startswith("lowest"):
        reason += ", with exact self-influence" if best.model == "logistic" else ""
    return ModelChoice(best.model, best.features, reason, folds, budget, seconds, scores)


def resolve_model(model: str, dataset: LabeledDataset, options: Any) -> tuple[str, ModelChoice | None]:
    """``model`` itself, or for ``"auto"`` what :func:`choose_model` picks for ``dataset`` with the settings
    ``options`` carries (an argparse namespace of ``relabel rank`` / ``explain``: l2, seed, image_size,
    features, device; missing ones take the audit's defaults); returns (model name, the choice or None)."""
    if model != AUTO:
        return model, None
    from types import SimpleNamespace

    features = getattr(options, "features", "auto") or "auto"
    settings = SimpleNamespace(
        l2=getattr(options, "l2", 1e-3),
        seed=getattr(options, "seed", 0),
        image_size=getattr(options, "image_size", None),
        features="auto" if "," in features else features,
        device=getattr(options, "device", "cpu"),
    )
    budget = getattr(options, "auto_budget_seconds", DEFAULT_BUDGET_SECONDS)
    choice = choose_model(dataset, settings, budget_seconds=budget)
    return choice.model, choice
