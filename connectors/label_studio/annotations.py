"""What a task's annotations say: the one place that decides which annotations count and which label wins.

An annotation *counts* when it is not cancelled (skipped) and has a non-empty ``result``; drafts are not
annotations (exports list them under ``drafts``). Among those, *newest* means the latest
``(updated_at or created_at, id)``.

* :func:`majority_label`: the label of a task for training: the majority over its counting annotations,
  ties going to the newest annotation among the tied labels; records whether annotators disagree.
* :func:`newest_label`: the label of the newest counting annotation (what a reviewer last decided).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connectors.label_studio.config import ClassificationTarget
from relabel.errors import ConnectorError


def _recency(annotation: dict[str, Any]) -> tuple[str, int]:
    return str(annotation.get("updated_at") or annotation.get("created_at") or ""), int(
        annotation.get("id") or 0
    )


def counting_annotations(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's non-cancelled annotations with a non-empty result, oldest first."""
    annotations = [
        annotation
        for annotation in task.get("annotations") or []
        if not annotation.get("was_cancelled") and annotation.get("result")
    ]
    return sorted(annotations, key=_recency)


def single_label(annotation: dict[str, Any], target: ClassificationTarget, task_id: Any) -> str | None:
    """The one label ``annotation`` picks with the target's control (None if it picks none).

    ConnectorError naming the task when it picks several (a multi-choice answer in a single-choice project).
    """
    result = annotation.get("result")
    for region in result if isinstance(result, list) else []:
        if not isinstance(region, dict) or region.get("from_name") != target.control.name:
            continue
        value = region.get("value")
        picked = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(picked, list) or not all(isinstance(c, (str, int, float)) for c in picked):
            continue  # not a Choices answer relabel can read (Label Studio writes a list of strings)
        if len(picked) == 1:
            return str(picked[0])
        if len(picked) > 1:
            raise ConnectorError(
                f"Task {task_id}: annotation {annotation.get('id')} picks several choices {picked} in "
                f"control {target.control.name!r}; relabel supports single-choice classification only"
            )
    return None


@dataclass
class LabelDecision:
    """A task's training label: the label, the annotation it comes from, how many annotations voted, and
    whether they disagreed."""

    label: str
    annotation: dict[str, Any]
    n_annotations: int
    disagreement: bool


def majority_label(task: dict[str, Any], target: ClassificationTarget) -> LabelDecision | None:
    """Majority label over the counting annotations that label the target control (None if none does)."""
    votes: list[tuple[str, dict[str, Any]]] = []
    for annotation in counting_annotations(task):
        label = single_label(annotation, target, task.get("id"))
        if label is not None:
            votes.append((label, annotation))
    if not votes:
        return None
    counts = Counter(label for label, _ in votes)
    top = max(counts.values())
    tied = [vote for vote in votes if counts[vote[0]] == top]
    label, annotation = tied[-1]  # votes are oldest first: the newest among the tied labels wins
    return LabelDecision(label, annotation, n_annotations=len(votes), disagreement=len(counts) > 1)


def newest_label(annotations: Sequence[dict[str, Any]], target: ClassificationTarget) -> str | None:
    """The label of the newest of ``annotations`` (counting ones, oldest first) that labels the target."""
    for annotation in reversed(annotations):
        label = target.label_of(annotation.get("result"))
        if label is not None:
            return label
    return None
