"""``relabel explain ITEM``: which training items hold up an item's current label, and which pull against it.

influence(j → i) = g_jᵀ H⁻¹ g_i (Koh & Liang 2017, −I_up,loss(z_j, z_i); :mod:`relabel.influence.base`):
> 0 means training item j *supports* item i's current label (removing j would raise i's loss by about
influence/n nats), < 0 that j *opposes* it. Exact for the logistic model (one Cholesky solve), LiSSA for
the mlp/cnn models (H + δI). Computed from the same fitted model and factorisation as the ranking.

``--from DIR`` answers from an audit's report folder (``relabel audit --report DIR``) without fitting
anything: ``DIR/explain.parquet`` holds each flagged item's strongest supporters and opposers (see
:mod:`relabel.report`), ``DIR/ranking.parquet`` the item's facts and ``DIR/audit.json`` the task links.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.errors import InputError
from relabel.report import ARCHIVE_TOP

PER_SIDE_DEFAULT = 5  # supporting and opposing items listed by `relabel explain`

EPILOG = """
examples:
  relabel explain data.csv --label-column label --id-column id --item 1042 --per-side 5
  relabel explain --dataset digits --item 17
  relabel explain --url http://localhost:8080 --project 3 --item 5123        # ITEM = task id
  relabel explain --from reports/p3 --item 5123      # from `relabel audit --report reports/p3`, no refit

