"""``relabel rank``: rank the rows of a labeled CSV/Parquet/JSONL file by how suspicious their label is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from relabel.commands.options import add_file_options, add_model_options, add_progress_options, show_progress
from relabel.errors import InputError
from relabel.influence.exact import DEFAULT_MIXED_TOLERANCE, PRECISIONS, PROBE_COUNT
from relabel.methods import SCORE_METHODS
from relabel.scorer import SOLVER_NAMES, SuspicionScorer
from relabel.streaming import DEFAULT_CHUNK_ROWS, DEFAULT_SAMPLE_ROWS

EXAMPLES = """\
examples:
  relabel rank data.csv --label-column label --out ranking.csv
  relabel rank data.parquet --label-column y --id-column item_id --feature-columns f1,f2,f3 \\
      --methods self_influence,loss,margin --out ranking.parquet
  relabel rank reviews.jsonl --label-column sentiment --text-column text --top 50 --out top50.csv
  relabel rank pixels.csv --label-column digit --model cnn --image-shape 1,8,8 --out ranking.csv

The output has one row per input row, most suspicious first (by the first method): the id column
(or `row`, the 0-based row position), the given label, each method's score (higher = more suspicious)
and rank (1 = most suspicious), the model's predicted label and its probability.
self_influence = g_iᵀ H⁻¹ g_i (Koh & Liang 2017), no 1/n factor; loss = −log p(given label);
margin = best other class probability − given-label probability; random = seeded baseline.
"""


def comma_list(text: str) -> list[str]:
    """'a,b , c' → ['a', 'b', 'c'] (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``rank`` subcommand."""
    parser = subparsers.add_parser(
        "rank",
        help="rank the rows of a labeled file by label suspicion",
        description="Fit a model to a labeled file and rank its rows by how suspicious their label is.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_file_options(parser, data_required=True)
    add_model_options(parser, method=False, image_size=False)
    parser.add_argument(
        "--solver",
        choices=SOLVER_NAMES,
        default="auto",
        help="inverse-Hessian solver: auto = exact for logistic, direct or CG by a cost estimate for mlp/cnn "
        "(default: auto)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float64",
        help="exact logistic solver: float64 (default), or mixed: float32 Hessian products and triangular "
        "solves with a float64 Cholesky factor, used only when the estimated relative error (4 × the "
        f"largest error on {PROBE_COUNT} probe items) is ≤ {DEFAULT_MIXED_TOLERANCE:g}, else float64; the "
        "summary prints which ran and the error",
    )
    parser.add_argument(
        "--methods",
        type=comma_list,
        default=["self_influence", "loss"],
        help=f"comma-separated scores, from {','.join(SCORE_METHODS)} (default: self_influence,loss)",
    )
    parser.add_argument(
        "--image-shape",
        type=lambda text: tuple(int(value) for value in comma_list(text)),
        help="C,H,W of each row's pixels for --model cnn (features are read row-major)",
    )
    parser.add_argument(
        "--lissa-damping", type=float, help="LiSSA damping δ (default: 0.01·λ_max for deep models)"
    )
    parser.add_argument("--raw-features", action="store_true", help="do not standardise tabular features")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="tabular CSV/TSV/Parquet, logistic model: read the file in row chunks and keep only H, one "
        "chunk and the per-row scores in memory (peak ≈ 8·(2p² + chunk·(d+1)·c) bytes + 8·n·(methods+3), "
        "whatever n); robust scaling from a uniform sample of --sample-rows rows (exact when the file has "
        "fewer); the summary prints the peak memory",
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        metavar="N",
        help=f"--stream: rows read and processed at a time (default: {DEFAULT_CHUNK_ROWS})",
    )
    parser.add_argument(
        "--sample-rows",
        type=int,
        default=DEFAULT_SAMPLE_ROWS,
        metavar="N",
        help="--stream: rows sampled uniformly for the medians and IQRs of the scaling (default: "
        f"{DEFAULT_SAMPLE_ROWS})",
    )
    parser.add_argument("--top", type=int, metavar="N", help="write only the N (≥ 1) most suspicious rows")
    parser.add_argument("--out", type=Path, required=True, help="output file: .csv or .parquet")
    add_progress_options(parser)
    parser.set_defaults(func=run)


def check_output(path: Path) -> None:
    """InputError (one line) unless ``path`` is a .csv/.parquet name whose folder exists or can be created
    and written (checked before any work; nothing is created)."""
    from relabel.output import check_writable_folder

    if path.suffix.lower() not in {".csv", ".parquet", ".pq"}:
        raise InputError(f"--out {path}: use a .csv or .parquet file name")
    if path.is_dir():
        raise InputError(f"--out {path} is a folder; name a .csv or .parquet file")
    check_writable_folder(path.parent, "--out")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write CSV (spreadsheet-safe text) or Parquet by suffix, mode 0600, creating the folder (0700);
    refuses other suffixes."""
    from relabel.output import write_csv, write_parquet

    check_output(path)
    if path.suffix.lower() == ".csv":
        write_csv(frame, path)
    else:
        write_parquet(frame, path)


def run(args: argparse.Namespace) -> int:
    """Load, featurize, fit, score and write the ranking."""
    from connectors.files import load_file_dataset
    from relabel.featurizers import featurizer_for

    check_output(args.out)
    if args.top is not None and args.top < 1:
        raise InputError(f"--top must be at least 1; got {args.top}")
    if args.id_column is not None and args.id_column == args.label_column:
        raise InputError("--id-column and --label-column name the same column")
    for method in args.methods:
        if method not in SCORE_METHODS:
            raise InputError(f"--methods: unknown method {method!r}; choose from {', '.join(SCORE_METHODS)}")
    if not args.methods:
        raise InputError("--methods is empty; name at least one of " + ", ".join(SCORE_METHODS))
    if args.stream:
        return run_streamed(args)
    dataset = load_file_dataset(
        args.data,
        label_column=args.label_column,
        id_column=args.id_column,
        feature_columns=comma_list(args.feature_columns) if args.feature_columns else None,
        text_column=args.text_column,
    )
    from relabel.models.choice import resolve_model

    model, choice = resolve_model(args.model, dataset, args)
    if dataset.kind == "tabular" and args.raw_features:
        features = dataset.inputs.to_numpy(dtype=float)
    else:
        options = {"device": args.device, "progress": show_progress(args)} if dataset.kind == "text" else {}
        featurizer = featurizer_for(
            dataset.kind, args.features if dataset.kind == "text" else "auto", **options
        )
        features = featurizer.fit_transform(dataset.inputs)
    scorer = SuspicionScorer(
        model=model,
        solver=args.solver,
        l2=args.l2,
        seed=args.seed,
        device=args.device,
        image_shape=args.image_shape,
        damping=args.lissa_damping,
        progress=show_progress(args),
        influence_parameters=args.influence_parameters,
        exact_precision=args.precision,
    )
    scorer.fit(features, dataset.labels, classes=dataset.classes, item_ids=list(dataset.ids))
    if choice is not None:
        print(choice.describe(), file=sys.stderr)
    scores = scorer.scores(tuple(args.methods))
    id_name = args.id_column or "row"
    output = pd.concat(
        [
            pd.DataFrame({id_name: dataset.ids, args.label_column: dataset.labels}),
            scores.drop(columns=["predicted_class", "predicted_probability"]),
            pd.DataFrame(
                {
                    "predicted_label": scores["predicted_class"],
                    "predicted_probability": scores["predicted_probability"],
                }
            ),
        ],
        axis=1,
    )
    output = output.sort_values(f"rank_{args.methods[0]}", kind="stable").reset_index(drop=True)
    if args.top is not None:
        output = output.head(args.top)
    write_table(output, args.out)
    fit = scorer.fit_summary
    print(
        f"ranked {len(dataset)} items ({len(dataset.classes)} classes) with {fit.model} "
        f"(‖∇J‖ = {fit.gradient_norm:.1e}); wrote {len(output)} rows to {args.out}",
        file=sys.stderr,
    )
    if "self_influence" in args.methods:
        print(f"solver {scorer.solver.describe()}", file=sys.stderr)
    return 0


def run_streamed(args: argparse.Namespace) -> int:
    """``--stream``: :func:`relabel.streaming.stream_rank`, then the same output as :func:`run`."""
    from relabel.streaming import stream_rank

    unsupported = {
        "--text-column": args.text_column is not None,
        # auto's only candidate for tabular data is logistic (relabel.models.choice)
        f"--model {args.model}": args.model not in ("logistic", "auto"),
        f"--solver {args.solver}": args.solver not in ("auto", "exact"),
        "--precision mixed": args.precision != "float64",
    }
    refused = [flag for flag, given in unsupported.items() if given]
    if refused:
        raise InputError(
            f"--stream ranks tabular files with the exact logistic model only; drop {', '.join(refused)}"
        )
    if args.chunk_rows < 1 or args.sample_rows < 1:
        raise InputError(
            f"--chunk-rows and --sample-rows must be ≥ 1; got {args.chunk_rows}, {args.sample_rows}"
        )
    ranking = stream_rank(
        args.data,
        args.label_column,
        id_column=args.id_column,
        feature_columns=comma_list(args.feature_columns) if args.feature_columns else None,
        methods=tuple(args.methods),
        l2=args.l2,
        seed=args.seed,
        chunk_rows=args.chunk_rows,
        sample_rows=args.sample_rows,
        raw_features=args.raw_features,
    )
    output = ranking.scores.sort_values(f"rank_{args.methods[0]}", kind="stable").reset_index(drop=True)
    if args.top is not None:
        output = output.head(args.top)
    write_table(output, args.out)
    n = len(ranking.scores)
    scaling = "raw features" if args.raw_features else f"scaling from {ranking.sample_rows:,} sampled rows"
    print(
        f"ranked {n} items ({len(ranking.classes)} classes) with logistic, streamed in chunks of "
        f"{args.chunk_rows:,} rows ({scaling}; ‖∇J‖ = {ranking.fit.gradient_norm:.1e}); wrote {len(output)} "
        f"rows to {args.out}; peak memory {ranking.peak_rss_bytes / 2**20:,.0f} MiB (RSS)",
        file=sys.stderr,
    )
    return 0
