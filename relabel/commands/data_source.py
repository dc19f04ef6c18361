"""Where ``relabel compare`` and ``relabel explain`` read their items: a file, a Label Studio project, or a
scikit-learn toy dataset; and how those items become the feature matrix the logistic model is fitted to.

Features are made exactly as ``relabel audit`` makes them (:func:`relabel.audit.featurize`), so a ranking,
an explanation and a comparison computed here describe the same model an audit fits.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.errors import InputError

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer")


@dataclass
class LoadedItems:
    """Items ready for the model.

    ``ids`` (n,) item ids (file id column / row number, task ids, or row numbers for toy datasets);
    ``X`` (n, d) float64 features; ``y`` (n,) int64 class indices into ``classes``; ``labels`` the given
    labels as strings; ``columns``: extra per-item columns read from the file (e.g. a known-error column),
    indexed like ``ids``; ``inputs``/``kind``: the raw inputs (for thumbnails/snippets); ``description``: a
    short line naming the source.
    """

    ids: np.ndarray
    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    labels: np.ndarray
    kind: str
    inputs: Any
    description: str
    columns: pd.DataFrame = field(default_factory=pd.DataFrame)
    source: dict[str, Any] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None
    connector: Any = None


def add_data_source_arguments(parser: argparse.ArgumentParser, *, extra_columns: bool = False) -> None:
    """DATA (a file) | --dataset NAME | --url/--project (Label Studio), plus the file's column options."""
    parser.add_argument(
        "data", nargs="?", type=Path, help="CSV, TSV, Parquet or JSONL file with a label column"
    )
    source = parser.add_argument_group("data source (one of: DATA, --dataset, --project)")
    source.add_argument(
        "--dataset",
        choices=SKLEARN_DATASETS,
        help="a scikit-learn toy dataset instead of a file (features scaled to [0, 1])",
    )
    source.add_argument(
        "--label-column", default="label", help="file column holding the label (default: label)"
    )
    source.add_argument("--id-column", help="file column holding item ids (default: the row number from 0)")
    source.add_argument("--text-column", help="file column holding text (TF-IDF features); default: tabular")
    source.add_argument(
        "--feature-columns", help="comma-separated numeric feature columns (default: all other columns)"
    )
    source.add_argument("--url", help="Label Studio base URL (default: $LABEL_STUDIO_URL)")
    source.add_argument("--project", type=int, metavar="ID", help="Label Studio project id")
    source.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help="file holding the token (default: $LABEL_STUDIO_API_KEY)",
    )
    source.add_argument(
        "--control", metavar="NAME", help="the <Choices> control, when the config has several"
    )
    source.add_argument(
        "--image-size", type=int, metavar="PX", help="resize images to PX×PX before featurizing"
    )
    if extra_columns:
        source.add_argument(
            "--error-column",
            metavar="COL",
            help="file column marking known label errors (1/true/yes); used instead of injected noise",
        )
        source.add_argument(
            "--true-label-column",
            metavar="COL",
            help="file column with the right label of each known error (used to fix and refit)",
        )


def _read_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t")
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix == ".jsonl":
        return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    raise InputError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .parquet or .jsonl")


def load_sklearn_dataset(name: str) -> LoadedItems:
    """A scikit-learn toy dataset; features min-max scaled to [0, 1] per column (digits: divided by 16)."""
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    bunch = loader()
    X = np.asarray(bunch.data, dtype=np.float64)
    span = X.max(axis=0) - X.min(axis=0)
    X = (X - X.min(axis=0)) / np.where(span > 0, span, 1.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    classes = [str(name) for name in getattr(bunch, "target_names", range(y.max() + 1))]
    return LoadedItems(
        ids=np.arange(len(y)),
        X=X,
        y=y,
        classes=classes,
        labels=np.array([classes[k] for k in y], dtype=object),
        kind="tabular",
        inputs=pd.DataFrame(X),
        description=f"sklearn {name} ({len(y)} items, {X.shape[1]} features, {len(classes)} classes)",
        source={"type": "sklearn", "name": name},
    )


def load_items(
    args: argparse.Namespace, *, needed_columns: tuple[str | None, ...] = (), model: str = "logistic"
) -> LoadedItems:
    """Load the items named by ``args`` (see :func:`add_data_source_arguments`) and featurize them.

    ``model``: "cnn" keeps images as (n, C, H, W) arrays (``image_shape`` set), any other model gets
    flat (n, d) rows. ``needed_columns``: extra file columns to read (kept out of the features)
    into ``LoadedItems.columns``.
    """
    from relabel.audit import featurize

    chosen = [
        name
        for name, value in (("DATA", args.data), ("--dataset", args.dataset), ("--project", args.project))
        if value is not None
    ]
    if len(chosen) != 1:
        raise InputError(
            "name exactly one data source: a file (DATA), --dataset NAME, or --project ID (Label Studio)"
            + (f"; got {', '.join(chosen)}" if chosen else "")
        )
    if args.dataset is not None:
        return load_sklearn_dataset(args.dataset)

    needed = [column for column in needed_columns if column]
    extra = pd.DataFrame()
    connector = None
    if args.data is not None:
        from connectors.files import load_file_dataset

        path = Path(args.data)
        feature_columns = args.feature_columns.split(",") if args.feature_columns else None
        if needed and feature_columns is None and args.text_column is None:
            header = _read_frame(path).columns
            excluded = {args.label_column, args.id_column, *needed}
            feature_columns = [str(column) for column in header if column not in excluded]
        dataset = load_file_dataset(
            path,
            args.label_column,
            id_column=args.id_column,
            feature_columns=feature_columns,
            text_column=args.text_column,
        )
        if needed:
            frame = _read_frame(path)
            for column in needed:
                if column not in frame.columns:
                    raise InputError(
                        f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))})"
                    )
            frame.index = frame[args.id_column] if args.id_column else pd.RangeIndex(len(frame))
            extra = frame.loc[dataset.ids, needed]
        description = f"{path.name} ({len(dataset)} items, {len(dataset.classes)} classes)"
    else:
        from relabel.commands.audit import connector_from_args

        connector = connector_from_args(args)
        dataset = connector.pull(args.project, control=args.control, progress=False)
        if len(dataset) == 0:
            raise InputError(f"project {args.project} has no labeled tasks")
        description = f"Label Studio project {args.project} ({len(dataset)} labeled tasks)"
    X, image_shape = featurize(dataset, model, image_size=getattr(args, "image_size", None))
    return LoadedItems(
        ids=np.asarray(dataset.ids),
        X=X,
        y=dataset.label_indices(),
        classes=[str(name) for name in dataset.classes],
        labels=np.asarray(dataset.labels, dtype=object),
        kind=dataset.kind,
        inputs=dataset.inputs,
        description=description,
        columns=extra,
        source=dict(dataset.source or {}),
        image_shape=image_shape,
        connector=connector if args.data is None else None,
    )


