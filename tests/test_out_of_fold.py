"""Tests of relabel.out_of_fold and of the error estimate built on it (relabel.triage)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from relabel.errors import InputError
from relabel.out_of_fold import fold_splitter, out_of_fold, out_of_fold_probabilities
from relabel.triage import IN_SAMPLE, assign_tiers, estimate_label_errors, wilson_interval


def blobs(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.array([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 1.0]])
    return centres[y] + rng.normal(size=(n, 4)), y


def test_out_of_fold_probabilities_equal_scikit_learn_fits_on_the_same_folds() -> None:
    """Reference: scikit-learn's multinomial LogisticRegression on [X, 1] without its own intercept, C =
    1/(n_train·λ) (its C·Σ loss + ½‖w‖² is n_train·C times relabel's mean loss + ½λ‖θ‖²), one per fold."""
    from sklearn.linear_model import LogisticRegression

    X, y = blobs()
    l2 = 1e-2
    ours = out_of_fold_probabilities(X, y, 3, folds=5, l2=l2, seed=3)
    X_tilde = np.hstack([X, np.ones((len(X), 1))])
    reference = np.empty_like(ours)
    for train, held_out in fold_splitter(y, 3, 5, 3).split(X, y):
        model = LogisticRegression(C=1 / (len(train) * l2), fit_intercept=False, tol=1e-12, max_iter=10_000)
        reference[held_out] = model.fit(X_tilde[train], y[train]).predict_proba(X_tilde[held_out])
    # both optimisers stop at a gradient norm ~1e-5..1e-8: probabilities agree to ~1e-5
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, rtol=1e-12)


def test_folds_are_seeded_and_stratified_and_bad_folds_refused() -> None:
    X, y = blobs()
    first = out_of_fold_probabilities(X, y, 3, folds=4, seed=7)
    np.testing.assert_array_equal(first, out_of_fold_probabilities(X, y, 3, folds=4, seed=7))
    assert not np.array_equal(first, out_of_fold_probabilities(X, y, 3, folds=4, seed=8))
    for _, held_out in fold_splitter(y, 3, 5, 0).split(X, y):
        assert set(np.bincount(y[held_out], minlength=3)) == {10}  # 50 per class → 10 per fold each
    with pytest.raises(InputError, match="2 ≤ folds"):
        out_of_fold_probabilities(X, y, 3, folds=1)
    described = out_of_fold(X, y, 3, folds=3, audited_model="cnn").describe()
    assert described == (
        "3-fold out-of-fold probabilities (logistic regression on the same inputs, a proxy for the cnn, "
        "seed 0)"
    )


def test_calibrated_confident_joint_by_hand() -> None:
    """Six items, two classes. Thresholds: t_0 = mean(0.9, 0.8, 0.3) = 2/3, t_1 = mean(0.6, 0.7, 0.45) =
    0.5833. Item 2 (labeled 0, p = (0.3, 0.7)) → cell (0, 1); item 5 (labeled 1, p = (0.55, 0.45)) clears no
    threshold → no cell. C = [[2, 1], [0, 2]]; row 1 has 2 counted of 3 labeled: Q = [[2, 1], [0, 3]]; the
    estimate is 1 + 0 = 1."""
    p1 = np.array([0.1, 0.2, 0.7, 0.6, 0.7, 0.45])
    probabilities = np.column_stack([1 - p1, p1])
    given = np.array([0, 0, 0, 1, 1, 1])
    estimate = estimate_label_errors(given, probabilities, ["a", "b"])
    assert estimate.total == 1
    np.testing.assert_array_equal(estimate.is_error, [False, False, True, False, False, False])
    np.testing.assert_array_equal(estimate.counted_as, [-1, -1, 1, -1, -1, -1])
    np.testing.assert_allclose(estimate.per_class["threshold"], [2 / 3, 1.75 / 3], rtol=1e-12)
    assert list(estimate.per_class["estimated_errors"]) == [1, 0]
    assert estimate.probabilities == IN_SAMPLE and "in-sample" in estimate.describe()
    facts = estimate.as_dict()
    assert facts["total"] == 1 and facts["interval_95"] == list(estimate.interval)


def test_calibration_scales_each_row_to_its_label_count() -> None:
    """Class 0: 4 labeled, 2 counted (1 on the diagonal, 1 off) → row scaled ×2 → 2 estimated errors."""
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.4, 0.6], [0.1, 0.9], [0.1, 0.9]])
    given = np.array([0, 0, 0, 0, 1, 1])
    # t_0 = mean(0.9, 0.2, 0.4, 0.4) = 0.475, t_1 = 0.9: item 0 → (0, 0), items 1-3 clear nothing
    estimate = estimate_label_errors(given, probabilities, ["a", "b"])
    joint_rows = estimate.per_class.set_index("class")["estimated_errors"].to_dict()
    assert joint_rows == {"a": 0, "b": 0}  # only item 0 (diagonal) is counted in row a
    probabilities[1] = [0.05, 0.95]  # t_0 = 0.4375: item 1 clears t_1 = 0.9 → cell (0, 1); 2, 3 still none
    estimate = estimate_label_errors(given, probabilities, ["a", "b"])
    assert estimate.per_class.set_index("class").loc["a", "estimated_errors"] == 2  # C row a = [1, 1] → ×2
    assert estimate.total == 2 and int(estimate.is_error.sum()) == 1


def test_wilson_interval_matches_the_textbook_values() -> None:
    assert wilson_interval(0, 10) == (0, 3)  # 0/10: [0, 0.2775]
    low, high = wilson_interval(180, 1797)  # p̂ = 0.1002: [0.0870, 0.1150] (Wilson, z = 1.96)
    assert (low, high) == (156, 207)
    assert wilson_interval(5, 0) == (0, 0)


def test_tiers_use_the_out_of_fold_preferred_label_when_given() -> None:
    ranking = pd.DataFrame(
        {
            "task_id": [1, 2],
            "current_label": ["a", "a"],
            "suggested_label": ["a", "a"],  # a memorising model agrees with every label
            "flagged": [True, True],
        }
    )
    supported = {1: True, 2: True}
    in_sample = assign_tiers(ranking, supported_only=supported, gaps={1: 0.9, 2: 0.9})
    assert list(in_sample["tier"]) == ["review", "review"]
    honest = assign_tiers(
        ranking, supported_only=supported, gaps={1: 0.9, 2: 0.9}, preferred_labels={1: "b", 2: "a"}
    )
    assert list(honest["tier"]) == ["likely error", "review"]


def test_image_arrays_are_pooled_for_the_proxy_and_rows_pass_through() -> None:
    from relabel.out_of_fold import proxy_features

    rows = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(proxy_features(rows), rows)
    small = np.random.default_rng(0).random((2, 1, 8, 8))
    np.testing.assert_array_equal(proxy_features(small), small.reshape(2, 64))
    images = np.ones((2, 1, 28, 28)) * np.array([0.25, 0.75])[:, None, None, None]
    pooled = proxy_features(images)
    assert pooled.shape == (2, 64)
    np.testing.assert_allclose(pooled, np.repeat([[0.25], [0.75]], 64, axis=1), rtol=1e-12)
    X, y = blobs(60)
    described = out_of_fold(np.repeat(X[:, None, :2, None], 10, axis=3), y, 3, folds=3, audited_model="cnn")
    assert "pooled pixels, a proxy for the cnn" in described.describe()
