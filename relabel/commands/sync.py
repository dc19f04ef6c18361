"""``relabel sync``: copy reviewers' decisions from the review project back to the source project."""

from __future__ import annotations

import argparse
from dataclasses import asdict
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

Each reviewed task's decision (the reviewer's latest submitted, non-skipped annotation) becomes a NEW
annotation on the source task, credited to the reviewer. Existing annotations are never edited or
deleted, and running sync again adds nothing that is already there.
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
            "that project as new annotations; report how many tasks were reviewed and how many labels "
            "reviewers changed."
        ),
        epilog=SYNC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_options(parser)
    add_json_option(parser)
    add_progress_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``relabel sync``; returns the exit code."""
    connector = connector_from_args(args)
    result = connector.sync(args.project, control=args.control, progress=show_progress(args))
    if args.json:
        from relabel.commands.undo import project_url

        print_json(
            {
                "command": "sync",
                **asdict(result),
                "source_project_url": project_url(connector, result.source_project_id),
                "review_project_url": project_url(connector, result.review_project_id),
            }
        )
    else:
        print(result.summary())
    return 0
