"""Baseline suspicion scores computed from the fitted model's probabilities (higher = more suspicious).

For item i with given label y_i and predicted class probabilities p_i (a row of an n × K array):

    loss_i   = −log p_i[y_i]                         (training cross-entropy of the given label, nats)
    margin_i = max_{k ≠ y_i} p_i[k] − p_i[y_i]       (in [−1, 1]; > 0 when another class is preferred)
    random_i ~ Uniform(0, 1), seeded                 (the no-information baseline)

and the registry every part of relabel reads the method names from (:data:`METHODS`): the CLI's choices
and help, the scorer, ``compare`` and the report. Each entry scores: ``Method.score(scorer)`` is its column
for a fitted :class:`relabel.scorer.SuspicionScorer`. The models' registry is :mod:`relabel.models`
(:data:`MODELS` here is the same table).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from relabel.influence.scope import SCOPES
from relabel.models import MODEL_KINDS


@dataclass(frozen=True)
class Method:
    """A way to rank items by suspicion: its name, one line for ``--help`` and the report, and ``score``:
    the fitted scorer → one score per item (higher = more suspicious). Methods without ``score`` need more
    than one fit (``confident_learning``: k-fold refits): only ``compare`` runs them."""

    name: str
    description: str
    score: Callable[[Any], np.ndarray] | None = None

    @property
    def in_scorer(self) -> bool:
        """Whether :class:`relabel.scorer.SuspicionScorer` computes it from its one fit."""
        return self.score is not None


def _self_influence(scorer: Any) -> np.ndarray:
    return scorer.self_influence()


def _loss(scorer: Any) -> np.ndarray:
    return cross_entropy_loss(scorer.probabilities, scorer.y)


def _margin(scorer: Any) -> np.ndarray:
    return probability_margin(scorer.probabilities, scorer.y)


def _random(scorer: Any) -> np.ndarray:
    return random_scores(len(scorer.y), scorer.seed)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "self_influence",
            "g_iᵀ H⁻¹ g_i (Koh & Liang 2017): how much the model bent to fit the label",
            _self_influence,
        ),
        Method("loss", "−log p(given label): the usual baseline", _loss),
        Method("margin", "best other class probability − given-label probability", _margin),
        Method("confident_learning", "out-of-fold self-confidence (k-fold refits)"),
        Method("random", "seeded random order: the no-information baseline", _random),
    )
}
SCORE_METHODS: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.in_scorer)
COMPARISON_METHODS: tuple[str, ...] = tuple(METHODS)

MODELS = MODEL_KINDS  # the model registry (relabel.models), by name
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_KINDS)  # the kinds registered in relabel/models/__init__.py
# θ that deep models take self-influence over (relabel.influence.scope): auto, all parameters, last layer
INFLUENCE_SCOPES = SCOPES


def describe(table: Mapping[str, Any], names: Sequence[str] | None = None) -> str:
    """``name: description`` lines of a registry (all entries, or ``names``), for ``--help`` texts."""
    return "; ".join(f"{name}: {table[name].description}" for name in (names or table))


def cross_entropy_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """loss_i = −log p_i[y_i], clipped at −log(1e-300) so a zero probability stays finite."""
    given = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(given, 1e-300, None))


def probability_margin(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """margin_i = max_{k≠y_i} p_i[k] − p_i[y_i]."""
    rows = np.arange(len(labels))
    given = probabilities[rows, labels]
    others = probabilities.copy()
    others[rows, labels] = -np.inf
    return others.max(axis=1) - given


def random_scores(n_items: int, seed: int) -> np.ndarray:
    """Seeded Uniform(0, 1) scores: the ranking a reviewer gets by checking items in random order."""
    return np.random.default_rng(seed).random(n_items)
