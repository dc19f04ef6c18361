"""``relabel undo``: remove everything relabel added to a Label Studio project, and nothing else."""

from __future__ import annotations

import argparse
from typing import Any

from relabel.commands.options import CONNECTION_HELP, add_connection_options, connector_from_args

UNDO_EPILOG = (
    """
examples:
  relabel undo --project 3
  relabel undo --project 3 --force   # also when the review project holds decisions not yet synced

Removed: the predictions, the Data Manager tab and the review project that relabel created for the
project, as its ledger on the server records them (the project "relabel ledger"). Nothing else: a copy
of a review project, or a team's own model named "relabel-...", is named on a "left alone" line and not
touched (exit code 1). Annotations are never touched. Without --force, undo refuses to delete a review
project whose decisions were not yet copied back with `relabel sync`; --force never widens what counts
as relabel's.
"""
    + CONNECTION_HELP
)


def register(subparsers: Any) -> None:
    """Add the ``undo`` subcommand."""
    parser = subparsers.add_parser(
        "undo",
        help="remove relabel's predictions, review view and review project from a project",
        description="Remove everything relabel added to --project (and nothing else).",
        epilog=UNDO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_options(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete the review project even if it holds reviewer decisions not yet synced",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``relabel undo``; returns the exit code."""
    result = connector_from_args(args).undo(args.project, force=args.force)
    print(result.summary())
    return 1 if result.left_alone else 0
