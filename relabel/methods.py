"""Baseline suspicion scores computed from the fitted model's probabilities (higher = more suspicious).

For item i with given label y_i and predicted class probabilities p_i (a row of an n × K array):

    loss_i   = −log p_i[y_i]                         (training cross-entropy of the given label, nats)
    margin_i = max_{k ≠ y_i} p_i[k] − p_i[y_i]       (in [−1, 1]; > 0 when another class is preferred)
    random_i ~ Uniform(0, 1), seeded                 (the no-information baseline)

and the registry every part of relabel reads the method and model names from (:data:`METHODS`,
:data:`MODELS`): the CLI's choices and help, the scorer, ``compare`` and the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Method:
    """A way to rank items by suspicion: its name, one line for ``--help`` and the report, and whether the
    scorer computes it from one fit (``confident_learning`` needs k-fold refits: only ``compare`` runs it)."""

    name: str
    description: str
    in_scorer: bool = True


@dataclass(frozen=True)
class Model:
    """A model relabel fits: its name and one line for ``--help``."""

    name: str
    description: str


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("self_influence", "g_iᵀ H⁻¹ g_i (Koh & Liang 2017): how much the model bent to fit the label"),
        Method("loss", "−log p(given label): the usual baseline"),
        Method("margin", "best other class probability − given-label probability"),
        Method("confident_learning", "out-of-fold self-confidence (k-fold refits)", in_scorer=False),
        Method("random", "seeded random order: the no-information baseline"),
    )
}
SCORE_METHODS: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.in_scorer)
COMPARISON_METHODS: tuple[str, ...] = tuple(METHODS)

MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        Model("logistic", "multinomial logistic regression: exact self-influence"),
        Model("mlp", "one-hidden-layer tanh network: damped self-influence, iterative solver"),
        Model("cnn", "small convolutional network for images: damped self-influence, iterative solver"),
    )
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
# θ that deep models take self-influence over (relabel.influence.scope): auto, all parameters, last layer
INFLUENCE_SCOPES = ("auto", "all", "last")


def describe(table: dict[str, Method] | dict[str, Model], names: Sequence[str] | None = None) -> str:
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
