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

**Estimated number of label errors** (:func:`estimate_label_errors`): confident learning's estimate
(Northcutt, Jiang & Chuang, JAIR 2021) from **out-of-fold** probabilities p̂ (:mod:`relabel.out_of_fold`:
k-fold, seeded; each item predicted by a logistic model fitted without it). Per class k the threshold t_k
is the mean of p̂_ik over the items labeled k; item i (labeled y) lands in cell (y, j) of the confident
joint C when j is the most probable of the classes whose p̂_ij ≥ t_j (no cell when none is). C is then
calibrated row by row to the label counts, Q_yj = C_yj / Σ_j' C_yj' · n_y (items that cleared no threshold
are spread like those that did), and the estimate is the off-diagonal sum Σ_{y≠j} Q_yj, rounded. Per class:
how many items given that label are estimated wrong, and that share. The items counted (``is_error``, and
the ``estimated_error`` column) are those in off-diagonal cells of C.

Uncertainty: a 95 % Wilson interval for the error rate e/n times n (the count's sampling error, items
taken as independent); it does not cover the estimator's bias, which was measured on planted noise
(``scripts/bench_error_estimate.py``; the README's table). Without out-of-fold probabilities (the Python
API called without them) the in-sample probabilities are used and the estimate says so: a model that
memorises its labels then counts too few.
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


IN_SAMPLE = "in-sample probabilities (the model saw these labels: a memorising model counts too few)"


