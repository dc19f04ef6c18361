"""The estimated number of label errors against the truth, on planted noise.

For each data set and seed, 10 % of the labels are flipped uniformly to another class (``relabel.noise``,
seeded), and the estimate of :func:`relabel.triage.estimate_label_errors` is computed twice:

* **out-of-fold** (what ``relabel audit`` now reports): 5-fold seeded out-of-fold probabilities of the
  exact logistic model (λ = 1e-3) on the set's features (:mod:`relabel.out_of_fold`; each fold's fit
  warm-started from the fit on all items, as the audit does), calibrated confident joint;
* **in-sample** (what it reported before): the same estimator on the probabilities of the logistic model
  fitted on all the items, i.e. on the labels it is asked to judge.

Data sets (nothing downloaded): scikit-learn's digits as 8×8 pixels (1,797 items, 64 features, the demo's
data); the same digits made MNIST-size (28×28: upscaled, shifted ±2 px, noised; ``mnist_size_images`` of
bench_deep_influence.py; ``--image-items`` of them) as 784 pixels (the features the CNN audit's estimate
folds) and, with ``--embeddings``, as pretrained EfficientNet-Lite0 embeddings (``relabel[image]``,
``--embedding-size`` px inputs; cached in ``$RELABEL_CACHE_DIR``); breast_cancer and wine (robust
z-scores); with ``--text``, the 2,000-text docstring corpus of bench_text_features.py as sentence
embeddings (``relabel[text]``).

Prints one row per set and seed (true flips, out-of-fold estimate with its 95 % interval, relative error,
in-sample estimate, seconds of the out-of-fold stage) and a per-set summary: the mean |relative error| and
whether every seed is within the 30 % target.

Usage::

    .venv/bin/python scripts/bench_error_estimate.py                          # pixels + tabular, 3 seeds
    .venv/bin/python scripts/bench_error_estimate.py --embeddings --text      # all sets
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from relabel.featurizers import TabularStandardizer  # noqa: E402
from relabel.logistic import fit_logistic  # noqa: E402
from relabel.noise import inject_label_noise  # noqa: E402
from relabel.out_of_fold import out_of_fold_probabilities  # noqa: E402
from relabel.triage import estimate_label_errors  # noqa: E402

FLIP_RATE = 0.1
TARGET = 0.30
L2 = 1e-3


def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def mnist_size(n_items: int) -> tuple[np.ndarray, np.ndarray]:
    from scripts.bench_deep_influence import mnist_size_images

    images, y = mnist_size_images(n_items, 0)
    return images, np.asarray(y)


def mnist_pixels(n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The CNN audit's estimate: its 28×28 inputs pooled to 8×8 (``relabel.out_of_fold.proxy_features``)."""
    from relabel.out_of_fold import proxy_features

    images, y = mnist_size(n_items)
    return proxy_features(images), y


def mnist_embeddings(n_items: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    import io

    from PIL import Image

    from relabel.image_embeddings import ImageEmbeddingFeaturizer

    images, y = mnist_size(n_items)
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        pixels = np.round(np.clip(image[0], 0, 1) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return ImageEmbeddingFeaturizer(size=size, progress=True).fit_transform(pngs), y


def tabular(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return TabularStandardizer().fit_transform(X), y


def text_embeddings() -> tuple[np.ndarray, np.ndarray]:
    from relabel.text_embeddings import SentenceEmbeddingFeaturizer
    from scripts.bench_text_features import docstring_corpus, stratified_sample

    texts, y, _ = docstring_corpus()
    rows = stratified_sample(y, 2000, seed=0)
    return SentenceEmbeddingFeaturizer(progress=True).fit_transform([texts[i] for i in rows]), y[rows]


def estimate_row(name: str, X: np.ndarray, y: np.ndarray, seed: int, folds: int) -> list[str]:
    """One table row: flips planted with ``seed``, the out-of-fold and the in-sample estimates."""
    n_classes = int(y.max()) + 1
    noisy = inject_label_noise(y, FLIP_RATE, seed=seed, n_classes=n_classes)
    classes = [str(k) for k in range(n_classes)]
    full_fit = fit_logistic(X, noisy.labels, n_classes, l2=L2)  # the audit's own fit
    started = time.perf_counter()
    oof = out_of_fold_probabilities(
        X, noisy.labels, n_classes, folds=folds, l2=L2, seed=seed, warm_start=full_fit
    )
    seconds = time.perf_counter() - started
    honest = estimate_label_errors(noisy.labels, oof, classes)
    old = estimate_label_errors(noisy.labels, full_fit.predict_proba(X), classes)
    true = int(noisy.flipped.sum())
    error = (honest.total - true) / true
    return [
        name,
        str(seed),
        str(len(y)),
        str(true),
        f"{honest.total} ({honest.interval[0]}–{honest.interval[1]})",
        f"{error:+.0%}",
        str(old.total),
        f"{seconds:.1f}",
    ]


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [" | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated noise seeds (default: 0,1,2)")
    parser.add_argument("--folds", type=int, default=5, help="k of the k-fold (default: 5)")
    parser.add_argument(
        "--image-items", type=int, default=1500, help="MNIST-size digit images (default: 1500)"
    )
    parser.add_argument("--embeddings", action="store_true", help="also the image-embedding set")
    parser.add_argument("--embedding-size", type=int, default=224, help="embedding input px (default: 224)")
    parser.add_argument("--text", action="store_true", help="also the 2,000-text sentence-embedding set")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sets: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        "digits 8×8 pixels": digits_pixels,
        f"digits 28×28 → 8×8 proxy of the cnn (n={args.image_items})": lambda: mnist_pixels(args.image_items),
        "breast_cancer": lambda: tabular("breast_cancer"),
        "wine": lambda: tabular("wine"),
    }
    if args.embeddings:
        sets[f"digits 28×28 embeddings {args.embedding_size}px"] = lambda: mnist_embeddings(
            args.image_items, args.embedding_size
        )
    if args.text:
        sets["text (sentence embeddings)"] = text_embeddings
    seeds = [int(seed) for seed in args.seeds.split(",")]
    rows, worst = [], {}
    for name, load in sets.items():
        X, y = load()
        for seed in seeds:
            row = estimate_row(name, X, y, seed, args.folds)
            rows.append(row)
            worst[name] = max(worst.get(name, 0.0), abs(float(row[5].rstrip("%"))) / 100)
            print(" | ".join(row), flush=True)
    headers = ["set", "seed", "items", "true flips", "out-of-fold estimate (95 %)", "error", "in-sample", "s"]
    print()
    print(render(headers, rows))
    print()
    for name, value in worst.items():
        verdict = "within" if value <= TARGET else "OUTSIDE"
        print(f"{name}: worst |error| {value:.0%}, {verdict} the {TARGET:.0%} target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
