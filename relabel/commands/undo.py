"""``relabel undo``: remove what relabel added to a Label Studio project and nobody changed, and nothing
else; save reviewer work to a local file before ``--force`` deletes it."""

from __future__ import annotations

import argparse
import json
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
)
from relabel.output import check_writable_folder, private_folder, write_private_text

DEFAULT_BACKUP_DIR = Path("relabel-backups")

UNDO_EPILOG = (
    """
examples:
  relabel undo --project 3
  relabel undo --project 3 --force   # also when the review project holds reviewer work (saved first)

Removed (only what relabel's ledger on the server, the project "relabel ledger", records as made by
relabel):
  - relabel's predictions in the project and its Data Manager tab "relabel: review queue";
  - the review project "<title> — relabel review";
  - the annotations `relabel accept` added, but only those still exactly as relabel wrote them (same
    result, same updated_at).
Kept, and named with links (exit code 1):
  - an accepted annotation a person has since edited or re-saved: it is the person's now;
  - anything that only looks like relabel's (a copy of a review project, a team's own model named
    "relabel-..."): "left alone".
Never touched: every other annotation, including the decisions `relabel sync` copied back.

Reviewer work blocks deletion: while the review project holds decisions not yet copied back with
`relabel sync`, drafts (Label Studio saves unsubmitted work automatically) or skipped tasks, undo deletes
nothing and names the counts (exit code 2). With --force it first writes the review project's annotations
and drafts to a local JSON file (mode 0600, in --backup-dir, path printed), then deletes the review project;
--force never deletes an annotation a person changed and never widens what counts as relabel's. Decisions on
source tasks a person deleted block nothing (there is nothing left to copy them to).
"""
    + CONNECTION_HELP
)


def register(subparsers: Any) -> None:
    """Add the ``undo`` subcommand."""
    parser = subparsers.add_parser(
        "undo",
        help="remove relabel's predictions, review view, review project and unchanged accepted annotations",
        description=(
            "Remove what relabel added to --project and nobody changed since (and nothing else); keep and "
            "name what a person changed."
        ),
        epilog=UNDO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_options(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete the review project even if it holds reviewer work (decisions not yet synced, drafts, "
        "skips), after saving its annotations and drafts to a file in --backup-dir",
    )
    parser.add_argument(
        "--backup-dir",
        type=Path,
        default=DEFAULT_BACKUP_DIR,
        metavar="DIR",
        help=f"where --force saves a review project's reviewer work first (default: {DEFAULT_BACKUP_DIR})",
    )
    add_json_option(parser)
    add_progress_options(parser)  # accepted by every command; undo draws no progress bar
    parser.set_defaults(func=run)


def backup_writer(folder: Path, source_project_id: int) -> Any:
    """``save(review project id, tasks) -> path``: writes the tasks (with their annotations and drafts) as
    JSON to ``folder/review-project-<id>-of-<source>-<UTC time>.json`` (file 0600, folder 0700)."""

    def save(review_id: int, tasks: list[dict[str, Any]]) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = private_folder(folder, "--backup-dir") / (
            f"review-project-{int(review_id)}-of-{int(source_project_id)}-{stamp}.json"
        )
        document = {
            "review_project": int(review_id),
            "source_project": int(source_project_id),
            "saved_at": stamp,
            "tasks": tasks,
        }
        write_private_text(path, json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False))
        return str(path)

    return save


def run(args: argparse.Namespace) -> int:
    """Run ``relabel undo``; returns the exit code (1 when something was kept or left alone)."""
    if args.force:
        check_writable_folder(args.backup_dir, "--backup-dir")
    connector = connector_from_args(args)
    result = connector.undo(
        args.project, force=args.force, save_backup=backup_writer(args.backup_dir, args.project)
    )
    if args.json:
        print_json({"command": "undo", **asdict(result), "project_url": project_url(connector, args.project)})
    else:
        print(result.summary())
    return 1 if result.left_alone or result.kept else 0


def project_url(connector: Any, project_id: int | None) -> str | None:
    """The project's page in Label Studio (``{url}/projects/{id}/``), or None without an id."""
    if project_id is None:
        return None
    return f"{str(connector.url).rstrip('/')}/projects/{int(project_id)}/"
