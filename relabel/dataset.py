"""The data types exchanged between the core and the connectors: the labeled items a connector pulls
(:class:`LabeledDataset`, which every featurizer consumes) and the items the core flags for review
(:class:`FlaggedItem`, which a connector pushes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from relabel.errors import InputError

InputKind = Literal["text", "image", "tabular"]
# Where a connector puts the review queue: "project" (a separate review project) or "view" (predictions and
# a tab in the project itself); the audit setting ``queue`` (relabel.settings) takes one of these.
QUEUE_MODES: tuple[str, ...] = ("view", "project")


@dataclass
class LabeledDataset:
    """Labeled items pulled from one source, in a stable order (sorted by item id).

    Fields
    ------
    ids:        item ids, one per labeled item (Label Studio task ids, or the file's id column).
    inputs:     raw inputs, one per item: ``list[str]`` for text, ``list[bytes]`` (encoded image files)
                for images, a numeric ``pandas.DataFrame`` (one row per item) for tabular data.
    kind:       which of the three the inputs are.
    labels:     the given label of each item, a string that is always one of ``classes``.
    classes:    the class names in the order the source lists them (Label Studio: ``<Choice value=…>``).
    provenance: one row per item, indexed like ``ids``: ``annotation_id``, ``annotator``, ``updated_at``,
                ``n_annotations`` (valid, non-cancelled ones), ``disagreement`` (bool: annotators differ).
    unlabeled_ids: ids of items the source holds without a usable label (left out of ``ids``).
    source:     free-form description of where the data came from (url, project id, file path).
    extra_columns: per-item columns read beside the inputs and kept out of them (e.g. a file's known-error
                column for ``relabel compare``), one row per item in ``ids`` order.
    skipped:    labeled items left out because their input could not be read (a malformed image URL, an
                image that is not one, a non-numeric tabular cell): item id → the one-line reason.
    """

    ids: np.ndarray
    inputs: Any
    kind: InputKind
    labels: np.ndarray
    classes: list[str]
    provenance: pd.DataFrame
    unlabeled_ids: list = field(default_factory=list)
    source: dict = field(default_factory=dict)
    extra_columns: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: dict[Any, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def label_indices(self) -> np.ndarray:
        """Integer class index of each item's label (position in ``classes``)."""
        lookup = {name: index for index, name in enumerate(self.classes)}
        return np.array([lookup[label] for label in self.labels], dtype=np.int64)


@dataclass(frozen=True)
class Evidence:
    """One training item among those that most support or oppose a flagged item's current label.

    role:      ``"supports"`` (influence > 0: the training item holds the current label up) or ``"opposes"``
               (influence < 0: it pulls the model away from the current label).
    item_id:   the training item's id in its source (a Label Studio task id).
    label:     the training item's own (given) label.
    influence: g_jᵀ H⁻¹ g_i, training item j on the flagged item i's loss (docs/maths.md; units of the loss
               gradient squared times H⁻¹, comparable only within one audit).
    """

    role: Literal["supports", "opposes"]
    item_id: Any
    label: str
    influence: float


@dataclass(frozen=True)
class FlaggedItem:
    """One item to send for review (what the selection hands to a connector's push).

    task_id:   the item's id in its source (a Label Studio task id).
    rank:      1 = most suspicious.
    score:     normalised suspicion in [0, 1] (1 = most suspicious of the project).
    suggested: the label the model would give (a class name of the project).
    current:   the item's current label (the one under suspicion), or None when unknown.
    probability: the model's probability of the suggested label, in [0, 1] (None when unknown). Label
               Studio shows a prediction's ``score`` as the model's confidence in it, so this, not the
               suspicion, is what goes there.
    tier:      the triage tier (``likely error``, ``ambiguous``, ``review``; see :mod:`relabel.triage`).
    evidence:  its strongest supporting, then opposing, training items (:class:`Evidence`, strongest first
               within each role; empty when not explained), shown to the reviewer as the reasons.
    """

    task_id: int
    rank: int
    score: float
    suggested: str
    current: str | None = None
    probability: float | None = None
    tier: str | None = None
    evidence: tuple[Evidence, ...] = ()


def text_inputs(inputs: Any) -> list[str]:
    """Text items as a list of strings; InputError naming the first position that is not a string."""
    texts = list(inputs)
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"Text input {position} is a {type(text).__name__}, not a string")
    return texts
