"""Run the method comparison (:mod:`relabel.comparison`) once per text feature set, on the same splits.

``relabel compare --features tfidf,embeddings`` is meant to call :func:`compare_feature_sets`: each feature
set featurizes the same texts (:func:`text_feature_matrix`), then :func:`relabel.comparison.compare_methods`
runs with the same configuration. The splits, the flipped labels and the CV folds depend only on the labels
and the seed, so every feature set is judged on the same errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.comparison import ComparisonConfig, ComparisonResult, compare_methods
from relabel.errors import InputError
from relabel.featurizers import FEATURE_SETS, featurizer_for


def parse_feature_sets(text: str) -> tuple[str, ...]:
    """ "tfidf,embeddings" → ("tfidf", "embeddings"); InputError for an unknown or repeated name."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in FEATURE_SETS]
    if not names or unknown:
        raise InputError(
            f"--features takes a comma-separated list of {', '.join(FEATURE_SETS)}; got {text!r}"
        )
    if len(set(names)) != len(names):
        raise InputError(f"--features names a feature set twice: {text!r}")
    return names


def text_feature_matrix(
    texts: Sequence[str], features: str = "auto", **options: Any
) -> tuple[np.ndarray, str, str | None]:
    """Featurize ``texts`` with ``features`` (see :func:`relabel.featurizers.featurizer_for`).

    Returns ``(X, used, note)``: the ``(n, d)`` float64 matrix, the feature set actually used ("embeddings"
    or "tfidf"; "auto" resolved) and the featurizer's one-line note (None unless "auto" fell back to TF-IDF).
    ``options`` go to the featurizer (e.g. ``device``, ``cache_dir``, ``progress`` for embeddings).
    """
    from relabel.featurizers import TextTfidfFeaturizer

    featurizer = featurizer_for("text", features, **options)
    X = np.asarray(featurizer.fit_transform(texts), dtype=np.float64)
    used = "tfidf" if isinstance(featurizer, TextTfidfFeaturizer) else "embeddings"
    return X, used, featurizer.feature_note


@dataclass
class FeatureSetComparison:
    """One :class:`ComparisonResult` per feature set (keys: the feature set used), plus the notes."""

    results: dict[str, ComparisonResult]
    notes: list[str] = field(default_factory=list)
    n_features: dict[str, int] = field(default_factory=dict)

    @property
    def summary(self) -> pd.DataFrame:
        """All summaries stacked, with a first column ``feature_set``."""
        frames = [result.summary.assign(feature_set=name) for name, result in self.results.items()]
        frame = pd.concat(frames, ignore_index=True)
        return frame[["feature_set", *[c for c in frame.columns if c != "feature_set"]]]

    def table(self) -> str:
        """Each feature set's text table (see :meth:`ComparisonResult.table`) under a heading line."""
        parts = [
            f"features: {name} ({self.n_features.get(name, '?')} per item)\n{result.table()}"
            for name, result in self.results.items()
        ]
        return "\n\n".join([*self.notes, *parts])

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Each result's files with stem ``comparison_<feature set>`` and ``comparison_features.csv`` (all
        summaries with their feature set)."""
        from relabel.output import private_folder, write_csv

        out_dir = private_folder(out_dir, "comparison folder")
        paths: dict[str, Path] = {}
        for name, result in self.results.items():
            for kind, path in result.write(out_dir, stem=f"comparison_{name}").items():
                paths[f"{name}_{kind}"] = path
        paths["features_csv"] = out_dir / "comparison_features.csv"
        write_csv(self.summary, paths["features_csv"])
        return paths


def compare_feature_sets(
    texts: Sequence[str],
    y: Sequence[int] | np.ndarray,
    feature_sets: Sequence[str] = ("tfidf", "embeddings"),
    config: ComparisonConfig | None = None,
    *,
    n_classes: int | None = None,
    known_errors: np.ndarray | None = None,
    true_labels: np.ndarray | None = None,
    description: str = "",
    featurizer_options: dict[str, Any] | None = None,
) -> FeatureSetComparison:
    """:func:`relabel.comparison.compare_methods` once per feature set on the features of ``texts``.

    ``y``, ``config``, ``n_classes``, ``known_errors``, ``true_labels``: as for ``compare_methods``.
    ``featurizer_options``: passed to every featurizer (embedding-only ones are dropped for TF-IDF).
    "auto" is resolved first; a feature set that resolves to one already run is not run twice.
    """
    options = dict(featurizer_options or {})
    config = config or ComparisonConfig()
    results: dict[str, ComparisonResult] = {}
    notes: list[str] = []
    widths: dict[str, int] = {}
    for requested in feature_sets:
        if requested not in FEATURE_SETS:
            raise InputError(f"unknown features {requested!r}: choose one of {', '.join(FEATURE_SETS)}")
        X, used, note = text_feature_matrix(texts, requested, **options)
        if note:
            notes.append(note)
        if used in results:
            continue
        label = f"{description}; " if description else ""
        results[used] = compare_methods(
            X,
            y,
            config,
            n_classes=n_classes,
            known_errors=known_errors,
            true_labels=true_labels,
            description=f"{label}features: {used}",
        )
        widths[used] = int(X.shape[1])
    return FeatureSetComparison(results, notes, widths)
