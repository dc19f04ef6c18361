"""``model="auto"`` against each of its candidates, on planted label noise (issue 17).

Data sets (10 % of the labels flipped to another class, uniformly, seeded; 3 seeds by default):

- ``digits``: sklearn's 1,797 digits as 8×8 grey PNG files (the demo's image project), kind "image";
- ``mnist``: N (default 1,500) 28×28 digit images (``mnist_size_images`` of bench_deep_influence.py), PNG;
- ``breast_cancer``, ``wine``: sklearn's tables, kind "tabular".

For each data set and seed, the audit's featurize → fit → score stages run exactly as ``relabel audit``
runs them (:func:`relabel.pipeline.score_dataset`, no Label Studio) once per candidate named; then
``model="auto"``'s choice is measured (:func:`relabel.models.choice.choose_model`, the "choose" stage) and
its ranking is the chosen candidate's (same settings and seed: the pipeline is deterministic), its time
the choice's plus that candidate's. Reported per configuration (mean ± standard deviation over seeds):
the share of planted flips among the top 10 % by self-influence ("found at 10 %"), the AUROC of
self-influence for "is flipped", and the seconds of the choose / featurize / fit / score stages; for auto,
which model it chose on each seed.

Usage::

    PYTHONPATH=. .venv/bin/python scripts/bench_auto_model.py   # digits, breast_cancer, wine
    PYTHONPATH=. .venv/bin/python scripts/bench_auto_model.py --datasets mnist --items 1500
    PYTHONPATH=. .venv/bin/python scripts/bench_auto_model.py --seeds 0 --datasets wine
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from relabel.comparison import detection_metrics  # noqa: E402
from relabel.dataset import LabeledDataset  # noqa: E402
from relabel.models.choice import candidates_for, choose_model  # noqa: E402
from relabel.pipeline import score_dataset  # noqa: E402
from relabel.settings import AuditSettings  # noqa: E402

FLIP_RATE = 0.1
CHECKED = 0.1


def flip(labels: np.ndarray, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Given labels with round(FLIP_RATE·n) flipped to another class (uniform), and the flipped mask."""
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[rng.choice(len(labels), size=round(FLIP_RATE * len(labels)), replace=False)] = True
    given = labels.copy()
    given[flipped] = (given[flipped] + rng.integers(1, n_classes, size=int(flipped.sum()))) % n_classes
    return given, flipped


def pngs(images: np.ndarray) -> list[bytes]:
    """(n, H, W) grey values in [0, 1] → PNG bytes."""
    from PIL import Image

    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


def load(name: str, items: int, seed: int) -> tuple[object, str, np.ndarray]:
    """(inputs, kind, true class indices) of one data set."""
    from sklearn import datasets

    if name == "digits":
        X, y = datasets.load_digits(return_X_y=True)
        X, y = X[:items], y[:items]  # --items: the first N (all 1,797 by default)
        return pngs(X.reshape(-1, 8, 8) / 16.0), "image", y
    if name == "mnist":
        from scripts.bench_deep_influence import mnist_size_images

        images, y = mnist_size_images(items, seed)
        return pngs(np.asarray(images)[:, 0]), "image", np.asarray(y)
    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]
    bunch = loader()
    return pd.DataFrame(bunch.data, columns=bunch.feature_names), "tabular", bunch.target


def planted(name: str, items: int, seed: int) -> tuple[LabeledDataset, np.ndarray]:
    inputs, kind, true = load(name, items, seed)
    n_classes = int(true.max()) + 1
    given, flipped = flip(np.asarray(true), n_classes, seed)
    classes = [str(k) for k in range(n_classes)]
    ids = np.arange(1, len(given) + 1)
    dataset = LabeledDataset(
        ids=ids,
        inputs=inputs,
        kind=kind,
        labels=np.array([classes[k] for k in given], dtype=object),
        classes=classes,
        provenance=pd.DataFrame(index=pd.Index(ids, name="id")),
    )
    return dataset, flipped


def run_one(dataset: LabeledDataset, flipped: np.ndarray, model: str, seed: int) -> dict:
    """The audit's featurize → fit → score stages with ``model`` named; detection metrics and seconds."""
    settings = AuditSettings(model=model, seed=seed)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    _, scores, _, _ = score_dataset(dataset, settings, seconds)
    metrics = detection_metrics(scores["self_influence"].to_numpy(), flipped, [CHECKED])
    return {
        "found_at_10pct": metrics["found_at_10pct"],
        "auroc": metrics["auroc"],
        "seconds": time.perf_counter() - started,
        "chosen": model,
        **{f"s_{stage}": value for stage, value in seconds.items()},
    }


def run_auto(dataset: LabeledDataset, runs: dict[str, dict], seed: int, budget: float) -> dict:
    """``model="auto"``: the choice is measured here (its seconds are the "choose" stage); the ranking is
    the chosen candidate's, already computed with the same settings and seed (the pipeline is
    deterministic, so ``score_dataset`` with ``auto`` gives the same scores after the same choice)."""
    started = time.perf_counter()
    choice = choose_model(dataset, AuditSettings(seed=seed), budget_seconds=budget)
    choose_seconds = time.perf_counter() - started
    chosen = runs[choice.model]
    return {
        **chosen,
        "chosen": choice.model,
        "seconds": chosen["seconds"] + choose_seconds,
        "s_choose": choose_seconds,
        "choice": choice.describe(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer", "wine"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--items", type=int, default=None, help="images: the first N digits / N mnist images")
    parser.add_argument("--budget", type=float, default=300.0, help="auto_budget_seconds")
    parser.add_argument("--out", type=Path, default=None, help="also write the per-run rows as CSV")
    args = parser.parse_args(argv)
    rows = []
    for name in args.datasets:
        for seed in args.seeds:
            items = args.items or (1797 if name == "digits" else 1500)
            dataset, flipped = planted(name, items, seed)
            runs = {
                model: run_one(dataset, flipped, model, seed)
                for model in dict.fromkeys(c.model for c in candidates_for(dataset))
            }
            runs["auto"] = run_auto(dataset, runs, seed, args.budget)
            for model, run in runs.items():
                rows.append({"dataset": name, "seed": seed, "model": model, **run})
                print(
                    f"{name} seed {seed} {model:8s} found@10% {run['found_at_10pct']:.3f} "
                    f"AUROC {run['auroc']:.3f} {run['seconds']:.1f} s → {run['chosen']}"
                    + (f"\n    {run['choice']}" if "choice" in run else ""),
                    flush=True,
                )
    frame = pd.DataFrame(rows)
    if args.out is not None:
        frame.to_csv(args.out, index=False)
    stage_columns = [column for column in frame.columns if column.startswith("s_")]
    table = frame.groupby(["dataset", "model"], sort=False).agg(
        found=("found_at_10pct", "mean"),
        found_sd=("found_at_10pct", "std"),
        auroc=("auroc", "mean"),
        auroc_sd=("auroc", "std"),
        seconds=("seconds", "mean"),
        chosen=("chosen", lambda values: ",".join(values)),
        **{column: (column, "mean") for column in stage_columns},
    )
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
