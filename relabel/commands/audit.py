"""``relabel audit``: rank a Label Studio project's labeled items and push the top ones for review."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from relabel.commands.options import (
    CONNECTION_HELP,
    add_connection_options,
    add_json_option,
    add_model_options,
    add_progress_options,
    add_setting,
    connector_from_args,
    print_json,
    settings_from_args,
    show_progress,
)
from relabel.errors import RelabelError

__all__ = ["register", "run", "settings_from_args", "write_report"]

AUDIT_EPILOG = (
    """
examples:
  export LABEL_STUDIO_URL=http://localhost:8080
  export LABEL_STUDIO_API_KEY=...                      # or: --api-key-file ~/.config/ls-token
  relabel audit --project 3                            # top 5 % by self-influence, as a review project
  relabel audit --project 3 --top 200 --queue view     # 200 tasks, as a tab in project 3 itself
  relabel audit --project 3 --model cnn --top-fraction 0.1 --report reports/p3
  relabel audit --project 3 --method loss              # the baseline ranking, for comparison

what it writes (re-running updates it; nothing is duplicated, no annotation is ever changed):
  --queue project  (default) a project "<title> — relabel review" with copies of the flagged tasks in
                   rank order (Sequential sampling): each shows a reason block above the item (the
                   training items that most support and most oppose its label, linked to their
                   tasks) and the model's suggested label pre-filled: submit to accept it or pick
                   another. Instructions, and a Data Manager tab with readable columns sorted by rank.
                   Then `relabel sync --project ID` copies the decisions back as new annotations.
  --queue view     the lighter option, in the project itself: one prediction per flagged task
                   (model_version relabel-<method>, result = the model's suggested label, score =
                   mislabeling = the task's suspicion as the share of tasks scoring lower, 1 = most
                   suspicious, not the model's confidence) and a Data Manager tab "relabel: review
                   queue" of the flagged tasks, most suspicious first (rank = row). Sorting needs the
                   project's model version to be relabel's: set where unset (undo unsets it), left
                   alone where you chose one (then: id order, one line says so). No reasons, rank,
                   tier, label columns or instructions in Label Studio (see --report).
  `relabel undo --project ID` removes all of it again.

tasks it cannot read:
  a labeled task whose input cannot be read (an image URL with a bad port, a broken IPv6 literal or an
  unknown scheme, a data: URI or download that is not an image, an image URL answering an HTTP error, a
  missing input field, a tabular row that is not numbers) is skipped and named with its reason in the
  summary ("N skipped: input unreadable"; --json: n_skipped, skipped_tasks); the rest is audited.
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
            "task (by default by self-influence, Koh & Liang 2017: higher = the model had to bend more to "
            "fit that label; --method picks another score), and push the top tasks back to Label Studio as "
            "a review queue. Progress bars go to stderr; the summary, with the URL to open, to stdout."
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
    add_setting(parser.add_argument_group("error estimate"), "folds")
    how_many = parser.add_argument_group("how many to flag").add_mutually_exclusive_group()
    add_setting(how_many, "top")
    add_setting(how_many, "top_fraction")
    output = parser.add_argument_group("output")
    add_setting(output, "queue")
    output.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write DIR/report.html, DIR/ranking.csv, DIR/ranking.parquet and what "
        "`relabel explain --from DIR` reads (explain.parquet, audit.json)",
    )
    output.add_argument(
        "--dry-run", action="store_true", help="rank and report, but write nothing to Label Studio"
    )
    add_setting(output, "explain_top")
    add_setting(output, "write_mislabeling")
    add_json_option(parser)
    add_progress_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``relabel audit``; returns the exit code.

    The report is written here, after the pipeline (which runs without one): a report folder that cannot be
    created is refused before anything is pulled (exit 2); a report that fails after the push (a full disk)
    does not hide what was pushed: the summary and the URL are printed, then one warning line, exit 1.
    """
    from relabel.output import check_writable_folder
    from relabel.pipeline import run_audit

    if args.config is not None:
        if args.json:
            raise RelabelError(
                "--json reports one audit; the nightly mode (--config) logs one line per project"
            )
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
    triage = audit_triage(result)
    if args.json:
        print_json({**audit_json(result, triage), "report_error": report_error})
        return 1 if report_error is not None else 0
    print(result.summary())  # includes the triage line
    if result.url:
        print(f"open: {result.url}")
    if report_error is not None:
        print(f"relabel: warning: the report was not written: {report_error}", file=sys.stderr)
        return 1
    return 0


def audit_triage(result: Any) -> dict[str, Any] | None:
    """The triage facts of an audit (:meth:`relabel.triage.Triage.as_dict`): the pipeline's own when it
    carries a ``triage``, else the report folder's ``audit.json``, else computed here from the result's
    ranking, dataset and scorer (one batched explanation of the flagged items; no refit)."""
    from relabel.report import AUDIT_JSON
    from relabel.triage import triage_audit

    own = getattr(result, "triage", None)
    if own is not None:
        return own.as_dict() if hasattr(own, "as_dict") else dict(own)
    if result.report_path is not None:
        audit_json_path = Path(result.report_path).parent / AUDIT_JSON
        if audit_json_path.exists():
            return json.loads(audit_json_path.read_text(encoding="utf-8")).get("triage")
    if result.dataset is None or result.scorer is None or not len(result.ranking):
        return None
    return triage_audit(result.ranking, result.dataset, result.scorer).as_dict()


def audit_json(result: Any, triage: dict[str, Any] | None) -> dict[str, Any]:
    """``relabel audit --json``: the summary's numbers and URLs as one JSON object."""
    report = None if result.report_path is None else Path(result.report_path)
    skipped = sorted((getattr(result, "skipped", None) or {}).items())
    return {
        "command": "audit",
        "project_id": result.project_id,
        "n_tasks": result.n_tasks,
        "n_labeled": result.n_labeled,
        "n_unlabeled": result.n_unlabeled,
        "n_skipped": len(skipped),
        "skipped_tasks": [{"task_id": int(task_id), "reason": reason} for task_id, reason in skipped],
        "n_features": result.n_features,
        "model": result.model_name,
        "model_choice": None if result.model_choice is None else result.model_choice.as_dict(),
        "method": result.settings.method,
        "n_flagged": result.n_flagged,
        "flagged_task_ids": [int(task_id) for task_id in result.flagged_task_ids],
        "url": result.url,
        "push": _plain_object(result.push),
        "report": None if report is None else str(report),
        "report_dir": None if report is None else str(report.parent),
        "triage": triage,
        "seconds": {stage: round(float(value), 3) for stage, value in result.seconds.items()},
    }


def _plain_object(value: Any) -> dict[str, Any] | None:
    """A dataclass (e.g. the connector's PushResult) or plain object as a dict of its fields."""
    if value is None:
        return None
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return {key: item for key, item in vars(value).items() if not key.startswith("_")}


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
                triage=result.triage,
                model_choice=result.model_choice,
            )
    except (RelabelError, OSError) as error:
        reason = str(error) if isinstance(error, RelabelError) else f"{report_dir}: {error.strerror or error}"
        return " ".join(reason.split())
    result.report_path = paths["report_html"]
    return None
