"""Where ``relabel compare`` and ``relabel explain`` read their items: a file, a Label Studio project, or a
scikit-learn toy dataset; and the feature matrix of those items.

Features are made exactly as ``relabel audit`` makes them (:func:`relabel.featurizers.featurize`), so a
ranking, an explanation and a comparison computed here describe the same model an audit fits.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.commands.options import add_connection_options, add_file_options
from relabel.dataset import LabeledDataset
from relabel.errors import InputError, shown

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer")


def add_data_source_options(parser: argparse.ArgumentParser, *, extra_columns: bool = False) -> None:
    """DATA (a file) | --dataset NAME | --project ID (Label Studio), with the file's column options."""
    add_file_options(parser, data_required=False)
    parser.add_argument(
        "--dataset",
        choices=SKLEARN_DATASETS,
        help="a scikit-learn toy dataset instead of a file (features scaled to [0, 1])",
    )
    add_connection_options(parser, project_required=False)
    if extra_columns:
        group = parser.add_argument_group("known errors in the file")
        group.add_argument(
            "--error-column",
            metavar="COL",
            help="file column marking known label errors (1/true/yes); used instead of injected noise",
        )
        group.add_argument(
            "--true-label-column",
            metavar="COL",
            help="file column with the right label of each known error (used to fix and refit)",
        )


@dataclass
class Features:
    """A dataset and the feature matrix the model is fitted to: ``X`` (n, d) float64, or (n, C, H, W) for
    the CNN with ``image_shape`` (C, H, W); ``description``: one line naming the source; ``model``: the
    model the features are for (what ``auto`` chose, with ``model_choice``, when it was asked for)."""

    dataset: LabeledDataset
    X: np.ndarray
    image_shape: tuple[int, ...] | None
    description: str
    model: str = "logistic"
    model_choice: Any = None

    @property
    def y(self) -> np.ndarray:
        """Class indices of the given labels."""
        return self.dataset.label_indices()


def load_sklearn_dataset(name: str) -> Features:
    """A scikit-learn toy dataset; features min-max scaled to [0, 1] per column (digits: divided by 16)."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    X = np.asarray(bunch.data, dtype=np.float64)
    span = X.max(axis=0) - X.min(axis=0)
    X = (X - X.min(axis=0)) / np.where(span > 0, span, 1.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    classes = [str(label) for label in getattr(bunch, "target_names", range(y.max() + 1))]
    ids = np.arange(len(y))
    dataset = LabeledDataset(
        ids=ids,
        inputs=pd.DataFrame(X),
        kind="tabular",
        labels=np.array([classes[k] for k in y], dtype=object),
        classes=classes,
        provenance=pd.DataFrame(index=pd.Index(ids, name="id")),
        source={"type": "sklearn", "name": name},
    )
    description = f"sklearn {name} ({len(y)} items, {X.shape[1]} features, {len(classes)} classes)"
    return Features(dataset, X, None, description)


def _file_dataset(args: argparse.Namespace, needed: list[str]) -> LabeledDataset:
    from connectors.files import load_file_dataset, read_table

    path = Path(args.data)
    feature_columns = args.feature_columns.split(",") if args.feature_columns else None
    frame = read_table(path) if needed else None
    if frame is not None and feature_columns is None and args.text_column is None:
        excluded = {args.label_column, args.id_column, *needed}
        feature_columns = [str(column) for column in frame.columns if column not in excluded]
    dataset = load_file_dataset(
        path,
        args.label_column,
        id_column=args.id_column,
        feature_columns=feature_columns,
        text_column=args.text_column,
    )
    if frame is not None:
        missing = [column for column in needed if column not in frame.columns]
        if missing:
            raise InputError(
                f"{path}: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})"
            )
        frame.index = frame[args.id_column] if args.id_column else pd.RangeIndex(len(frame))
        dataset.extra_columns = frame.loc[dataset.ids, needed]
    return dataset


def load_items(
    args: argparse.Namespace, *, needed_columns: tuple[str | None, ...] = (), model: str = "logistic"
) -> Features:
    """The items named by ``args`` (see :func:`add_data_source_options`), featurized for ``model``.

    ``needed_columns``: extra file columns to read (kept out of the features) into
    ``dataset.extra_columns``.
    """
    from relabel.featurizers import featurize

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
    if args.data is not None:
        dataset = _file_dataset(args, [column for column in needed_columns if column])
        description = f"{Path(args.data).name} ({len(dataset)} items, {len(dataset.classes)} classes)"
    else:
        from relabel.commands.options import connector_from_args
        from relabel.pipeline import pull_labeled

        dataset = pull_labeled(connector_from_args(args), args.project, args.control)
        description = f"Label Studio project {args.project} ({len(dataset)} labeled tasks)"
    from relabel.models.choice import resolve_model

    model, choice = resolve_model(model, dataset, args)
    features = getattr(args, "features", "auto")
    X, image_shape = featurize(
        dataset,
        model,
        image_size=getattr(args, "image_size", None),
        features="auto" if "," in features else features,
        device=getattr(args, "device", "cpu"),
    )
    return Features(dataset, X, image_shape, description, model, choice)


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
        raise InputError(f"known-error column value {shown(value)} is not one of 1/0, true/false, yes/no")

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


def known_errors_from_sync(args: argparse.Namespace, items: Features) -> ReviewedErrors:
    """Known errors from the decisions ``relabel sync`` recorded in the project (see
    ``LabelStudioConnector.reviewed_labels``): the label before review is what the rankers see, the
    reviewer's label is the truth. Tasks nobody reviewed keep their label and count as correct, so the
    evaluation only credits errors reviewers actually looked at (chosen by one ranking method: read the
    comparison with that bias in mind)."""
    from relabel.commands.options import connector_from_args

    decisions = connector_from_args(args).reviewed_labels(args.project, args.control)
    lookup = {name: index for index, name in enumerate(items.dataset.classes)}
    given, true = items.y.copy(), items.y.copy()
    n_reviewed = 0
    for position, task_id in enumerate(items.dataset.ids.tolist()):
        before, after = decisions.get(int(task_id), (None, None))
        if before in lookup and after in lookup:
            given[position], true[position] = lookup[before], lookup[after]
            n_reviewed += 1
    if not n_reviewed:
        raise InputError(
            f"project {args.project} holds no reviewer decisions recorded by `relabel sync`; review the "
            "relabel review project and run `relabel sync` first, or inject noise with --noise"
        )
    return ReviewedErrors(given, given != true, true, n_reviewed)
