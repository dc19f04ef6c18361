"""One audit, end to end: pull a Label Studio project → featurize → rank → pick the top items → push a queue.

Each stage is one call into the module that owns it (connector, featurizer, :func:`relabel.rank`, review
queue); this module only wires them and records what happened, so ``relabel audit``, the nightly script
and the demo all run the same pipeline.

How many items are flagged: ``top`` (an item count) or ``top_fraction`` (a share of the labeled items,
rounded up); with neither, :data:`DEFAULT_TOP_FRACTION` = 5 % of the labeled items, and always at least
one item.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connectors.dataset import LabeledDataset
from connectors.label_studio_queue import (
    FlaggedItem,
    PushResult,
    ReviewQueue,
    flagged_items,
)
from relabel.errors import InputError

DEFAULT_TOP_FRACTION = 0.05
MODELS = ("logistic", "mlp", "cnn")


@dataclass
class AuditResult:
    """What one audit did.

    n_tasks:          tasks in the project; n_labeled: those with a usable label (ranked);
                      n_unlabeled: the rest.
    n_features:       width of the feature matrix handed to the model (C·H·W for the CNN).
    flagged_task_ids: the pushed tasks, most suspicious first.
    ranking:          one row per labeled task (see :func:`ranking_table`).
    push:             what the review-queue push created or updated (None with ``push=False``).
    url:              where to look in the browser (the view or the review project).
    seconds:          wall-clock seconds per stage: pull, featurize, rank, push.
    report_path:      the ``report.html`` written (beside ``ranking.csv`` and ``ranking.parquet``), if a
                      report directory was given.
    """

    project_id: int
    model: str
    method: str
    queue: str
    n_tasks: int
    n_labeled: int
    n_unlabeled: int
    n_features: int
    n_flagged: int
    flagged_task_ids: list[int]
    ranking: pd.DataFrame
    push: PushResult | None
    url: str | None
    seconds: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None

    def summary(self) -> str:
        """A few human-readable lines: what was ranked, what was pushed, and where to look."""
        lines = [
            f"project {self.project_id}: {self.n_tasks} tasks, {self.n_labeled} labeled and ranked "
            f"({self.n_unlabeled} without a usable label left out); model {self.model}, method {self.method}",
            f"flagged the top {self.n_flagged} items (task ids {_preview(self.flagged_task_ids)})",
        ]
        if self.push is not None:
            lines.append(self.push.summary())
        if self.report_path is not None:
            lines.append(f"report written to {self.report_path} (ranking.csv and ranking.parquet beside it)")
        timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.seconds.items())
        lines.append(f"time: {timing}")
        return "\n".join(lines)


def _preview(ids: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(task_id) for task_id in ids[:limit])
    return shown + (f", … ({len(ids)} in all)" if len(ids) > limit else "")


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


def featurize(dataset: LabeledDataset, model: str, image_size: int | None = None) -> tuple[np.ndarray, Any]:
    """Features for ``model``: (n, d) floats, or (n, C, H, W) pixel arrays for the CNN.

    Uses :func:`relabel.featurizers.featurizer_for` (text → TF-IDF, image → pixels, tabular → standardised
    numbers). ``image_size`` overrides the featurizer's image side length (e.g. 8 for sklearn-digits-like
    images). Returns the features and the ``image_shape`` to hand to the CNN (None otherwise).
    """
    from relabel.featurizers import featurizer_for

    options: dict[str, Any] = {}
    if image_size is not None and dataset.kind == "image":
        options["size"] = (int(image_size), int(image_size))
    featurizer = featurizer_for(dataset.kind, **options)
    if model == "cnn":
        if dataset.kind != "image":
            raise InputError(f"model 'cnn' needs an image project; this one is {dataset.kind}")
        arrays = np.asarray(featurizer.image_arrays(dataset.inputs), dtype=np.float64)
        return arrays, tuple(int(side) for side in arrays.shape[1:])
    X = np.asarray(featurizer.fit_transform(dataset.inputs), dtype=np.float64)
    return X.reshape(len(X), -1), None


def ranking_table(dataset: LabeledDataset, scores: pd.DataFrame, method: str, n_flagged: int) -> pd.DataFrame:
    """One row per labeled task, most suspicious first.

    Columns: ``task_id``, ``rank`` (1 = most suspicious by ``method``), ``current_label``,
    ``suggested_label`` (the model's prediction), ``predicted_probability``, one column per scoring method
    (raw scores, higher = more suspicious), ``suspicion`` (normalised to [0, 1]), ``flagged``, and the
    label's provenance (``annotation_id``, ``annotator``, ``n_annotations``, ``disagreement``).
    """
    from connectors.label_studio_queue import normalised_suspicion

    classes = list(dataset.classes)

    def class_name(value: Any) -> str:
        if value in classes:
            return str(value)
        return str(classes[int(value)])

    table = pd.DataFrame(
        {
            "task_id": np.asarray(dataset.ids, dtype=np.int64),
            "current_label": np.asarray(dataset.labels, dtype=object),
            "suggested_label": [class_name(value) for value in scores["predicted_class"]],
            "predicted_probability": scores["predicted_probability"].to_numpy(),
        }
    )
    score_columns = [c for c in scores.columns if c in ("self_influence", "loss", "margin", "random")]
    for column in score_columns:
        table[column] = scores[column].to_numpy()
    table["suspicion"] = normalised_suspicion(scores[method].to_numpy())
    provenance = dataset.provenance.reindex(dataset.ids)
    for column in ("annotation_id", "annotator", "n_annotations", "disagreement"):
        if column in provenance.columns:
            table[column] = provenance[column].to_numpy()
    filled = np.where(np.isnan(table[method].to_numpy()), -np.inf, table[method].to_numpy())
    table = (
        table.assign(_order=-filled).sort_values(["_order", "task_id"], kind="stable").drop(columns="_order")
    )
    table.insert(1, "rank", np.arange(1, len(table) + 1))
    table["flagged"] = table["rank"] <= n_flagged
    return table.reset_index(drop=True)


def run_audit(
    connector: Any,
    project_id: int,
    *,
    model: str = "logistic",
    method: str = "self_influence",
    top: int | None = None,
    top_fraction: float | None = None,
    queue: str = "view",
    control: str | None = None,
    report_dir: str | Path | None = None,
    progress: bool = True,
    push: bool = True,
    image_size: int | None = None,
    seed: int = 0,
    l2: float = 1e-3,
    write_mislabeling: bool = True,
) -> AuditResult:
    """Pull ``project_id`` through ``connector``, rank its labeled items, push the top ones for review.

    ``model``: logistic (exact self-influence), mlp or cnn (LiSSA). ``method``: the score that picks the
    flagged items (self_influence, loss, margin or random). ``top``/``top_fraction``: how many to flag (see
    :func:`number_to_flag`; default 5 %, at least 1). ``queue``: "view" (predictions + a Data Manager view in
    the project) or "project" (a separate review project). ``control``: the Choices control when the config
    has several. ``report_dir``: write ``ranking.csv``, ``ranking.parquet`` and
    ``report.html`` there. ``push=False`` ranks without writing to Label
    Studio. ``image_size``: side length images are resized to before featurizing. ``seed``/``l2``: passed to
    :func:`relabel.rank`. Raises :class:`relabel.errors.RelabelError` subclasses for anything the user can
    fix.
    """
    from relabel.ranking import SuspicionScorer

    if model not in MODELS:
        raise InputError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    dataset = connector.pull(project_id, control=control, progress=progress)
    seconds["pull"] = time.perf_counter() - started
    if len(dataset) == 0:
        raise InputError(
            f"project {project_id} has no labeled tasks ({len(dataset.unlabeled_ids)} tasks without a usable "
            "label); annotate some tasks first"
        )

    started = time.perf_counter()
    X, image_shape = featurize(dataset, model, image_size=image_size)
    seconds["featurize"] = time.perf_counter() - started

    started = time.perf_counter()
    methods = (method,) if method == "loss" else (method, "loss")
    options: dict[str, Any] = {"progress": progress}
    if image_shape is not None:
        options["image_shape"] = image_shape
    scorer = SuspicionScorer(model=model, seed=seed, l2=l2, **options)
    scorer.fit(X, list(dataset.labels), classes=list(dataset.classes), item_ids=list(dataset.ids))
    scores = scorer.scores(methods)
    seconds["rank"] = time.perf_counter() - started

    n_flagged = number_to_flag(len(dataset), top, top_fraction)
    table = ranking_table(dataset, scores, method, n_flagged)
    flagged: list[FlaggedItem] = flagged_items(
        table["task_id"].to_numpy(),
        table[method].to_numpy(),
        table["suggested_label"].tolist(),
        table["current_label"].tolist(),
        top=n_flagged,
    )

    push_result: PushResult | None = None
    if push:
        started = time.perf_counter()
        review_queue = ReviewQueue(connector, progress=progress, write_mislabeling=write_mislabeling)
        push_result = review_queue.push(project_id, flagged, mode=queue, method=method, control=control)
        seconds["push"] = time.perf_counter() - started

    report_path: Path | None = None
    if report_dir is not None:
        from relabel.report import write_audit_report

        started = time.perf_counter()
        paths = write_audit_report(report_dir, dataset, scorer, table, method=method, n_flagged=n_flagged)
        report_path = paths["report_html"]
        seconds["report"] = time.perf_counter() - started

    source = dataset.source or {}
    return AuditResult(
        project_id=int(project_id),
        model=model,
        method=method,
        queue=queue,
        n_tasks=int(source.get("n_tasks", len(dataset) + len(dataset.unlabeled_ids))),
        n_labeled=len(dataset),
        n_unlabeled=len(dataset.unlabeled_ids),
        n_features=int(np.prod(X.shape[1:])),
        n_flagged=len(flagged),
        flagged_task_ids=[item.task_id for item in flagged],
        ranking=table,
        push=push_result,
        url=push_result.url if push_result is not None else None,
        seconds=seconds,
        report_path=report_path,
    )
