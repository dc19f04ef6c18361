"""Tests of relabel.featurizers: shapes, dtypes, value ranges, determinism, errors."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from relabel.errors import InputError
from relabel.featurizers import (
    ImagePixelFeaturizer,
    TabularStandardizer,
    TextTfidfFeaturizer,
    featurizer_for,
)


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (20, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_tfidf_dense_float64_unit_rows_and_deterministic() -> None:
    texts = ["the cat sat", "the dog sat down", "a cat and a dog", ""]
    first = TextTfidfFeaturizer().fit_transform(texts)
    second = TextTfidfFeaturizer().fit_transform(texts)
    assert first.dtype == np.float64 and first.ndim == 2 and first.shape[0] == 4
    np.testing.assert_array_equal(first, second)
    norms = np.linalg.norm(first, axis=1)
    np.testing.assert_allclose(norms[:3], 1.0)
    assert norms[3] == 0.0


def test_tfidf_max_features_and_transform_uses_fitted_vocabulary() -> None:
    featurizer = TextTfidfFeaturizer(max_features=2)
    train = featurizer.fit_transform(["alpha alpha beta", "alpha gamma", "alpha beta"])
    assert train.shape == (3, 2)
    assert featurizer.feature_names == ["alpha", "beta"]
    new = featurizer.transform(["beta unseen words"])
    assert new.shape == (1, 2) and new[0, 0] == 0.0 and new[0, 1] > 0


def test_tfidf_errors() -> None:
    with pytest.raises(InputError, match="before fit"):
        TextTfidfFeaturizer().transform(["x"])
    with pytest.raises(InputError, match="not a string"):
        TextTfidfFeaturizer().fit_transform(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="no words"):
        TextTfidfFeaturizer().fit_transform(["", " "])


def test_image_pixels_shapes_and_scaling_grayscale() -> None:
    images = [png_bytes((255, 255, 255)), png_bytes((0, 0, 0)), png_bytes((255, 0, 0))]
    featurizer = ImagePixelFeaturizer(size=(8, 6), grayscale=True)
    arrays = featurizer.image_arrays(images)
    assert arrays.shape == (3, 1, 6, 8) and arrays.dtype == np.float64
    np.testing.assert_allclose(arrays[0], 1.0)
    np.testing.assert_allclose(arrays[1], 0.0)
    assert 0.2 < arrays[2].mean() < 0.4  # luminance of pure red is 76/255
    flat = featurizer.fit_transform(images)
    assert flat.shape == (3, 48)
    np.testing.assert_array_equal(flat, arrays.reshape(3, -1))
    np.testing.assert_array_equal(featurizer.transform(images), flat)


def test_image_pixels_rgb_channel_first() -> None:
    arrays = ImagePixelFeaturizer(size=(4, 4), grayscale=False).image_arrays([png_bytes((255, 0, 0))])
    assert arrays.shape == (1, 3, 4, 4)
    np.testing.assert_allclose(arrays[0, 0], 1.0)
    np.testing.assert_allclose(arrays[0, 1:], 0.0)


def test_image_pixels_bad_bytes() -> None:
    with pytest.raises(InputError, match="Image input 1"):
        ImagePixelFeaturizer().fit_transform([png_bytes((1, 2, 3)), b"not an image"])


def test_tabular_standardizer_zero_mean_unit_variance_constant_column_zero() -> None:
    frame = pd.DataFrame(
        {"a": [1.0, 2.0, 3.0, 4.0], "b": [10.0, 10.0, 10.0, 10.0], "c": [0.0, 0.0, 1.0, 5.0]}
    )
    standardizer = TabularStandardizer()
    features = standardizer.fit_transform(frame)
    assert features.shape == (4, 3) and features.dtype == np.float64
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(features[:, [0, 2]].std(axis=0), 1.0)
    np.testing.assert_array_equal(features[:, 1], 0.0)
    new = standardizer.transform(pd.DataFrame({"a": [2.5], "b": [99.0], "c": [0.0]}))
    assert new[0, 0] == pytest.approx(0.0) and new[0, 1] == 0.0


def test_tabular_errors() -> None:
    standardizer = TabularStandardizer()
    with pytest.raises(InputError, match="before fit"):
        standardizer.transform(np.zeros((2, 2)))
    standardizer.fit_transform(pd.DataFrame({"a": [1.0, 2.0]}))
    with pytest.raises(InputError, match="differ"):
        standardizer.transform(pd.DataFrame({"z": [1.0]}))
    with pytest.raises(InputError, match="finite"):
        TabularStandardizer().fit_transform(np.array([[1.0], [np.nan]]))


def test_featurizer_for_factory() -> None:
    assert isinstance(featurizer_for("text", "tfidf", max_features=10), TextTfidfFeaturizer)
    image = featurizer_for("image", size=(4, 4), grayscale=False)
    assert isinstance(image, ImagePixelFeaturizer) and image.n_channels == 3
    assert isinstance(featurizer_for("tabular"), TabularStandardizer)
    with pytest.raises(InputError, match="Unknown input kind"):
        featurizer_for("audio")
    with pytest.raises(InputError, match="Bad options"):
        featurizer_for("tabular", size=3)
