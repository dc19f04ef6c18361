"""Triage: tiers of the flagged items, "supported only by flagged items", and the label-error estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from relabel.dataset import LabeledDataset
from relabel.scorer import SuspicionScorer
from relabel.selection import ranking_table
from relabel.triage import (
    AMBIGUOUS,
    LIKELY_ERROR,
    REVIEW,
    TIERS,
    assign_tiers,
    estimate_label_errors,
    supported_only_by_flagged,
    top_two_gap,
    triage_audit,
)


def explanation(supporters: list[int], opposers: list[int] = ()) -> pd.DataFrame:
    rows = [("supports", j, 1.0 / (k + 1)) for k, j in enumerate(supporters)]
    rows += [("opposes", j, -1.0 / (k + 1)) for k, j in enumerate(opposers)]
    return pd.DataFrame(rows, columns=["role", "id", "influence"])


def test_supported_only_by_flagged_checks_the_top_supporters_only() -> None:
    explanations = {
        1: explanation([2, 3, 4]),  # all flagged
        2: explanation([1, 3, 99]),  # one unflagged supporter
        3: explanation([1, 2, 4, 99]),  # the 4th (unflagged) is beyond top=3
        4: explanation([], [1, 2]),  # no supporter at all: not "supported only by flagged"
    }
    answer = supported_only_by_flagged(explanations, flagged_ids=[np.int64(1), 2, 3, 4], top=3)
    assert answer == {1: True, 2: False, 3: True, 4: False}
    assert supported_only_by_flagged(explanations, [1, 2, 3, 4], top=4)[3] is False


def test_top_two_gap() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.45, 0.1, 0.45], [0.1, 0.5, 0.4]])
    np.testing.assert_allclose(top_two_gap(probabilities), [0.5, 0.0, 0.1])


def ranking(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["task_id", "rank", "current_label", "suggested_label", "margin", "flagged"]
    )


def test_tiers_follow_their_definitions_in_order() -> None:
    table = ranking(
        [
            (10, 1, "a", "b", 0.6, True),  # disagrees + supported only by flagged → likely error
            (11, 2, "a", "b", 0.05, True),  # disagrees + supported-only, but close: likely error wins
            (12, 3, "a", "b", 0.05, True),  # disagrees, close, has unflagged support → ambiguous
            (13, 4, "a", "a", -0.1, True),  # agrees, close → ambiguous
            (14, 5, "a", "b", 0.6, True),  # disagrees, confident, unflagged support → review
            (15, 6, "b", "b", -0.8, True),  # agrees, confident → review
            (16, 7, "a", "b", 0.9, False),  # not flagged → no tier
        ]
    )
    supported = {10: True, 11: True, 12: False, 13: True, 14: False, 15: False}
    tiered = assign_tiers(table, supported_only=supported, estimated_errors=[10, 16])
    assert tiered["tier"].tolist() == [LIKELY_ERROR, LIKELY_ERROR, AMBIGUOUS, AMBIGUOUS, REVIEW, REVIEW, ""]
    np.testing.assert_allclose(tiered["top_two_gap"], [0.6, 0.05, 0.05, 0.1, 0.6, 0.8, 0.9])
    assert tiered["estimated_error"].tolist() == [True, False, False, False, False, False, True]
    assert tiered["supported_only_by_flagged"].tolist() == [True, True, False, True, False, False, False]
    assert "tier" not in table.columns  # a copy


def test_tiers_without_margin_or_gaps_are_never_ambiguous() -> None:
    table = ranking([(1, 1, "a", "a", 0.0, True)]).drop(columns="margin")
    assert assign_tiers(table)["tier"].tolist() == [REVIEW]
    gaps = {1: 0.01}
    assert assign_tiers(table, gaps=gaps)["tier"].tolist() == [AMBIGUOUS]


def test_confident_learning_estimate_counts_the_off_diagonal() -> None:
    # class thresholds: t0 = mean(0.9, 0.8, 0.2) = 0.633, t1 = mean(0.9, 0.7) = 0.8
    given = np.array([0, 0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    estimate = estimate_label_errors(given, probabilities, ["cat", "dog"])
    # item 2 (labeled cat): p_dog = 0.8 ≥ t1 → an error counted as dog; item 4 (dog): p_cat 0.3 < t0 → not
    assert estimate.is_error.tolist() == [False, False, True, False, False]
    assert estimate.counted_as.tolist() == [-1, -1, 1, -1, -1]
    assert estimate.total == 1
    per_class = estimate.per_class.set_index("class")
    assert per_class.loc["cat", "estimated_errors"] == 1 and per_class.loc["dog", "estimated_errors"] == 0
    assert per_class.loc["cat", "estimated_error_rate"] == pytest.approx(1 / 3)
    assert per_class.loc["dog", "threshold"] == pytest.approx(0.8)
    assert estimate.as_dict()["total"] == 1


def test_triage_audit_on_a_small_noisy_problem() -> None:
    rng = np.random.default_rng(0)
    n, classes = 150, ["a", "b", "c"]
    truth = np.arange(n) % 3
    X = np.eye(3)[truth] * 3 + rng.normal(scale=0.6, size=(n, 3))
    given = truth.copy()
    flipped = np.arange(0, n, 15)  # 10 flips
    given[flipped] = (truth[flipped] + 1) % 3
    ids = np.arange(100, 100 + n)
    dataset = LabeledDataset(
        ids=ids,
        inputs=pd.DataFrame(X),
        kind="tabular",
        labels=np.array([classes[k] for k in given], dtype=object),
        classes=classes,
        provenance=pd.DataFrame(index=pd.Index(ids, name="id")),
    )
    scorer = SuspicionScorer(l2=1e-2).fit(X, list(dataset.labels), classes=classes)
    table = ranking_table(dataset, scorer.scores(("self_influence", "loss", "margin")), "self_influence", 15)
    triage = triage_audit(table, dataset, scorer)
    tiered = triage.table
    assert set(tiered.loc[tiered["flagged"], "tier"]) <= set(TIERS)
    assert (tiered.loc[~tiered["flagged"], "tier"] == "").all()
    assert set(triage.explanations) == set(tiered.loc[tiered["flagged"], "task_id"])
    likely = set(tiered.loc[tiered["tier"] == LIKELY_ERROR, "task_id"])
    planted = set(ids[flipped].tolist())
    assert len(likely & planted) >= 6 and len(likely - planted) <= 1, (likely, planted)
    assert sum(triage.tier_counts().values()) == 15
    assert 5 <= triage.estimate.total <= 20  # 10 planted
    assert "likely error" in triage.summary_line() and "estimated label errors" in triage.summary_line()
    assert triage.as_dict()["tiers"][LIKELY_ERROR] == len(likely)
