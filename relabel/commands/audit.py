"""``relabel audit``: rank a Label Studio project's labeled items and push the top ones for review.

Also holds the Label Studio connection options shared by ``relabel sync`` and ``relabel undo``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from relabel.errors import RelabelError

API_KEY_ENV = "LABEL_STUDIO_API_KEY"
URL_ENV = "LABEL_STUDIO_URL"

CONNECTION_HELP = f"""
connection:
  The server URL comes from --url or ${URL_ENV}; the API token from --api-key-file (a file holding
  only the token) or ${API_KEY_ENV}. Use a Personal Access Token (Account & Settings → Personal Access
  Token) or, where the organization allows them, a legacy token. The token is never printed.
"""

AUDIT_EPILOG = (
    """
examples:
  export LABEL_STUDIO_URL=http://localhost:8080
  export LABEL_STUDIO_API_KEY=...                      # or: --api-key-file ~/.config/ls-token
  relabel audit --project 3                            # top 5 % by self-influence, as a view in project 3
  relabel audit --project 3 --top 200 --queue project  # a separate review project, in rank order
  relabel audit --project 3 --model cnn --top-fraction 0.1 --report reports/p3
  relabel audit --project 3 --method loss              # the baseline ranking, for comparison

what it writes (re-running updates it; nothing is duplicated, no annotation is ever changed):
  --queue view     in the project: one prediction per flagged task (model_version relabel-<method>,
                   score = normalised suspicion, result = the model's suggested label) and a Data
                   Manager tab "relabel: review queue" showing only the flagged tasks.
  --queue project  a project "<title> — relabel review" with copies of the flagged tasks in rank
                   order (Sequential sampling), the current label pre-filled; after review run
                   `relabel sync --project ID` to copy the decisions back as new annotations.
  `relabel undo --project ID` removes all of it again.
"""
    + CONNECTION_HELP
)


def add_connection_arguments(parser: argparse.ArgumentParser, *, project_required: bool = True) -> None:
    """``--url``, ``--project``, ``--api-key-file``: where the Label Studio project is and how to log in."""
    group = parser.add_argument_group("Label Studio")
    group.add_argument(
        "--url",
        default=None,
        help=f"Label Studio base URL, e.g. http://localhost:8080 (default: ${URL_ENV})",
    )
    group.add_argument(
        "--project", type=int, required=project_required, metavar="ID", help="the project id (in its URL)"
    )
    group.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"file holding the API token (default: ${API_KEY_ENV})",
    )


def read_api_key(path: Path | None) -> str:
    """The API token from ``path`` (stripped) or ``$LABEL_STUDIO_API_KEY``; RelabelError if neither."""
    if path is not None:
        try:
            key = Path(path).expanduser().read_text().strip()
        except OSError as error:
            raise RelabelError(f"cannot read the API key file {path}: {error.strerror or error}") from None
        if not key:
            raise RelabelError(f"the API key file {path} is empty; put the Label Studio token in it")
        return key
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise RelabelError(
            f"no Label Studio API token: set {API_KEY_ENV} or pass --api-key-file PATH "
            "(Account & Settings → Personal Access Token in Label Studio)"
        )
    return key


def connector_from_args(args: argparse.Namespace) -> Any:
    """A :class:`connectors.label_studio.LabelStudioConnector` for the URL and the API key of ``args``."""
    from connectors.label_studio import LabelStudioConnector

    url = args.url or os.environ.get(URL_ENV, "").strip()
    if not url:
        raise RelabelError(
            f"no Label Studio URL: pass --url URL or set {URL_ENV} (e.g. http://localhost:8080)"
        )
    return LabelStudioConnector(url, read_api_key(args.api_key_file))


def register(subparsers: Any) -> None:
    """Add the ``audit`` subcommand."""
    parser = subparsers.add_parser(
        "audit",
        help="rank a Label Studio project's labels and push the most suspicious for review",
        description=(
            "Pull a Label Studio classification project, fit a model to its labels, score every labeled "
            "task by self-influence (Koh & Liang 2017; higher = the model had to bend more to fit that "
            "label), and push the top tasks back to Label Studio as a review queue. Progress bars go to "
            "stderr; the summary, with the URL to open, to stdout."
        ),
        epilog=AUDIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(parser, project_required=False)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="TOML",
        help="nightly mode: audit every project listed in this TOML file (see scripts/nightly_audit.py); "
        "a state file keeps reviewed items from being flagged again and a lock stops overlapping runs",
    )
    ranking = parser.add_argument_group("ranking")
    ranking.add_argument(
        "--model",
        choices=("logistic", "mlp", "cnn"),
        default="logistic",
        help="logistic: exact self-influence (default); mlp / cnn (images): LiSSA estimate",
    )
    ranking.add_argument(
        "--method",
        choices=("self_influence", "loss", "margin", "random"),
        default="self_influence",
        help="score that picks the flagged tasks (default: self_influence; loss is the usual baseline)",
    )
    how_many = ranking.add_mutually_exclusive_group()
    how_many.add_argument("--top", type=int, metavar="N", help="flag the N most suspicious tasks")
    how_many.add_argument(
        "--top-fraction",
        type=float,
        metavar="F",
        help="flag this share of the labeled tasks, e.g. 0.1 (default: 0.05, at least one task)",
    )
    ranking.add_argument(
        "--control",
        metavar="NAME",
        help="the <Choices> control to read labels from, when the labeling config has several",
    )
    ranking.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help="resize images to PX×PX before featurizing (default: the featurizer's)",
    )
    ranking.add_argument("--seed", type=int, default=0, help="random seed for model fitting (default: 0)")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--queue",
        choices=("view", "project"),
        default="view",
        help="view: predictions + a Data Manager tab in the project (default); project: a review project",
    )
    output.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write DIR/report.html, DIR/ranking.csv and DIR/ranking.parquet",
    )
    output.add_argument(
        "--dry-run", action="store_true", help="rank and report, but write nothing to Label Studio"
    )
    output.add_argument(
        "--no-mislabeling-field",
        action="store_true",
        help=(
            "view mode: do not write each prediction's `mislabeling` field (Label Studio sets it one "
            "prediction per request, ≈0.15 s each on a local server; `score` holds the same number)"
        ),
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``relabel audit``; returns the exit code."""
    from relabel.audit import run_audit

    if args.config is not None:
        from relabel.nightly import run_nightly

        return run_nightly(args.config, push=not args.dry_run)
    if args.project is None:
        raise RelabelError("give --project ID (or --config audit.toml for the nightly multi-project mode)")
    if args.top is not None and args.top < 1:
        raise RelabelError(f"--top must be at least 1; got {args.top}")
    if args.top_fraction is not None and not 0 < args.top_fraction <= 1:
        raise RelabelError(f"--top-fraction must be in (0, 1]; got {args.top_fraction}")
    connector = connector_from_args(args)
    result = run_audit(
        connector,
        args.project,
        model=args.model,
        method=args.method,
        top=args.top,
        top_fraction=args.top_fraction,
        queue=args.queue,
        control=args.control,
        report_dir=args.report,
        progress=not args.no_progress and sys.stderr.isatty(),
        push=not args.dry_run,
        image_size=args.image_size,
        seed=args.seed,
        write_mislabeling=not args.no_mislabeling_field,
    )
    print(result.summary())
    if result.url:
        print(f"open: {result.url}")
    return 0
