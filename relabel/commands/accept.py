"""``relabel accept``: accept the model's suggestions for one triage tier in bulk, as new annotations."""

from __future__ import annotations

import argparse
import sys
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
from relabel.errors import InputError
from relabel.triage import TIERS

ACCEPT_EPILOG = (
    """
examples:
  relabel audit --project 3                         # the review project, items tiered
  relabel accept --project 3 --dry-run              # per tier: how many would be accepted; writes nothing
  relabel accept --project 3 --tier "likely error" --dry-run   # ... and that tier's items
  relabel accept --project 3 --tier "likely error"  # asks for confirmation first
  relabel accept --project 3 --tier "likely error" --yes   # for scripts

For every review task of the tier that nobody has touched yet, the model's suggested label becomes a NEW
annotation on the source task (region id relabel-accept-<review task id>, recorded in relabel's ledger),
and the review task leaves the queue; the ledger also records what relabel wrote (a hash of the result and
its updated_at). Existing annotations are never changed; `relabel undo --project 3` removes the accepted
suggestions again, except those a person has edited or re-saved since (kept and named). The review tasks
are read after accept holds the project's write lease.
"""
    + CONNECTION_HELP
)


def register(subparsers: Any) -> None:
    """Add the ``accept`` subcommand."""
    parser = subparsers.add_parser(
        "accept",
        help="accept the model's suggestions for a whole triage tier, as new (undoable) annotations",
        description=(
            "Accept the suggested label of every untouched review task of one triage tier (see the audit's "
            "summary and report) as new annotations in the source project, after a confirmation."
        ),
        epilog=ACCEPT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_options(parser)
    parser.add_argument(
        "--tier",
        choices=TIERS,
        help="the triage tier whose suggestions to accept (required unless --dry-run)",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="write nothing: print how many suggestions each tier would accept (and --tier's items: source "
        "task, current → suggested label)",
    )
    add_json_option(parser)
    add_progress_options(parser)
    parser.set_defaults(func=run)


def confirmation(args: argparse.Namespace) -> Any:
    """``confirm(n)``: True with ``--yes``; else ask on the terminal; without a terminal, refuse clearly."""

    def confirm(count: int) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise InputError(
                f"{count} suggestions of tier {args.tier!r} would be accepted; no terminal to confirm on: "
                "pass --yes to accept them"
            )
        question = (
            f"Accept the model's suggestion for {count} tasks of tier {args.tier!r} in project "
            f"{args.project} as new annotations? [y/N] "
        )
        print(question, end="", file=sys.stderr, flush=True)  # stdout holds only the result (--json)
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    return confirm


def run(args: argparse.Namespace) -> int:
    """Run ``relabel accept``; returns the exit code."""
    if args.tier is None and not args.dry_run:
        raise InputError(
            f"name the tier to accept with --tier ({', '.join(TIERS)}), or preview with --dry-run"
        )
    connector = connector_from_args(args)
    if args.dry_run:
        preview = connector.accept_preview(args.project, TIERS)
        if args.json:
            print_json({"command": "accept", "dry_run": True, "tier": args.tier, **asdict(preview)})
        else:
            print(preview.summary(args.tier))
        return 0
    result = connector.accept(args.project, args.tier, confirmation(args), control=args.control)
    if args.json:
        print_json({"command": "accept", "dry_run": False, **asdict(result)})
    else:
        print(result.summary())
    return 0
