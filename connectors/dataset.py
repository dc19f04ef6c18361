"""The dataset shape every connector returns and every featurizer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

InputKind = Literal["text", "image", "tabular"]


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
    """

    ids: np.ndarray
    inputs: Any
    kind: InputKind
    labels: np.ndarray
    classes: list[str]
    provenance: pd.DataFrame
    unlabeled_ids: list = field(default_factory=list)
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def label_indices(self) -> np.ndarray:
        """Integer class index of each item's label (position in ``classes``)."""
        lookup = {name: index for index, name in enumerate(self.classes)}
        return np.array([lookup[label] for label in self.labels], dtype=np.int64)
