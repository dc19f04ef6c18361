"""Selection: from one score per item to the ranked table and the items flagged for review.

One ordering rule everywhere (``rank`` columns, the audit's table, the review queue, the report):
**higher score first; NaN counts as the lowest score; ties keep the items' input order** (a Label Studio
pull is sorted by task id, so ties go to the smaller task id).

How many are flagged (:func:`number_to_flag`): ``top`` (an item count) or ``top_fraction`` (a share of the
ranked items, rounded up); with neither, :data:`DEFAULT_TOP_FRACTION` = 5 %; always at least one item.

The normalised suspicion shown to reviewers (:func:`normalised_suspicion`) is the score's rank turned into
[0, 1], so it reads the same whatever the method's scale (self-influence is unbounded, loss is in nats).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from relabel.dataset import FlaggedItem, LabeledDataset
from relabel.errors import InputError
from relabel.methods import SCORE_METHODS

DEFAULT_TOP_FRACTION = 0.05
PROVENANCE_COLUMNS = ("annotation_id", "annotator", "n_annotations", "disagreement")


def suspicion_order(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Item positions, most suspicious first (the module's ordering rule)."""
    values = np.asarray(scores, dtype=np.float64)
    return np.argsort(-np.where(np.isnan(values), -np.inf, values), kind="stable")


def suspicion_ranks(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rank of each item, 1 = most suspicious (the module's ordering rule)."""
    order = suspicion_order(scores)
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def add_rank_columns(frame: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Add ``rank_<method>`` (1 = most suspicious) for every method column of ``frame``."""
    for method in methods:
        frame[f"rank_{method}"] = suspicion_ranks(frame[method].to_numpy())
    return frame


def normalised_suspicion(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Raw scores (higher = more suspicious) mapped to [0, 1] by their rank among all items.

    ``value_i = (number of items scoring strictly lower than i) / (n − 1)``: 1.0 for the most suspicious
    item, 0.0 for the least; ties share a value; NaN counts as lowest.
    """
    values = np.asarray(scores, dtype=np.float64)
    if len(values) <= 1:
        return np.ones(len(values))
    filled = np.where(np.isnan(values), -np.inf, values)
    below = np.searchsorted(np.sort(filled), filled, side="left")
    return below / (len(values) - 1)


def number_to_flag(n_items: int, top: int | None = None, top_fraction: float | None = None) -> int:
    """How many of ``n_items`` to flag: ``top``, or ``ceil(top_fraction · n)``, default 5 %; at least 1."""
    if top is not None and top_fraction is not None:
        raise InputError("give either top (an item count) or top_fraction (a share), not both")
    if top is not None:
        if int(top) < 1:
            raise InputError(f"top must be at least 1; got {top}")
        count = int(top)
    else:
        fraction = DEFAULT_TOP_FRACTION if top_fraction is None else float(top_fraction)
        if not 0.0 < fraction <= 1.0:
            raise InputError(f"top_fraction must be in (0, 1]; got {top_fraction}")
        count = math.ceil(fraction * n_items)
    return max(1, min(count, n_items))


def flag_basis(n_items: int, top: int | None = None, top_fraction: float | None = None) -> str:
    """Why :func:`number_to_flag` flags as many as it does, in the settings' own words (for the line a push
    prints when a queue changes size), e.g. ``top_fraction=0.05 of 1880 ranked items (the default)``."""
    if top is not None:
        return f"top={int(top)} (of {int(n_items)} ranked items)"
    fraction = DEFAULT_TOP_FRACTION if top_fraction is None else float(top_fraction)
    default = " (the default)" if top_fraction is None else ""
    return f"top_fraction={fraction:g} of {int(n_items)} ranked items{default}"


def ranking_table(
    dataset: LabeledDataset,
    scores: pd.DataFrame,
    method: str,
    n_flagged: int,
    excluded: Collection[int] = (),
) -> pd.DataFrame:
    """One row per labeled item, most suspicious by ``method`` first.

    Columns: ``task_id``, ``rank`` (1 = most suspicious), ``current_label``, ``suggested_label`` (the
    model's prediction), ``predicted_probability``, one column per scoring method present in ``scores``
    (raw scores, higher = more suspicious), ``suspicion`` (normalised to [0, 1] over all items),
    ``flagged`` (the first ``n_flagged`` rows not in ``excluded``), ``excluded`` (when ``excluded`` is given:
    items kept out of the queue, e.g. reviewed before), and the label's provenance.
    """
    classes = list(dataset.classes)
    suggested = [value if value in classes else classes[int(value)] for value in scores["predicted_class"]]
    table = pd.DataFrame(
        {
            "task_id": np.asarray(dataset.ids, dtype=np.int64),
            "current_label": np.asarray(dataset.labels, dtype=object),
            "suggested_label": [str(value) for value in suggested],
            "predicted_probability": scores["predicted_probability"].to_numpy(),
        }
    )
    for column in (c for c in scores.columns if c in SCORE_METHODS):
        table[column] = scores[column].to_numpy()
    table["suspicion"] = normalised_suspicion(scores[method].to_numpy())
    provenance = dataset.provenance.reindex(dataset.ids)
    for column in (c for c in PROVENANCE_COLUMNS if c in provenance.columns):
        table[column] = provenance[column].to_numpy()
    table = table.iloc[suspicion_order(table[method].to_numpy())].reset_index(drop=True)
    table.insert(1, "rank", np.arange(1, len(table) + 1))
    eligible = ~table["task_id"].isin(list(excluded)).to_numpy()
    table["flagged"] = eligible & (np.cumsum(eligible) <= n_flagged)
    if excluded:
        table["excluded"] = ~eligible
    return table


def flagged_items(table: pd.DataFrame) -> list[FlaggedItem]:
    """The flagged rows of a :func:`ranking_table`, in order, as items for a review queue (rank 1..k)."""
    flagged = table[table["flagged"]]
    return [
        FlaggedItem(
            task_id=int(row.task_id),
            rank=position,
            score=float(row.suspicion),
            suggested=str(row.suggested_label),
            current=None if _missing(row.current_label) else str(row.current_label),
            probability=float(row.predicted_probability),
            tier=str(row.tier) if "tier" in flagged.columns and row.tier else None,
        )
        for position, row in enumerate(flagged.itertuples(index=False), start=1)
    ]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
