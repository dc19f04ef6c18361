"""``relabel compare``: does self-influence find label errors better than sorting by loss, on this data?

See :mod:`relabel.comparison` for the protocol and the metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from relabel.errors import InputError, shown

EPILOG = """
examples:
  relabel compare --dataset digits --noise uniform --rate 0.1 --seeds 0,1,2 --out reports/compare
  relabel compare reviews.csv --text-column text --features tfidf,embeddings   # which text features help
  relabel compare data.csv --label-column label --noise pair --rate 0.2 --out reports/compare
  relabel compare data.csv --label-column label --error-column is_wrong --true-label-column fixed
  relabel compare --url http://localhost:8080 --project 3 --noise uniform --rate 0.1
  relabel compare --url http://localhost:8080 --project 3 --errors-from-sync   # after review + relabel sync

what it writes (in --out):
  comparison.csv           one row per method: mean and std over seeds of every metric
  comparison_per_seed.csv  one row per (seed, method)
  comparison_curves.csv    errors found vs fraction checked, per method (the plot's data)
  comparison.png           fraction of errors found vs fraction of data checked (Koh & Liang, Fig. 6)

metrics: found_at_Xpct = share of the errors among the top X % of the training items; auroc and
average_precision of the score as an error detector; test_accuracy_fixed = held-out accuracy after the
errors among the top --fix-fraction are given their true labels back and the model is refitted.
"""


def parse_seeds(text: str) -> tuple[int, ...]:
    """ "0,1,2" → (0, 1, 2); "0-4" → (0, 1, 2, 3, 4)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                start, end = part.split("-", 1)
                seeds.extend(range(int(start), int(end) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise InputError(f"--seeds must be integers like 0,1,2 or 0-4; got {text!r}") from None
    if not seeds:
        raise InputError("--seeds is empty")
    return tuple(seeds)


def register(subparsers: Any) -> None:
    """Add the ``compare`` subcommand."""
    from relabel.commands.data_source import add_data_source_options
    from relabel.commands.options import add_json_option, add_model_options, add_progress_options
    from relabel.methods import COMPARISON_METHODS

    parser = subparsers.add_parser(
        "compare",
        help="measure how well each ranking method finds label errors (injected or known)",
        description=(
            "Rank the training items with every method (self_influence, loss, margin, confident_learning, "
            "random), check them in rank order, and report how many label errors each finds: errors are "
            "injected (--noise) or known (--error-column). Averages over seeds with their spread."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_source_options(parser, extra_columns=True)
    add_model_options(parser, model=False, method=False, seed=False, several_features=True)
    errors = parser.add_argument_group("errors to find")
    errors.add_argument(
        "--noise",
        choices=("uniform", "pair", "none"),
        default=None,
        help="inject flips: uniform (to any other class) or pair (class k → k+1 mod K); default: uniform "
        "unless --error-column is given",
    )
    errors.add_argument(
        "--errors-from-sync",
        action="store_true",
        help="Label Studio: the known errors are the labels reviewers changed, as recorded by `relabel sync`",
    )
    errors.add_argument(
        "--rate", type=float, default=0.1, help="fraction of training labels flipped (default 0.1)"
    )
    errors.add_argument("--seeds", default="0,1,2", help="seeds, e.g. 0,1,2 or 0-4 (default 0,1,2)")
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument(
        "--methods",
        default=",".join(COMPARISON_METHODS),
        help=f"comma-separated methods (default: {','.join(COMPARISON_METHODS)})",
    )
    protocol.add_argument("--folds", type=int, default=5, help="k of the k-fold CV for confident_learning")
    protocol.add_argument(
        "--checked", default="0.05,0.1,0.2,0.3", help="fractions checked to report (default 0.05,0.1,0.2,0.3)"
    )
    protocol.add_argument(
        "--fix-fraction", type=float, default=0.1, help="fraction checked before fix-and-refit (default 0.1)"
    )
    protocol.add_argument("--test-fraction", type=float, default=0.2, help="held-out test part (default 0.2)")
    parser.add_argument(
        "--out", type=Path, default=Path("comparison"), help="output folder (default ./comparison)"
    )
    add_json_option(parser)
    add_progress_options(parser)
    parser.set_defaults(func=run)


def comparison_config(args: argparse.Namespace) -> Any:
    """The :class:`relabel.comparison.ComparisonConfig` the flags describe (noise source checked here)."""
    from relabel.commands.options import show_progress
    from relabel.comparison import ComparisonConfig

    known = args.error_column or args.errors_from_sync
    noise = args.noise or ("none" if known else "uniform")
    if noise != "none" and known:
        raise InputError("give either --noise or --error-column / --errors-from-sync, not both")
    if noise == "none" and not known:
        raise InputError(
            "--noise none needs --error-column COL or --errors-from-sync naming the known errors"
        )
    if args.errors_from_sync and args.project is None:
        raise InputError("--errors-from-sync reads a Label Studio project: give --url and --project")
    try:
        checked = tuple(float(value) for value in args.checked.split(","))
    except ValueError:
        raise InputError(f"--checked must be fractions like 0.05,0.1; got {args.checked!r}") from None
    config = ComparisonConfig(
        methods=tuple(method.strip() for method in args.methods.split(",") if method.strip()),
        noise=None if noise == "none" else noise,
        rate=args.rate,
        seeds=parse_seeds(args.seeds),
        checked_fractions=checked,
        fix_fraction=args.fix_fraction,
        test_fraction=args.test_fraction,
        cv_folds=args.folds,
        l2=args.l2,
        progress=show_progress(args),
    )
    config.validate()
    return config


def known_errors_from_file(args: argparse.Namespace, items: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(known errors, true labels or None) from the file's ``--error-column`` / ``--true-label-column``."""
    from relabel.commands.data_source import truthy

    if args.data is None:
        raise InputError("--error-column needs a file (DATA)")
    columns = items.dataset.extra_columns
    known_errors = truthy(columns[args.error_column])
    if not args.true_label_column:
        return known_errors, None
    lookup = {name: index for index, name in enumerate(items.dataset.classes)}
    true_labels = items.y.copy()
    for position in np.flatnonzero(known_errors):
        raw = columns[args.true_label_column].iloc[position]
        text = str(int(raw)) if isinstance(raw, float) and float(raw).is_integer() else str(raw)
        if text not in lookup:
            raise InputError(
                f"item {shown(items.dataset.ids[position])}: true label {shown(raw)} in "
                f"{args.true_label_column!r} is not one of the classes "
                f"{shown(list(items.dataset.classes), 200)}"
            )
        true_labels[position] = lookup[text]
    return known_errors, true_labels


def errors_to_find(args: argparse.Namespace, items: Any, config: Any) -> tuple[Any, Any, Any, str]:
    """(labels the rankers see, known errors or None, true labels or None, description of the source)."""
    from relabel.commands.data_source import known_errors_from_sync

    if args.errors_from_sync:
        reviewed = known_errors_from_sync(args, items)
        description = (
            f"{items.description}; {reviewed.n_reviewed} reviewed, {int(reviewed.is_error.sum())} labels "
            "changed by reviewers (relabel sync)"
        )
        return reviewed.given, reviewed.is_error, reviewed.true, description
    if config.noise is None:
        known_errors, true_labels = known_errors_from_file(args, items)
        return (
            items.y,
            known_errors,
            true_labels,
            f"{items.description}; {int(known_errors.sum())} known errors",
        )
    return items.y, None, None, f"{items.description}; {config.noise} noise at rate {config.rate:g}"


def run(args: argparse.Namespace) -> int:
    """Run ``relabel compare``; prints the summary table and the files written."""
    from relabel.commands.data_source import load_items
    from relabel.commands.options import print_json, show_progress
    from relabel.comparison import compare_methods
    from relabel.feature_comparison import compare_feature_sets, parse_feature_sets
    from relabel.output import check_writable_folder

    check_writable_folder(args.out, "--out")
    config = comparison_config(args)
    items = load_items(args, needed_columns=(args.error_column, args.true_label_column))
    given_labels, known_errors, true_labels, description = errors_to_find(args, items, config)
    description += f"; {len(config.seeds)} seed(s)"
    common = {
        "n_classes": len(items.dataset.classes),
        "known_errors": known_errors,
        "true_labels": true_labels,
        "description": description,
    }
    feature_sets = parse_feature_sets(args.features)
    if len(feature_sets) > 1:  # the feature set as one more dimension of the comparison (text items)
        if items.dataset.kind != "text":
            raise InputError(f"--features {args.features}: several feature sets apply to text items only")
        options = {"device": args.device, "progress": show_progress(args)}
        result = compare_feature_sets(
            items.dataset.inputs, given_labels, feature_sets, config, featurizer_options=options, **common
        )
    else:
        result = compare_methods(items.X, given_labels, config, **common)
    paths = result.write(args.out)
    if args.json:
        methods = result.summary.to_dict(orient="records")
        files = {name: str(path) for name, path in paths.items()}
        print_json({"command": "compare", "description": description, "methods": methods, "files": files})
        return 0
    print(description)
    print(result.table())
    for name, path in paths.items():
        print(f"{name}: {path}", file=sys.stdout)
    return 0
