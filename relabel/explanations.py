"""Explanations of many items at once: for each, the training items that most support and most oppose its
current label, by influence(j → i) = g_jᵀ H⁻¹ g_i (:mod:`relabel.influence.base`; > 0 supports, < 0
opposes), from a fitted scorer's factorisation (no refit). The report (:mod:`relabel.report`), the
triage (:mod:`relabel.triage`), ``relabel explain`` and the review queue (each flagged item's strongest
supporters and opposers, :func:`with_evidence`) use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from relabel.dataset import Evidence, FlaggedItem


def explanations_for(
    scorer: Any, ids: Sequence[Any], positions: Sequence[int], top: int = 5, block_size: int = 256
) -> dict[Any, pd.DataFrame]:
    """What :meth:`relabel.SuspicionScorer.explain` gives for each item position, for many items at once,
    with the training rows mapped to item ids.

    For a block of m items: H⁻¹ [g_i1 … g_im] in one solve (exact: Cholesky; LiSSA: one batched run), then a
    single chunked pass over the n training gradients gives the n × m matrix of influences g_jᵀ H⁻¹ g_i
    (instead of one pass per item). From the scorer's existing factorisation; no refit.

    Returns {item id: DataFrame(role "supports"/"opposes", row, id, influence, label)} where the ``top``
    largest positive influences support the item's current label and the ``top`` most negative oppose it;
    the item itself is left out; ``label`` is the training item's class as the scorer encodes it.
    """
    from relabel.influence.base import _to_numpy, index_chunks

    ids = np.asarray(ids)
    solver = scorer.solver
    gradients = solver.gradients
    explanations: dict[Any, pd.DataFrame] = {}
    positions = [int(position) for position in positions]
    for start in range(0, len(positions), block_size):
        block = np.array(positions[start : start + block_size])
        solved = solver.inverse_hvp(gradients.per_example_gradients(block))  # (m, p)
        influence = np.empty((gradients.n_items, len(block)))
        for rows in index_chunks(gradients.n_items, solver.chunk_size):
            influence[rows] = _to_numpy(gradients.per_example_gradients(rows) @ solved.T)
        for column, position in enumerate(block):
            explanations[_plain(ids[position])] = _explanation_table(
                influence[:, column], int(position), top, scorer, ids
            )
    return explanations


def _explanation_table(
    influence: np.ndarray, index: int, top: int, scorer: Any, ids: np.ndarray
) -> pd.DataFrame:
    """The ``top`` supporters (largest > 0) and opposers (most negative) of item ``index`` (not itself)."""
    from relabel.scorer import strongest_influences

    rows = strongest_influences(influence, index, top)
    return pd.DataFrame(
        {
            "role": [role for role, _ in rows],
            "row": [int(j) for _, j in rows],
            "id": [_plain(ids[j]) for _, j in rows],
            "influence": [float(influence[j]) for _, j in rows],
            "label": [scorer.classes[scorer.y[j]] for _, j in rows],
        }
    )


def _plain(value: Any) -> Any:
    """numpy scalar → Python scalar (stable dict keys and JSON)."""
    return value.item() if isinstance(value, np.generic) else value


EVIDENCE_PER_ROLE = 3  # supporters and opposers each that reach a reviewer with a flagged item


def strongest_evidence(table: pd.DataFrame | None, per_role: int = EVIDENCE_PER_ROLE) -> tuple[Evidence, ...]:
    """The ``per_role`` strongest supporters (largest influence > 0), then the ``per_role`` strongest
    opposers (most negative influence), of one explanation table (:func:`explanations_for`'s rows, which
    hold each role strongest first); empty for a missing table."""
    if table is None or len(table) == 0:
        return ()
    evidence: list[Evidence] = []
    for role in ("supports", "opposes"):
        rows = table[table["role"] == role]
        ordered = rows.sort_values("influence", ascending=(role == "opposes"), kind="stable")
        evidence += [
            Evidence(role=role, item_id=_plain(row.id), label=str(row.label), influence=float(row.influence))
            for row in ordered.head(per_role).itertuples(index=False)
        ]
    return tuple(evidence)


def with_evidence(
    items: Sequence[FlaggedItem], explanations: Mapping[Any, pd.DataFrame], per_role: int = EVIDENCE_PER_ROLE
) -> list[FlaggedItem]:
    """``items`` with their :attr:`FlaggedItem.evidence` filled from ``explanations`` (item id → table, as
    :func:`explanations_for` returns; an item without one keeps no evidence)."""
    return [
        replace(item, evidence=strongest_evidence(explanations.get(item.task_id), per_role)) for item in items
    ]
