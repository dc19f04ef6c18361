"""``relabel explain ITEM``: which training items hold up an item's current label, and which pull against it.

influence(j → i) = g_jᵀ H⁻¹ g_i (Koh & Liang 2017, −I_up,loss(z_j, z_i); :mod:`relabel.influence.base`):
> 0 means training item j *supports* item i's current label (removing j would raise i's loss by about
influence/n nats), < 0 that j *opposes* it. Exact for the logistic model (one Cholesky solve), LiSSA for
the mlp/cnn models (H + δI). Computed from the same fitted model and factorisation as the ranking.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd

from relabel.errors import InputError

EPILOG = """
examples:
  relabel explain data.csv --label-column label --id-column id --item 1042 --top 5
  relabel explain --dataset digits --item 17
  relabel explain --url http://localhost:8080 --project 3 --item 5123        # ITEM = task id

reading it: "supports" items push the model towards the item's given label (a wrong label propped up
only by other suspicious items is a likely error); "opposes" items push towards another class.
"""


def register(subparsers: Any) -> None:
    """Add the ``explain`` subcommand."""
    from relabel.commands.data_source import add_data_source_options
    from relabel.commands.options import add_model_options

    parser = subparsers.add_parser(
        "explain",
        help="show the training items that most support / oppose one item's label",
        description=(
            "Fit the model, then for one item i list the training items j with the largest and smallest "
            "influence g_jᵀ H⁻¹ g_i on its loss: the items that most support and most oppose its current "
            "label, with their labels."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_source_options(parser)
    add_model_options(parser, method=False)
    parser.add_argument(
        "--item", required=True, help="the item's id (file: its --id-column value or row number; LS: task id)"
    )
    parser.add_argument("--top", type=int, default=5, help="items to show on each side (default 5)")
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
) -> str:
    """The text ``relabel explain`` prints: a header line, then the supporting and the opposing items."""
    lines = [
        f"item {item}: given label {given_label!r}; the model predicts {predicted_label!r} "
        f"(p = {predicted_probability:.3f}); self-influence {self_influence:.4g}"
        + (
            f" (rank {self_influence_rank} of {n_items}, 1 = most suspicious)"
            if self_influence_rank is not None
            else ""
        ),
        "influence = g_jᵀ H⁻¹ g_i: > 0 supports the given label (removing j would raise this item's loss), "
        "< 0 opposes it",
    ]
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
            lines.append(
                f"  {str(row.id).rjust(width)}  {str(row.label).ljust(label_width)}  {row.influence:+.6g}"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``relabel explain``; prints the explanation."""
    from relabel.commands.data_source import load_items
    from relabel.report import explanations_for
    from relabel.scorer import SuspicionScorer
    from relabel.selection import suspicion_ranks

    if args.top < 1:
        raise InputError(f"--top must be at least 1; got {args.top}")
    items = load_items(args, model=args.model)
    ids = np.asarray(items.dataset.ids)
    classes = [str(name) for name in items.dataset.classes]
    position = find_item(ids, str(args.item))
    options: dict[str, Any] = {}
    if items.image_shape is not None:
        options["image_shape"] = items.image_shape
    scorer = SuspicionScorer(model=args.model, l2=args.l2, seed=args.seed, **options).fit(
        items.X, items.y, classes=list(range(len(classes)))
    )
    if scorer.solver_name == "exact":  # all n self-influences cost one pass of triangular solves
        all_self_influence = scorer.self_influence()
        item_self_influence = float(all_self_influence[position])
        item_rank: int | None = int(suspicion_ranks(all_self_influence)[position])
    else:  # LiSSA: only this item's (one more inverse-HVP), no rank
        gradient = scorer.solver.gradients.per_example_gradients(np.array([position]))
        item_self_influence = float(scorer.solver.self_influence_of(gradient)[0])
        item_rank = None
    explanation = explanations_for(scorer, ids, [position], top=args.top)
    table = next(iter(explanation.values()))
    table["label"] = [classes[int(index)] for index in table["label"]]
    predicted = int(scorer.probabilities[position].argmax())
    print(
        format_explanation(
            ids[position],
            classes[int(items.y[position])],
            classes[predicted],
            float(scorer.probabilities[position, predicted]),
            item_self_influence,
            item_rank,
            len(ids),
            table,
        )
    )
    return 0
