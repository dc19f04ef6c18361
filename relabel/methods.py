"""Baseline suspicion scores computed from the fitted model's probabilities (higher = more suspicious).

For item i with given label y_i and predicted class probabilities p_i (a row of an n × K array):

    loss_i   = −log p_i[y_i]                         (training cross-entropy of the given label, nats)
    margin_i = max_{k ≠ y_i} p_i[k] − p_i[y_i]       (in [−1, 1]; > 0 when another class is preferred)
    random_i ~ Uniform(0, 1), seeded                 (the no-information baseline)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCORE_METHODS = ("self_influence", "loss", "margin", "random")


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


def suspicion_ranks(scores: np.ndarray) -> np.ndarray:
    """Rank 1 = highest score; ties keep input order (stable sort)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def add_rank_columns(frame: pd.DataFrame, methods: tuple[str, ...]) -> pd.DataFrame:
    """Add ``rank_<method>`` (1 = most suspicious) for every method column present."""
    for method in methods:
        frame[f"rank_{method}"] = suspicion_ranks(frame[method].to_numpy())
    return frame
