"""Out-of-fold class probabilities: each item predicted by a model that never saw its label.

A model scored on the items it was fitted on has seen every label, wrong ones included; a flexible model
(the CNN, an MLP) fits them, so its in-sample probabilities agree with the labels and any count of
disagreements built on them is too low. Out-of-fold probabilities remove that: the items are split into
``k`` folds (seeded; stratified by label when every class has at least ``k`` items), and the probabilities
of the items in fold f come from the model fitted on the other k − 1 folds.

The model folded here is always the exact L2-regularised multinomial logistic regression of
:mod:`relabel.logistic` (λ = ``l2`` on the mean loss) on the audit's feature rows, flattened: for a
logistic audit this is the audited model itself; for the deep models (mlp, cnn) it is a cheap proxy on the
same inputs (refitting a deep model k times would multiply the audit's time by k). Cost: k logistic fits
on (k − 1)/k of the items, each warm-started from the fit on all the items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from relabel.errors import InputError
from relabel.logistic import LogisticFit, fit_logistic

DEFAULT_FOLDS = 5
#: Image arrays (the CNN's inputs) are average-pooled to at most this side before the logistic proxy: on
#: 784 raw pixels of shifted 28×28 digits the proxy is weak out of fold and the count far too high.
PROXY_IMAGE_SIDE = 8
#: Gradient tolerance of the fold fits: looser than the audit's own fit (probabilities need ~1e-4, not 1e-8).
FOLD_GRADIENT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold probabilities and how they were made.

    probabilities: (n, K) float64, row i from the fit that left item i's fold out.
    folds:         k; seed: the split's seed; model: the model folded, in words.
    """

    probabilities: np.ndarray
    folds: int
    seed: int
    model: str

    def describe(self) -> str:
        """e.g. "5-fold out-of-fold probabilities (logistic regression, seed 0)"."""
        return f"{self.folds}-fold out-of-fold probabilities ({self.model}, seed {self.seed})"


def proxy_features(X: np.ndarray) -> np.ndarray:
    """The rows the folded logistic model sees: ``X`` itself, except (n, C, H, W) image arrays (the CNN's
    inputs), which are average-pooled to at most :data:`PROXY_IMAGE_SIDE` pixels a side (the logistic
    model's own pixel features) and flattened."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 4 or max(X.shape[2:]) <= PROXY_IMAGE_SIDE:
        return X.reshape(len(X), -1)
    import torch

    pooled = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(X), (min(X.shape[2], PROXY_IMAGE_SIDE), min(X.shape[3], PROXY_IMAGE_SIDE))
    )
    return pooled.numpy().reshape(len(X), -1)


def fold_splitter(y: np.ndarray, n_classes: int, folds: int, seed: int) -> KFold | StratifiedKFold:
    """A seeded shuffled k-fold split, stratified by label when every present class has ≥ ``folds`` items."""
    counts = np.bincount(y, minlength=n_classes)
    present = counts[counts > 0]
    if present.min() >= folds:
        return StratifiedKFold(folds, shuffle=True, random_state=seed)
    return KFold(folds, shuffle=True, random_state=seed)


def out_of_fold_probabilities(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    folds: int = DEFAULT_FOLDS,
    l2: float = 1e-3,
    seed: int = 0,
    warm_start: LogisticFit | None = None,
    gradient_tolerance: float = FOLD_GRADIENT_TOLERANCE,
) -> np.ndarray:
    """(n, K) p̂_oof: row i = softmax probabilities of the logistic model (λ = ``l2``) fitted on the folds
    without item i (:func:`fold_splitter`); the same as scikit-learn's ``cross_val_predict(...,
    method="predict_proba")`` with that split and model. ``X``: (n, ...) features (flattened to rows);
    ``y``: (n,) class indices 0..K−1.
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    y = np.asarray(y, dtype=np.int64)
    if not 2 <= folds <= len(y):
        raise InputError(
            f"out-of-fold estimation needs 2 ≤ folds ≤ the number of items ({len(y)}); got {folds}"
        )
    out_of_fold = np.empty((len(y), n_classes))
    for train_rows, held_out_rows in fold_splitter(y, n_classes, folds, seed).split(X, y):
        fold_fit = fit_logistic(
            X[train_rows],
            y[train_rows],
            n_classes,
            l2=l2,
            gradient_tolerance=gradient_tolerance,
            initial_Theta=None if warm_start is None else warm_start.Theta,
        )
        out_of_fold[held_out_rows] = fold_fit.predict_proba(X[held_out_rows])
    return out_of_fold


def out_of_fold(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    folds: int = DEFAULT_FOLDS,
    l2: float = 1e-3,
    seed: int = 0,
    audited_model: str = "logistic",
    warm_start: LogisticFit | None = None,
) -> OutOfFold:
    """:func:`out_of_fold_probabilities` with its description; ``audited_model`` names the audit's model (a
    deep one is said to be proxied by the logistic model; image arrays go through :func:`proxy_features`).
    The fold fits start from ``warm_start`` (the audit's own logistic fit on all items, close to each
    fold's optimum), else from one fit on all items made here."""
    images = np.asarray(X).ndim == 4
    X = proxy_features(X)
    if warm_start is None or images:
        warm_start = fit_logistic(X, y, n_classes, l2=l2, gradient_tolerance=FOLD_GRADIENT_TOLERANCE)
    probabilities = out_of_fold_probabilities(
        X, y, n_classes, folds=folds, l2=l2, seed=seed, warm_start=warm_start
    )
    if audited_model == "logistic":
        model = "logistic regression, the audited model"
    elif images:
        side = f"{PROXY_IMAGE_SIDE}×{PROXY_IMAGE_SIDE}"
        model = f"logistic regression on ≤ {side} pooled pixels, a proxy for the {audited_model}"
    else:
        model = f"logistic regression on the same inputs, a proxy for the {audited_model}"
    return OutOfFold(probabilities, folds, seed, model)
