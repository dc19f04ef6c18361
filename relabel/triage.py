"""Triage: sort the flagged items into tiers a lead can act on, and estimate how many labels are wrong.

Inputs: the ranking table of :func:`relabel.selection.ranking_table` (``task_id``, ``rank``,
``current_label``, ``suggested_label``, ``predicted_probability``, the score columns, ``suspicion``,
``flagged``), the model's class probabilities (``SuspicionScorer.probabilities``, one row per item) and, per
flagged item, its strongest supporting training items (:func:`relabel.explanations.explanations_for`).

**Supported only by flagged items** (:func:`supported_only_by_flagged`): the item's ``top`` (default
:data:`SUPPORTERS_CHECKED` = 3) most supporting training items (influence g_jᵀ H⁻¹ g_i > 0) are all
flagged themselves, and it has at least one. A wrong label is fitted by bending the model; what holds it up is
then mostly other wrongly labeled look-alikes, which rank high too. (scikit-learn's 1,797 digits with the
demo's 180 planted flips, logistic model, top 10 % flagged: true for 147 of the 165 planted errors flagged
and for none of the 15 correct labels flagged.)

**Tiers** of a flagged item (:func:`assign_tiers`; unflagged items get ``""``), first match wins:

* ``likely error``: the model prefers another label (``suggested_label != current_label``) **and** the
  item is supported only by flagged items. Act: accept the suggestion after a quick look.
* ``ambiguous``: the model's two most probable classes are within :data:`AMBIGUITY_MARGIN` (0.15) of each
  other, ``p(1st) − p(2nd) < 0.15``: the item may be genuinely borderline or the guidelines unclear. Act:
  decide the rule, not just the item.
* ``review``: every other flagged item. Act: a normal second look.

**Estimated number of label errors** (:func:`estimate_label_errors`): the off-diagonal count of the
confident joint of confident learning (Northcutt, Jiang & Chuang, JAIR 2021), uncalibrated. Per class k the
threshold t_k is the mean probability of class k over the items labeled k; item i (labeled y) is counted as
an error when some class j ≠ y has p_ij ≥ t_j and j is the most probable of the classes at or above their
threshold. Per class: how many items given that label are counted, and that share.

Bias, honestly: the probabilities are **in-sample** (the model was fitted on these very labels; the audit does
not cross-validate), so a flexible or weakly regularised model fits some wrong labels and the count
**underestimates** (the more so, the better the model memorises); on data whose classes genuinely overlap,
borderline correct items are counted and it **overestimates**. Read it as an order of magnitude, and compare
it with the ``likely error`` tier count, which only covers the flagged items. (Digits as above: 121 counted
for 180 planted errors.) ``relabel compare`` (out-of-fold
probabilities, ``confident_learning``) is the careful version.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LIKELY_ERROR = "likely error"
AMBIGUOUS = "ambiguous"
REVIEW = "review"
TIERS = (LIKELY_ERROR, AMBIGUOUS, REVIEW)
AMBIGUITY_MARGIN = 0.15
SUPPORTERS_CHECKED = 3
TRIAGE_COLUMNS = ("supported_only_by_flagged", "top_two_gap", "estimated_error", "tier")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def supported_only_by_flagged(
    explanations: Mapping[Any, pd.DataFrame], flagged_ids: Collection[Any], top: int = SUPPORTERS_CHECKED
) -> dict[Any, bool]:
    """item id → True when the item's ``top`` strongest supporters (rows with role ``supports``, in the
    order given, i.e. largest influence first) are all in ``flagged_ids`` and there is at least one.

    ``explanations``: item id → DataFrame with ``role`` and ``id`` columns
    (:func:`relabel.explanations.explanations_for`); items without an explanation are left out.
    """
    flagged = {_plain(item) for item in flagged_ids}
    answer: dict[Any, bool] = {}
    for item, table in explanations.items():
        supporters = [_plain(value) for value in table.loc[table["role"] == "supports", "id"].head(top)]
        answer[_plain(item)] = bool(supporters) and all(supporter in flagged for supporter in supporters)
    return answer


def top_two_gap(probabilities: np.ndarray) -> np.ndarray:
    """p(most probable class) − p(second most probable), per row of an (n, K) probability matrix."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape[1] < 2:
        return np.ones(len(probabilities))
    top_two = -np.partition(-probabilities, 1, axis=1)[:, :2]
    return top_two[:, 0] - top_two[:, 1]


