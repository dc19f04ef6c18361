"""``relabel audit``: rank a Label Studio project's labeled items and push the top ones for review."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from relabel.commands.options import (
    CONNECTION_HELP,
    add_connection_options,
    add_model_options,
    add_progress_options,
    connector_from_args,
    show_progress,
)
from relabel.errors import RelabelError
from relabel.settings import QUEUE_MODES, AuditSettings

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
    add_connection_options(parser, project_required=False)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="TOML",
        help="nightly mode: audit every project listed in this TOML file (see scripts/nightly_audit.py); "
        "a state file keeps reviewed items from being flagged again and a lock stops overlapping runs",
    )
    add_model_options(parser)
    how_many = parser.add_argument_group("how many to flag").add_mutually_exclusive_group()
    how_many.add_argument("--top", type=int, metavar="N", help="flag the N most suspicious tasks")
    how_many.add_argument(
        "--top-fraction",
        type=float,
        metavar="F",
        help="flag this share of the labeled tasks, e.g. 0.1 (default: 0.05, at least one task)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--queue",
        choices=QUEUE_MODES,
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
    add_progress_options(parser)
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> AuditSettings:
    """The :class:`AuditSettings` the flags describe (validated there, once)."""
    return AuditSettings(
        model=args.model,
        method=args.method,
        top=args.top,
        top_fraction=args.top_fraction,
        queue=args.queue,
        control=args.control,
        image_size=args.image_size,
        l2=args.l2,
        seed=args.seed,
        write_mislabeling=not args.no_mislabeling_field,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``relabel audit``; returns the exit code.

    The report is written here, after the pipeline (which runs without one): a report folder that cannot be
    created is refused before anything is pulled (exit 2); a report that fails after the push (a full disk)
    does not hide what was pushed: the summary and the URL are printed, then one warning line, exit 1.
    """
    from relabel.output import check_writable_folder
    from relabel.pipeline import run_audit

    if args.config is not None:
        from relabel.nightly import run_nightly

        return run_nightly(args.config, push=not args.dry_run)
    if args.project is None:
        raise RelabelError("give --project ID (or --config audit.toml for the nightly multi-project mode)")
    settings = settings_from_args(args)
    if args.report is not None:
        check_writable_folder(args.report, "--report")
    result = run_audit(
        connector_from_args(args),
        args.project,
        settings,
        push=not args.dry_run,
        report_dir=None,
        progress=show_progress(args),
    )
    report_error = None if args.report is None else write_report(result, args.report)
    print(result.summary())
    if result.url:
        print(f"open: {result.url}")
    if report_error is not None:
        print(f"relabel: warning: the report was not written: {report_error}", file=sys.stderr)
        return 1
    return 0


def write_report(result: Any, report_dir: Path) -> str | None:
    """Write the audit's report into ``report_dir`` and record it in ``result`` (path, seconds); returns
    None, or the one-line reason it could not be written."""
    from relabel.pipeline import stage_timer
    from relabel.report import write_audit_report

    try:
        with stage_timer(result.seconds, "report"):
            paths = write_audit_report(
                report_dir,
                result.dataset,
                result.scorer,
                result.ranking,
                method=result.settings.method,
                n_flagged=result.n_flagged,
                explain_top=result.settings.explain_top,
            )
    except (RelabelError, OSError) as error:
        reason = str(error) if isinstance(error, RelabelError) else f"{report_dir}: {error.strerror or error}"
        return " ".join(reason.split())
    result.report_path = paths["report_html"]
    return None