reading it: "supports" items push the model towards the item's given label (a wrong label propped up
only by other suspicious items is a likely error); "opposes" items push towards another class. ⚑ marks
items the audit flagged too; Label Studio tasks come with their link.
"""


def register(subparsers: Any) -> None:
    """Add the ``explain`` subcommand."""
    from relabel.commands.data_source import add_data_source_options
    from relabel.commands.options import add_json_option, add_model_options, add_progress_options

    parser = subparsers.add_parser(
        "explain",
        help="show the training items that most support / oppose one item's label",
        description=(
            "Fit the model (or, with --from, read what an audit kept), then for one item i list the "
            "training items j with the largest and smallest influence g_jᵀ H⁻¹ g_i on its loss: the items "
            "that most support and most oppose its current label, with their labels."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_source_options(parser)
    add_model_options(parser, method=False)
    parser.add_argument(
        "--item", required=True, help="the item's id (file: its --id-column value or row number; LS: task id)"
    )
    parser.add_argument(
        "--per-side",
        type=int,
        default=PER_SIDE_DEFAULT,
        metavar="N",
        help=f"training items to show on each side, supporting and opposing (default: {PER_SIDE_DEFAULT}; "
        f"with --from at most the {ARCHIVE_TOP} per side an audit keeps)",
    )
    parser.add_argument("--top", type=int, dest="old_top", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        metavar="DIR",
        help="answer from an audit's report folder (relabel audit --report DIR) without refitting; "
        f"covers the items that audit flagged, with the {ARCHIVE_TOP} strongest supporting and opposing "
        "items it kept for each",
    )
    add_json_option(parser)
    add_progress_options(parser)
    parser.set_defaults(func=run)


def find_item(ids: np.ndarray, item: str) -> int:
    """Position of the item whose id equals ``item`` (compared as text; ``"7"`` matches 7 and 7.0)."""
    texts = [str(value) for value in ids.tolist()]
    if item in texts:
        return texts.index(item)
    try:
        number = float(item)
    except ValueError:
        number = None
    if number is not None:
        for position, value in enumerate(ids.tolist()):
            if isinstance(value, (int, float, np.integer, np.floating)) and float(value) == number:
                return position
    preview = ", ".join(texts[:5]) + (", …" if len(texts) > 5 else "")
    raise InputError(f"no item with id {item!r} among the {len(texts)} labeled items (ids: {preview})")


def format_explanation(
    item: Any,
    given_label: str,
    predicted_label: str,
    predicted_probability: float,
    self_influence: float,
    self_influence_rank: int | None,
    n_items: int,
    explanation: pd.DataFrame,
    *,
    flagged: Collection[Any] | None = None,
    task_url: str | None = None,
    notes: tuple[str, ...] = (),
) -> str:
    """The text ``relabel explain`` prints: a header line, then the supporting and the opposing items.

    ``flagged``: item ids the audit flagged (marked ⚑ after the influence); ``task_url``: a ``{task_id}``
    link template (each listed task's link is printed last on its line, the item's own under the header);
    ``notes``: extra lines after the header (e.g. the item's tier).
    """
    flagged = {_plain(value) for value in flagged} if flagged is not None else set()
    header = (
        f"item {item}: given label {given_label!r}; the model predicts {predicted_label!r} "
        f"(p = {predicted_probability:.3f})"
        + (f"; self-influence {self_influence:.4g}" if np.isfinite(self_influence) else "")
        + (
            f" (rank {self_influence_rank} of {n_items}, 1 = most suspicious)"
            if self_influence_rank is not None
            else ""
        )
    )
    lines = [header]
    if task_url:
        lines.append(f"  open: {task_url.format(task_id=item)}")
    lines += list(notes)
    lines.append(
        "influence = g_jᵀ H⁻¹ g_i: > 0 supports the given label (removing j would raise this item's loss), "
        "< 0 opposes it" + ("; ⚑ = flagged by the audit too" if flagged else "")
    )
    for role, heading in (("supports", "supports"), ("opposes", "opposes")):
        rows = explanation[explanation["role"] == role]
        lines.append(f"{heading} the label {given_label!r}:" if role == "supports" else f"{heading} it:")
        if not len(rows):
            lines.append("  (none)")
            continue
        width = max(len("id"), *(len(str(value)) for value in rows["id"]))
        label_width = max(len("label"), *(len(str(value)) for value in rows["label"]))
        lines.append(f"  {'id'.rjust(width)}  {'label'.ljust(label_width)}  influence")
        for row in rows.itertuples():
            line = f"  {str(row.id).rjust(width)}  {str(row.label).ljust(label_width)}  {row.influence:+.6g}"
            if flagged or task_url:
                line = line.ljust(width + label_width + 20) + ("  ⚑" if _plain(row.id) in flagged else "   ")
            if task_url:
                line += f"  {task_url.format(task_id=row.id)}"
            lines.append(line.rstrip())
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def explanation_json(
    item: Any,
    given_label: str,
    predicted_label: str,
    predicted_probability: float,
    self_influence: float,
    self_influence_rank: int | None,
    n_items: int,
    explanation: pd.DataFrame,
    *,
    flagged: Collection[Any] | None = None,
    task_url: str | None = None,
    notes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``relabel explain --json``: what :func:`format_explanation` prints, as one JSON object (the same
    arguments). ``supports``/``opposes``: lists of {id, label, influence, flagged, url}, strongest first."""
    flagged_ids = {_plain(value) for value in flagged} if flagged is not None else set()

    def side(role: str) -> list[dict[str, Any]]:
        rows = explanation[explanation["role"] == role]
        return [
            {
                "id": _plain(row.id),
                "label": str(row.label),
                "influence": float(row.influence),
                "flagged": _plain(row.id) in flagged_ids if flagged is not None else None,
                "url": task_url.format(task_id=row.id) if task_url else None,
            }
            for row in rows.itertuples()
        ]

    return {
        "command": "explain",
        "item": _plain(item),
        "given_label": given_label,
        "predicted_label": predicted_label,
        "predicted_probability": float(predicted_probability),
        "self_influence": float(self_influence),
        "self_influence_rank": self_influence_rank,
        "n_items": int(n_items),
        "url": task_url.format(task_id=item) if task_url else None,
        "supports": side("supports"),
        "opposes": side("opposes"),
        "notes": list(notes),
    }


def explain_from_report(report_dir: Path, item: str, per_side: int) -> dict[str, Any]:
    """``relabel explain --from DIR``: the arguments of :func:`format_explanation` for one flagged item,
    read from the audit's report folder (no fit). InputError when the item is unknown or was not flagged by
    that audit. Notes say when ``per_side`` asks for more than the audit kept, and when a ``relabel sync``
    ran after the audit (:func:`relabel.report.stale_note`)."""
    from relabel.report import read_explain_archive, stale_note

    facts, archive, ranking = read_explain_archive(report_dir)
    ids = ranking["task_id"].to_numpy()
    row = ranking.iloc[find_item(ids, str(item))]
    item_id = _plain(row["task_id"])
    stored = archive[archive["item"] == item_id]
    if not len(stored):
        raise InputError(
            f"item {item_id} was not flagged by the audit in {report_dir} (rank {int(row['rank'])} of "
            f"{len(ranking)}); its explain.parquet covers the {facts.get('n_flagged', '?')} flagged items. "
            "Explain it by refitting: drop --from and name the project (--url, --project) or the file"
        )
    table = pd.concat(
        [
            stored[stored["role"] == role].sort_values("position").head(per_side)
            for role in ("supports", "opposes")
        ]
    )
    method = facts.get("method", "self_influence")
    score = float(row["self_influence"]) if "self_influence" in row.index else float("nan")
    rank = None
    if "self_influence" in ranking.columns:
        rank = int((ranking["self_influence"].to_numpy(dtype=float) > score).sum()) + 1
    notes = []
    if str(row.get("tier", "") or ""):
        supported = bool(row.get("supported_only_by_flagged", False))
        notes.append(
            f"tier: {row['tier']}"
            + ("; its strongest support comes only from other flagged items" if supported else "")
            + (f"; ranked {int(row['rank'])} by {method}" if method != "self_influence" else "")
        )
    stored_top = int(stored.groupby("role").size().max())
    if per_side > stored_top:
        notes.append(
            f"(--per-side {per_side} asks for more than the audit kept: {stored_top} supporting and opposing "
            "items per flagged item; drop --from to refit and list more)"
        )
    notes.append(f"(from the audit report in {report_dir}, {facts.get('generated', '')}: no refit)")
    stale = stale_note(report_dir)
    if stale:
        notes.append(f"warning: {stale}")
    return {
        "item": item_id,
        "given_label": str(row["current_label"]),
        "predicted_label": str(row["suggested_label"]),
        "predicted_probability": float(row["predicted_probability"]),
        "self_influence": score,
        "self_influence_rank": rank,
        "n_items": len(ranking),
        "explanation": table,
        "flagged": set(_plain(value) for value in ranking.loc[ranking["flagged"].astype(bool), "task_id"]),
        "task_url": facts.get("task_url"),
        "notes": tuple(notes),
    }


def explain_by_refitting(args: argparse.Namespace, per_side: int) -> dict[str, Any]:
    """The arguments of :func:`format_explanation` for ``--item``, from a model fitted here to the items
    ``args`` name (a file, ``--dataset`` or ``--project``)."""
    from relabel.commands.data_source import load_items
    from relabel.commands.options import show_progress
    from relabel.report import explanations_for, task_url_template
    from relabel.scorer import SuspicionScorer
    from relabel.selection import suspicion_ranks

    items = load_items(args, model=args.model)
    ids = np.asarray(items.dataset.ids)
    classes = [str(name) for name in items.dataset.classes]
    position = find_item(ids, str(args.item))
    options: dict[str, Any] = {}
    if items.image_shape is not None:
        options["image_shape"] = items.image_shape
    scorer = SuspicionScorer(
        model=items.model,
        l2=args.l2,
        seed=args.seed,
        progress=show_progress(args),
        influence_parameters=args.influence_parameters,
        **options,
    ).fit(items.X, items.y, classes=list(range(len(classes))))
    if items.model_choice is not None:
        print(items.model_choice.describe(), file=sys.stderr)
    if scorer.solver_name == "exact":  # all n self-influences cost one pass of triangular solves
        all_self_influence = scorer.self_influence()
        item_self_influence = float(all_self_influence[position])
        item_rank: int | None = int(suspicion_ranks(all_self_influence)[position])
    else:  # LiSSA: only this item's (one more inverse-HVP), no rank
        gradient = scorer.solver.gradients.per_example_gradients(np.array([position]))
        item_self_influence = float(scorer.solver.self_influence_of(gradient)[0])
        item_rank = None
    explanation = explanations_for(scorer, ids, [position], top=per_side)
    table = next(iter(explanation.values()))
    table["label"] = [classes[int(index)] for index in table["label"]]
    predicted = int(scorer.probabilities[position].argmax())
    return {
        "item": ids[position],
        "given_label": classes[int(items.y[position])],
        "predicted_label": classes[predicted],
        "predicted_probability": float(scorer.probabilities[position, predicted]),
        "self_influence": item_self_influence,
        "self_influence_rank": item_rank,
        "n_items": len(ids),
        "explanation": table,
        "task_url": task_url_template(items.dataset.source),
    }


def run(args: argparse.Namespace) -> int:
    """Run ``relabel explain``; prints the explanation (text, or one JSON object with ``--json``)."""
    import sys

    from relabel.commands.options import print_json

    per_side = args.per_side
    if args.old_top is not None:
        print("relabel: note: explain --top is deprecated; use --per-side", file=sys.stderr)
        per_side = args.old_top
    if per_side < 1:
        raise InputError(f"--per-side must be at least 1; got {per_side}")
    if args.from_dir is not None:
        if args.data is not None or args.dataset is not None or args.project is not None:
            raise InputError(
                "--from DIR explains from an audit's report folder: give no file, --dataset or --project"
            )
        parts = explain_from_report(args.from_dir, str(args.item), per_side)
    else:
        parts = explain_by_refitting(args, per_side)
    positional = [parts.pop(name) for name in EXPLANATION_ARGUMENTS]
    if args.json:
        print_json(explanation_json(*positional, **parts))
    else:
        print(format_explanation(*positional, **parts))
    return 0


EXPLANATION_ARGUMENTS = (
    "item",
    "given_label",
    "predicted_label",
    "predicted_probability",
    "self_influence",
    "self_influence_rank",
    "n_items",
    "explanation",
)