@dataclass
class ErrorEstimate:
    """How many labels look wrong (see the module docstring for the estimator and its bias).

    total:       the estimated number of label errors among the items.
    per_class:   one row per class: ``class``, ``n_items`` (given that label), ``estimated_errors``,
                 ``estimated_error_rate``, ``threshold`` (t_k).
    is_error:    (n,) bool, in the order of the probabilities: the items counted.
    counted_as:  (n,) int, the class each counted item is attributed to (−1 when not counted).
    """

    total: int
    per_class: pd.DataFrame
    is_error: np.ndarray
    counted_as: np.ndarray
    method: str = "confident-learning off-diagonal count, in-sample probabilities (uncalibrated)"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: total, method and the per-class rows."""
        return {
            "total": int(self.total),
            "method": self.method,
            "per_class": [
                {key: _plain(value) for key, value in row.items()}
                for row in self.per_class.to_dict(orient="records")
            ],
        }


def estimate_label_errors(
    given: Sequence[int] | np.ndarray, probabilities: np.ndarray, classes: Sequence[Any]
) -> ErrorEstimate:
    """The confident-learning estimate of the number of label errors (module docstring).

    ``given``: (n,) class indices of the given labels; ``probabilities``: (n, K) the model's class
    probabilities in the same order; ``classes``: the K class names.
    """
    given = np.asarray(given, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = probabilities.shape[1]
    thresholds = np.array(
        [probabilities[given == k, k].mean() if np.any(given == k) else np.inf for k in range(n_classes)]
    )
    above = probabilities >= thresholds[None, :]
    masked = np.where(above, probabilities, -np.inf)
    best = np.argmax(masked, axis=1)
    confident = above.any(axis=1)
    is_error = confident & (best != given)
    counted_as = np.where(is_error, best, -1)
    per_class = pd.DataFrame(
        {
            "class": [str(name) for name in classes],
            "n_items": [int(np.sum(given == k)) for k in range(n_classes)],
            "estimated_errors": [int(np.sum(is_error & (given == k))) for k in range(n_classes)],
            "threshold": thresholds,
        }
    )
    per_class["estimated_error_rate"] = per_class["estimated_errors"] / per_class["n_items"].clip(lower=1)
    return ErrorEstimate(int(is_error.sum()), per_class, is_error, counted_as)


def assign_tiers(
    ranking: pd.DataFrame,
    *,
    supported_only: Mapping[Any, bool] | None = None,
    gaps: Mapping[Any, float] | None = None,
    estimated_errors: Collection[Any] = (),
    margin: float = AMBIGUITY_MARGIN,
    id_column: str = "task_id",
) -> pd.DataFrame:
    """A copy of ``ranking`` with the columns of :data:`TRIAGE_COLUMNS` added (or replaced):

    ``supported_only_by_flagged`` (bool, from ``supported_only``; False where unknown), ``top_two_gap``
    (from ``gaps``: item id → p(1st) − p(2nd); else ``|margin|`` when a ``margin`` score column is present,
    which is the same number whenever the given label is one of the top two; else NaN = never ambiguous),
    ``estimated_error`` (bool: the item is among ``estimated_errors``), and ``tier`` (module docstring;
    ``""`` for items that are not flagged). Without a ``flagged`` column every row counts as flagged.
    """
    table = ranking.copy()
    ids = [_plain(value) for value in table[id_column]]
    supported_only = supported_only or {}
    table["supported_only_by_flagged"] = np.array(
        [bool(supported_only.get(i, False)) for i in ids], dtype=bool
    )
    if gaps is not None:
        table["top_two_gap"] = np.array([float(gaps.get(i, np.nan)) for i in ids])
    elif "margin" in table.columns:
        table["top_two_gap"] = np.abs(table["margin"].to_numpy(dtype=float))
    else:
        table["top_two_gap"] = np.nan
    estimated = {_plain(value) for value in estimated_errors}
    table["estimated_error"] = np.array([i in estimated for i in ids], dtype=bool)
    flagged = (
        table["flagged"].to_numpy(dtype=bool) if "flagged" in table.columns else np.ones(len(table), bool)
    )
    disagrees = (table["current_label"].astype(str) != table["suggested_label"].astype(str)).to_numpy()
    ambiguous = np.nan_to_num(table["top_two_gap"].to_numpy(dtype=float), nan=np.inf) < margin
    likely = disagrees & table["supported_only_by_flagged"].to_numpy()
    tiers = np.where(likely, LIKELY_ERROR, np.where(ambiguous, AMBIGUOUS, REVIEW))
    table["tier"] = np.where(flagged, tiers, "")
    return table


@dataclass
class Triage:
    """An audit's triage: the ranking with :data:`TRIAGE_COLUMNS`, the explanations it used (flagged item id
    → supporters/opposers table) and the error estimate (None without probabilities)."""

    table: pd.DataFrame
    explanations: dict[Any, pd.DataFrame] = field(default_factory=dict)
    estimate: ErrorEstimate | None = None

    def tier_counts(self) -> dict[str, int]:
        """Flagged items per tier, every tier present (0 when empty), in :data:`TIERS` order."""
        counts = self.table["tier"].value_counts()
        return {tier: int(counts.get(tier, 0)) for tier in TIERS}

    def summary_line(self) -> str:
        """One line: the tier counts and the estimate, e.g. for ``relabel audit``'s summary."""
        return summary_line(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: tier counts, supported-only count and the estimate."""
        flagged = self.table["tier"] != ""
        return {
            "tiers": self.tier_counts(),
            "supported_only_by_flagged": int(self.table.loc[flagged, "supported_only_by_flagged"].sum()),
            "estimated_label_errors": None if self.estimate is None else self.estimate.as_dict(),
        }


def triage_audit(
    ranking: pd.DataFrame,
    dataset: Any,
    scorer: Any,
    *,
    top: int = SUPPORTERS_CHECKED,
    explain_top: int | None = None,
    explanations: Mapping[Any, pd.DataFrame] | None = None,
    margin: float = AMBIGUITY_MARGIN,
) -> Triage:
    """Triage one audit: ``ranking`` as :func:`relabel.selection.ranking_table` returns it, ``dataset`` the
    :class:`relabel.dataset.LabeledDataset` ranked, ``scorer`` the fitted :class:`relabel.SuspicionScorer`
    (rows in ``dataset.ids`` order, classes in ``dataset.classes`` order).

    Explains every flagged item (``explain_top`` supporters and opposers each, default ``top``; one batched
    solve per 256 items, no refit) unless ``explanations`` are given, then tiers and estimates.
    """
    from relabel.explanations import explanations_for

    ids = np.asarray(dataset.ids)
    flagged_ids = [_plain(value) for value in ranking.loc[_flagged_mask(ranking), "task_id"]]
    if explanations is None:
        position_of = {_plain(item): position for position, item in enumerate(ids)}
        explanations = explanations_for(
            scorer, ids, [position_of[item] for item in flagged_ids], top=max(top, explain_top or top)
        )
    explanations = dict(explanations)
    supported = supported_only_by_flagged(explanations, flagged_ids, top=top)
    probabilities = np.asarray(scorer.probabilities)
    gap = top_two_gap(probabilities)
    gaps = {_plain(item): float(value) for item, value in zip(ids, gap, strict=True)}
    estimate = estimate_label_errors(dataset.label_indices(), probabilities, dataset.classes)
    table = assign_tiers(
        ranking,
        supported_only=supported,
        gaps=gaps,
        estimated_errors=[_plain(item) for item in ids[estimate.is_error]],
        margin=margin,
    )
    return Triage(table, explanations, estimate)


def _flagged_mask(ranking: pd.DataFrame) -> np.ndarray:
    if "flagged" in ranking.columns:
        return ranking["flagged"].to_numpy(dtype=bool)
    return np.ones(len(ranking), dtype=bool)


def summary_line(facts: Mapping[str, Any]) -> str:
    """One line from :meth:`Triage.as_dict` facts: flagged items per tier, how many are supported only by
    flagged items, and the estimated number of label errors (``relabel audit`` prints it)."""
    line = "triage of the flagged items: " + ", ".join(
        f"{count} {tier}" for tier, count in facts["tiers"].items()
    )
    line += f" ({facts['supported_only_by_flagged']} supported only by other flagged items)"
    estimate = facts.get("estimated_label_errors")
    if estimate:
        line += (
            f"; estimated label errors in the project: {estimate['total']} "
            "(confident-learning count, in-sample: a rough figure)"
        )
    return line
