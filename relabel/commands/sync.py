"""``relabel sync``: copy reviewers' decisions from the review project back to the source project."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relabel.commands.options import (
    CONNECTION_HELP,
    add_connection_options,
    add_json_option,
    add_progress_options,
    connector_from_args,
    print_json,
    show_progress,
)

SYNC_EPILOG = (
    """
examples:
  relabel audit --project 3 --queue project   # creates "<title> — relabel review"
  # ... reviewers label the review project in Label Studio ...
  relabel sync --project 3                    # copies their decisions into project 3
  relabel sync --project 3 --report reports/p3   # ... and marks that audit report as older than this sync

Each reviewed task's decision (the reviewer's latest submitted, non-skipped annotation) becomes a NEW
annotation on the source task, credited to the reviewer. Existing annotations are never edited or
deleted, and running sync again adds nothing that is already there. A decision whose source task a person
deleted is named once ("not copied: review task R (source task S)"), recorded, and skipped; it never
stops the other decisions or a later sync.

sync counts the review tasks as reviewed (a decision), skipped (Skip pressed, no decision: not a
review; relabel sets the review project's skip setting to "Requeue for me", so the task comes back at
the end of the same reviewer's queue, and the next audit keeps it queued) and pending (not answered yet;
a saved draft is pending). --json gives them as "reviewed", "skipped" and "pending".
"""
    + CONNECTION_HELP
)


def register(subparsers: Any) -> None:
    """Add the ``sync`` subcommand."""
    parser = subparsers.add_parser(
        "sync",
        help="copy review-project decisions back to the source project as new annotations",
        description=(
            "Read the reviewers' decisions in the relabel review project of --project and record them in "
            "that project as new annotations; report how many tasks were reviewed, skipped and pending "
            "and how many labels reviewers changed."
        ),
        epilog=SYNC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_options(parser)
    parser.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="the folder of an audit's report (relabel audit --report DIR): record this sync's time there, "
        "so report.html shows that it is older than this sync and `relabel explain --from DIR` says so",
    )
    add_json_option(parser)
    add_progress_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``relabel sync``; returns the exit code (1 when the sync was done but ``--report`` could not be
    marked)."""
    if args.report is not None:
        from relabel.report import check_sync_report

        check_sync_report(args.report, args.project)
    connector = connector_from_args(args)
    result = connector.sync(args.project, control=args.control, progress=show_progress(args))
    report_error = None if args.report is None else mark_report(args.report, result)
    if args.json:
        from relabel.commands.undo import project_url

        print_json(
            {
                "command": "sync",
                **asdict(result),
                "source_project_url": project_url(connector, result.source_project_id),
                "review_project_url": project_url(connector, result.review_project_id),
                "report": None if args.report is None else str(args.report),
                "report_error": report_error,
            }
        )
    else:
        print(result.summary())
        if report_error is not None:
            print(f"relabel: warning: the report was not marked: {report_error}", file=sys.stderr)
    return 0 if report_error is None else 1


def mark_report(report_dir: Path, result: Any) -> str | None:
    """Record the sync (its UTC time, counts, and each source task's review state) in the audit report
    folder (:func:`relabel.report.record_sync`); None, or the one-line reason it failed."""
    from relabel.errors import RelabelError
    from relabel.report import record_sync

    facts = {key: value for key, value in asdict(result).items() if not isinstance(value, (list, dict))}
    facts["synced_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    facts["states"] = {str(task): state for task, state in result.review_states.items()}
    try:
        record_sync(report_dir, facts)
    except (RelabelError, OSError) as error:
        return " ".join(str(error).split())
    return None
