"""Image features for finding label errors: 8×8 pixels vs pretrained EfficientNet-Lite0 embeddings.

Data (nothing downloaded): ``--items`` MNIST-size 28×28 digit PNGs (``mnist_size_images`` of
bench_deep_influence.py: scikit-learn digits upscaled, shifted ±2 px, noised; drawn with seed 0, the same
images for every seed), 10 % of the labels flipped to another class with each ``--seeds`` seed (the flips
change with the seed, the images do not, so the embedding cache is warm after the first seed).

Per feature set and seed: the exact logistic model (λ = 1e-3) ranks the items by self-influence
(``relabel.rank``, as ``relabel audit`` does); the table gives the share of the flips among the top 10 %
("found at 10 %"), the AUROC of the score for the flips, and the seconds to featurize (first seed: cold
cache) and to rank.

Usage::

    .venv/bin/python scripts/bench_image_features.py                        # 1,500 images, 224 px, 3 seeds
    .venv/bin/python scripts/bench_image_features.py --items 600 --size 64  # what fits a loaded 2-core box
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from relabel.featurizers import ImagePixelFeaturizer  # noqa: E402
from relabel.noise import inject_label_noise  # noqa: E402
from relabel.scorer import rank  # noqa: E402

FLIP_RATE = 0.1
CHECKED = 0.1


def digit_pngs(n_items: int) -> tuple[list[bytes], np.ndarray]:
    from PIL import Image

    from scripts.bench_deep_influence import mnist_size_images

    images, y = mnist_size_images(n_items, 0)
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        pixels = np.round(np.clip(image[0], 0, 1) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs, np.asarray(y)


def found_and_auroc(X: np.ndarray, labels: np.ndarray, flipped: np.ndarray) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    started = time.perf_counter()
    scores = rank(X, labels, methods=("self_influence",))["self_influence"].to_numpy()
    seconds = time.perf_counter() - started
    top = np.argsort(-scores, kind="stable")[: int(np.ceil(CHECKED * len(labels)))]
    return float(flipped[top].sum() / flipped.sum()), float(roc_auc_score(flipped, scores)), seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1500, help="digit images (default: 1500)")
    parser.add_argument("--size", type=int, default=224, help="embedding input side in px (default: 224)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated flip seeds (default: 0,1,2)")
    args = parser.parse_args(argv)
    from relabel.image_embeddings import ImageEmbeddingFeaturizer

    pngs, true = digit_pngs(args.items)
    featurizers = {
        "pixels 8×8": ImagePixelFeaturizer(),
        f"embeddings {args.size} px": ImageEmbeddingFeaturizer(size=args.size, progress=True),
    }
    rows = []
    for name, featurizer in featurizers.items():
        started = time.perf_counter()
        X = featurizer.fit_transform(pngs)
        featurize_seconds = time.perf_counter() - started
        for seed in (int(seed) for seed in args.seeds.split(",")):
            noisy = inject_label_noise(true, FLIP_RATE, seed=seed, n_classes=10)
            found, auroc, rank_seconds = found_and_auroc(X, noisy.labels, noisy.flipped)
            row = f"{name} | {seed} | {found:.1%} | {auroc:.3f} | {featurize_seconds:.0f} | "
            row += f"{rank_seconds:.0f}"
            rows.append(row)
            print(row, flush=True)
            featurize_seconds = 0.0  # later seeds reuse the features
    print("\nfeatures | seed | found at 10 % | AUROC | featurize s | rank s")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