def truthy(values: pd.Series) -> np.ndarray:
    """Read a known-error column: 1/true/yes/y/t (any case) → True; 0/false/no/empty/NaN → False."""

    def one(value: Any) -> bool:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return False
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, float, np.integer, np.floating)):
            return value != 0
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "y", "t"):
            return True
        if text in ("", "0", "false", "no", "n", "f", "nan"):
            return False
        raise InputError(f"known-error column value {value!r} is not one of 1/0, true/false, yes/no")

    return np.array([one(value) for value in values.tolist()], dtype=bool)


@dataclass
class ReviewedErrors:
    """Known label errors from reviewers' decisions recorded by ``relabel sync``.

    ``given``: (n,) class indices of the labels as they were *before* the review (what the rankers see);
    ``is_error``: (n,) True where a reviewer changed the label; ``true``: (n,) the reviewer's label where
    reviewed, else the given label; ``n_reviewed``: items with a recorded decision.
    """

    given: np.ndarray
    is_error: np.ndarray
    true: np.ndarray
    n_reviewed: int


def known_errors_from_sync(
    connector: Any, project_id: int, items: LoadedItems, control: str | None
) -> ReviewedErrors:
    """Read the decisions ``relabel sync`` added to the source project (annotations whose region id starts
    with ``relabel-sync-``) and turn them into known errors.

    For a task with such a decision: the label before review is its latest valid annotation that is *not* a
    sync decision, the true label is the latest decision. Tasks nobody reviewed keep their current label
    and count as correct, so the evaluation can only credit errors reviewers actually looked at (and those
    were chosen by one ranking method: read the comparison with that bias in mind).
    """
    from connectors.label_studio_queue import SYNC_REGION_PREFIX, LabelTarget

    project = connector.request_json("GET", f"/api/projects/{int(project_id)}")
    target = LabelTarget.from_config(project.get("label_config") or "", control)
    tasks = connector.request_json(
        "GET",
        f"/api/projects/{int(project_id)}/export",
        params={"exportType": "JSON", "download_all_tasks": "true"},
    )
    lookup = {name: index for index, name in enumerate(items.classes)}
    before_and_after: dict[int, tuple[str, str]] = {}
    for task in tasks:
        valid = [a for a in task.get("annotations") or [] if not a.get("was_cancelled") and a.get("result")]
        valid.sort(key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))
        decisions = [
            a
            for a in valid
            if any(str(r.get("id") or "").startswith(SYNC_REGION_PREFIX) for r in a["result"])
        ]
        originals = [a for a in valid if a not in decisions]
        if not decisions or not originals:
            continue
        before = target.label_of(originals[-1]["result"])
        after = target.label_of(decisions[-1]["result"])
        if before in lookup and after in lookup:
            before_and_after[int(task["id"])] = (before, after)
    given = items.y.copy()
    true = items.y.copy()
    for position, task_id in enumerate(items.ids.tolist()):
        if int(task_id) in before_and_after:
            before, after = before_and_after[int(task_id)]
            given[position], true[position] = lookup[before], lookup[after]
    if not before_and_after:
        raise InputError(
            f"project {project_id} holds no reviewer decisions recorded by `relabel sync`; review the "
            "relabel review project and run `relabel sync` first, or inject noise with --noise"
        )
    return ReviewedErrors(given, given != true, true, len(before_and_after))