@dataclass
class ErrorEstimate:
    """How many labels look wrong (see the module docstring for the estimator and its uncertainty).

    total:       the estimated number of label errors among the items (calibrated confident joint).
    per_class:   one row per class: ``class``, ``n_items`` (given that label), ``estimated_errors``,
                 ``estimated_error_rate``, ``threshold`` (t_k).
    is_error:    (n,) bool, in the order of the probabilities: the items in off-diagonal cells of C.
    counted_as:  (n,) int, the class each counted item is attributed to (−1 when not counted).
    interval:    (low, high), the 95 % Wilson interval of the count (sampling error only).
    probabilities: where the probabilities came from, in words (out-of-fold k, model, seed; or in-sample).
    """

    total: int
    per_class: pd.DataFrame
    is_error: np.ndarray
    counted_as: np.ndarray
    interval: tuple[int, int] = (0, 0)
    probabilities: str = IN_SAMPLE
    method: str = "confident learning, calibrated confident joint (Northcutt et al. 2021)"

    def describe(self) -> str:
        """One line: the count, its interval, the estimator and where its probabilities came from."""
        low, high = self.interval
        return (
            f"estimated label errors in the project: {self.total} (95 % interval {low}–{high}; "
            f"{self.method}, {self.probabilities})"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: total, interval, method, probabilities and the per-class rows."""
        return {
            "total": int(self.total),
            "interval_95": [int(self.interval[0]), int(self.interval[1])],
            "method": self.method,
            "probabilities": self.probabilities,
            "per_class": [
                {key: _plain(value) for key, value in row.items()}
                for row in self.per_class.to_dict(orient="records")
            ],
        }


def wilson_interval(count: float, n: int, z: float = 1.959963984540054) -> tuple[int, int]:
    """The Wilson score interval for a rate count/n at confidence z (default 95 %), as counts (floor, ceil).

    p̂ = count/n; centre (p̂ + z²/2n)/(1 + z²/n); half-width z·√(p̂(1−p̂)/n + z²/4n²)/(1 + z²/n).
    """
    if n <= 0:
        return (0, 0)
    rate = min(max(count / n, 0.0), 1.0)
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    return (int(np.floor(max(centre - half, 0.0) * n)), int(np.ceil(min(centre + half, 1.0) * n)))


def estimate_label_errors(
    given: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[Any],
    *,
    source: str = IN_SAMPLE,
) -> ErrorEstimate:
    """The confident-learning estimate of the number of label errors (module docstring).

    ``given``: (n,) class indices of the given labels; ``probabilities``: (n, K) class probabilities in the
    same order (out-of-fold ones: :mod:`relabel.out_of_fold`); ``classes``: the K class names;
    ``source``: where the probabilities came from, in words (shown with the estimate).
    """
    given = np.asarray(given, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = probabilities.shape[1]
    thresholds = np.array(
        [probabilities[given == k, k].mean() if np.any(given == k) else np.inf for k in range(n_classes)]
    )
    above = probabilities >= thresholds[None, :]
    best = np.argmax(np.where(above, probabilities, -np.inf), axis=1)
    confident = above.any(axis=1)
    joint = np.zeros((n_classes, n_classes))
    np.add.at(joint, (given[confident], best[confident]), 1.0)
    label_counts = np.bincount(given, minlength=n_classes).astype(np.float64)
    row_sums = joint.sum(axis=1, keepdims=True)
    shares = np.where(row_sums > 0, joint / np.where(row_sums > 0, row_sums, 1.0), 0.0)
    calibrated = shares * label_counts[:, None]
    errors_per_class = calibrated.sum(axis=1) - np.diag(calibrated)
    is_error = confident & (best != given)
    total = float(errors_per_class.sum())
    per_class = pd.DataFrame(
        {
            "class": [str(name) for name in classes],
            "n_items": label_counts.astype(int),
            "estimated_errors": np.round(errors_per_class).astype(int),
            "threshold": thresholds,
        }
    )
    per_class["estimated_error_rate"] = errors_per_class / np.maximum(label_counts, 1)
    return ErrorEstimate(
        round(total),
        per_class,
        is_error,
        np.where(is_error, best, -1),
        interval=wilson_interval(total, len(given)),
        probabilities=source,
    )


def assign_tiers(
    ranking: pd.DataFrame,
    *,
    supported_only: Mapping[Any, bool] | None = None,
    gaps: Mapping[Any, float] | None = None,
    estimated_errors: Collection[Any] = (),
    margin: float = AMBIGUITY_MARGIN,
    id_column: str = "task_id",
    preferred_labels: Mapping[Any, str] | None = None,
) -> pd.DataFrame:
    """A copy of ``ranking`` with the columns of :data:`TRIAGE_COLUMNS` added (or replaced):

    ``supported_only_by_flagged`` (bool, from ``supported_only``; False where unknown), ``top_two_gap``
    (from ``gaps``: item id → p(1st) − p(2nd); else ``|margin|`` when a ``margin`` score column is present,
    which is the same number whenever the given label is one of the top two; else NaN = never ambiguous),
    ``estimated_error`` (bool: the item is among ``estimated_errors``), and ``tier`` (module docstring;
    ``""`` for items that are not flagged). Without a ``flagged`` column every row counts as flagged.
    "The model prefers another label" compares ``current_label`` with ``preferred_labels`` (item id → the
    out-of-fold most probable class) when given, else with ``suggested_label``.
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
    if preferred_labels is None:
        preferred = table["suggested_label"].astype(str)
    else:
        preferred = pd.Series([str(preferred_labels.get(i, "")) for i in ids], index=table.index)
    disagrees = (table["current_label"].astype(str) != preferred).to_numpy()
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
    out_of_fold: Any = None,
) -> Triage:
    """Triage one audit: ``ranking`` as :func:`relabel.selection.ranking_table` returns it, ``dataset`` the
    :class:`relabel.dataset.LabeledDataset` ranked, ``scorer`` the fitted :class:`relabel.SuspicionScorer`
    (rows in ``dataset.ids`` order, classes in ``dataset.classes`` order).

    ``out_of_fold``: a :class:`relabel.out_of_fold.OutOfFold` (rows in the same order): its probabilities
    give the estimate, the top-two gap and the label the model prefers for the tiers (so a model that
    memorised its labels still sorts honestly); None: the scorer's in-sample probabilities.

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
    if out_of_fold is None:
        probabilities, source, preferred = np.asarray(scorer.probabilities), IN_SAMPLE, None
    else:
        probabilities, source = np.asarray(out_of_fold.probabilities), out_of_fold.describe()
        classes = [str(name) for name in dataset.classes]
        best = probabilities.argmax(axis=1)
        preferred = {_plain(item): classes[k] for item, k in zip(ids, best, strict=True)}
    gap = top_two_gap(probabilities)
    gaps = {_plain(item): float(value) for item, value in zip(ids, gap, strict=True)}
    estimate = estimate_label_errors(dataset.label_indices(), probabilities, dataset.classes, source=source)
    table = assign_tiers(
        ranking,
        supported_only=supported,
        gaps=gaps,
        estimated_errors=[_plain(item) for item in ids[estimate.is_error]],
        margin=margin,
        preferred_labels=preferred,
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
        low, high = estimate.get("interval_95", (estimate["total"], estimate["total"]))
        line += (
            f"; estimated label errors in the project: {estimate['total']} (95 % interval {low}–{high}; "
            f"{estimate.get('method', 'confident learning')}, {estimate.get('probabilities', IN_SAMPLE)})"
        )
    return line
