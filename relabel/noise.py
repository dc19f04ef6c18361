"""Seeded label-noise injection, to measure how well a ranking finds planted label errors.

Three noise models over K classes, each flipping a fraction ``rate`` of the n items (exactly
``round(rate · n)`` items, chosen uniformly without replacement, so every seed plants the same number):

* ``uniform``: a flipped item of class k gets a class drawn uniformly from the K − 1 other classes
  (symmetric noise: T[k, l] = rate / (K − 1) for l ≠ k, in expectation).
* ``pair``: a flipped item of class k gets class (k + 1) mod K (pair / class-conditional noise: every
  class is confused with one fixed neighbour, the harder case for loss-based rankings).
* ``transition``: a flipped item of class k gets class l with probability T[k, l] / Σ_{l'≠k} T[k, l']
  for a given K × K row-stochastic matrix T (the diagonal is ignored: a flip always changes the label).

Returns the noisy labels and a boolean mask of flipped items; the input labels are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from relabel.errors import InputError

NoiseKind = Literal["uniform", "pair", "transition"]
NOISE_KINDS: tuple[str, ...] = ("uniform", "pair", "transition")


@dataclass(frozen=True)
class NoisyLabels:
    """Labels after noise injection.

    Fields: ``labels`` (n,) int64 noisy class indices; ``flipped`` (n,) bool, True where the label was
    changed (``labels[i] != original[i]`` exactly there); ``original`` (n,) int64 the clean labels.
    """

    labels: np.ndarray
    flipped: np.ndarray
    original: np.ndarray

    @property
    def n_flipped(self) -> int:
        return int(self.flipped.sum())


def _check_labels(labels: np.ndarray, n_classes: int | None) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError("labels must be a 1-D array of integer class indices 0..K-1")
    if labels.size and labels.min() < 0:
        raise InputError("labels must be class indices ≥ 0")
    n_classes = int(n_classes if n_classes is not None else (labels.max() + 1 if labels.size else 0))
    if labels.size and labels.max() >= n_classes:
        raise InputError(f"label {labels.max()} is outside 0..{n_classes - 1}")
    if n_classes < 2:
        raise InputError("noise injection needs at least 2 classes")
    return labels.astype(np.int64), n_classes


def pair_transition_matrix(n_classes: int) -> np.ndarray:
    """T for pair noise: T[k, (k + 1) mod K] = 1 (row-stochastic, zero diagonal)."""
    matrix = np.zeros((n_classes, n_classes))
    matrix[np.arange(n_classes), (np.arange(n_classes) + 1) % n_classes] = 1.0
    return matrix


def uniform_transition_matrix(n_classes: int) -> np.ndarray:
    """T for uniform noise: T[k, l] = 1 / (K − 1) for l ≠ k, zero diagonal."""
    matrix = np.full((n_classes, n_classes), 1.0 / (n_classes - 1))
    np.fill_diagonal(matrix, 0.0)
    return matrix


def inject_label_noise(
    labels: np.ndarray,
    rate: float,
    *,
    kind: NoiseKind = "uniform",
    seed: int = 0,
    n_classes: int | None = None,
    transition: np.ndarray | None = None,
) -> NoisyLabels:
    """Flip exactly ``round(rate · n)`` labels, chosen uniformly at random (seeded), by noise ``kind``.

    ``labels``: (n,) integer class indices. ``rate`` ∈ [0, 1]: the fraction of items flipped.
    ``kind``: "uniform", "pair" or "transition" (then ``transition`` is the K × K matrix; its diagonal is
    ignored and each row's off-diagonal part is renormalised; a row with no off-diagonal mass is an error
    if an item of that class is drawn). The same (labels, rate, kind, seed) always gives the same result.
    """
    labels, n_classes = _check_labels(labels, n_classes)
    if not 0.0 <= rate <= 1.0:
        raise InputError(f"noise rate must lie in [0, 1]; got {rate}")
    if kind == "uniform":
        matrix = uniform_transition_matrix(n_classes)
    elif kind == "pair":
        matrix = pair_transition_matrix(n_classes)
    elif kind == "transition":
        if transition is None:
            raise InputError("kind='transition' needs transition=<K × K matrix>")
        matrix = np.array(transition, dtype=np.float64)
        if matrix.shape != (n_classes, n_classes) or (matrix < 0).any() or not np.isfinite(matrix).all():
            raise InputError(
                f"transition must be a finite non-negative {n_classes} × {n_classes} matrix; "
                f"got shape {matrix.shape}"
            )
        np.fill_diagonal(matrix, 0.0)
    else:
        raise InputError(f"unknown noise kind {kind!r}: choose one of {', '.join(NOISE_KINDS)}")

    rng = np.random.default_rng(seed)
    n_to_flip = round(rate * len(labels))
    chosen = rng.choice(len(labels), size=n_to_flip, replace=False) if n_to_flip else np.array([], int)
    noisy = labels.copy()
    for item in np.sort(chosen):
        row = matrix[labels[item]]
        total = row.sum()
        if total <= 0:
            raise InputError(
                f"transition row for class {labels[item]} has no off-diagonal mass: cannot flip item {item}"
            )
        noisy[item] = rng.choice(n_classes, p=row / total)
    flipped = noisy != labels
    return NoisyLabels(labels=noisy, flipped=flipped, original=labels)
