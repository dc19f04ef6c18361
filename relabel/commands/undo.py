"""``relabel undo``: remove everything relabel added to a Label Studio project, and nothing else."""

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
)

UNDO_EPILOG = (
    """
examples:
  relabel undo --project 3
  relabel undo --project 3 --force   # also when the review project holds decisions not yet synced

Removed: the predictions, the Data Manager tab and the review project that relabel created for the
project, and the annotations `relabel accept` added (the accepted suggestions), as relabel's ledger on
the server records them (the project "relabel ledger"). Nothing else: annotations people made (and the
decisions `relabel sync` copied, which are reviewers' own) stay; a copy of a review project, or a team's
own model named "relabel-...", is named on a "left alone" line and not touched (exit code 1). Without
--force, undo refuses to delete a review project whose decisions were not yet copied back with
`relabel sync`; --force never widens what counts as relabel's.
"""
    + CONNECTION_HELP
)


def register(subparsers: Any) -> None:
    """Add the ``undo`` subcommand."""
    parser = subparsers.add_parser(
        "undo",
        help="remove relabel's predictions, review view, review project and accepted suggestions from a "
        "project",
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
    add_json_option(parser)
    add_progress_options(parser)  # accepted by every command; undo draws no progress bar
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``relabel undo``; returns the exit code."""
    connector = connector_from_args(args)
    result = connector.undo(args.project, force=args.force)
    if args.json:
        print_json({"command": "undo", **asdict(result), "project_url": project_url(connector, args.project)})
    else:
        print(result.summary())
    return 1 if result.left_alone else 0


def project_url(connector: Any, project_id: int | None) -> str | None:
    """The project's page in Label Studio (``{url}/projects/{id}/``), or None without an id."""
    if project_id is None:
        return None
    return f"{str(connector.url).rstrip('/')}/projects/{int(project_id)}/"
