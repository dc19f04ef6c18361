"""Tests of relabel.featurizers: shapes, dtypes, value ranges, determinism, errors."""

from __future__ import annotations

import io
import warnings

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


def test_tabular_standardizer_robust_z_scores_constant_column_zero() -> None:
    frame = pd.DataFrame({"a": np.arange(1.0, 9.0), "b": [10.0] * 8, "c": [0.0] * 6 + [1.0, 5.0]})
    standardizer = TabularStandardizer()
    features = standardizer.fit_transform(frame)
    assert features.shape == (8, 3) and features.dtype == np.float64
    # a: median 4 (the lower middle value), IQR 6 − 2 = 4 → scale 4 / 1.349
    np.testing.assert_allclose(features[:, 0], (frame["a"] - 4.0) / (4.0 / 1.349))
    np.testing.assert_array_equal(features[:, 1], 0.0)  # a single value → 0
    # c: IQR 0 and MAD 0 → the median |x − median| of the values that differ, lower of (1, 5) = 1
    np.testing.assert_allclose(features[:, 2], [0.0] * 6 + [1.0, 5.0])
    new = standardizer.transform(pd.DataFrame({"a": [4.0], "b": [99.0], "c": [0.0]}))
    assert new[0, 0] == pytest.approx(0.0) and new[0, 1] == 0.0


def test_tabular_standardizer_is_close_to_mean_and_sd_on_normal_data() -> None:
    values = np.random.default_rng(0).normal(5.0, 3.0, size=(20_000, 1))
    features = TabularStandardizer().fit_transform(values)
    assert abs(features.mean()) < 0.03 and abs(features.std() - 1.0) < 0.03


@pytest.mark.parametrize("absurd", [1e308, -1e308, 1e160, 1e20])
def test_one_absurd_cell_neither_overflows_nor_erases_its_column(absurd: float) -> None:
    from scipy.stats import spearmanr

    from relabel.scorer import rank

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    flipped = rng.choice(200, 10, replace=False)
    y[flipped] = 1 - y[flipped]
    clean = pd.DataFrame(X, columns=["a", "b", "c"])
    bad = clean.copy()
    bad.loc[5, "a"] = absurd  # the informative column
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value RuntimeWarning
        clean_features = TabularStandardizer().fit_transform(clean)
        bad_features = TabularStandardizer().fit_transform(bad)
    assert np.isfinite(bad_features).all() and np.abs(bad_features).max() <= 10.0
    assert bad_features[5, 0] == np.sign(absurd) * 10.0  # clipped, not inf
    np.testing.assert_allclose(
        np.delete(bad_features, 5, axis=0), np.delete(clean_features, 5, axis=0), rtol=0.05, atol=0.05
    )
    scores = [
        rank(F, y, methods=("self_influence",))["self_influence"] for F in (clean_features, bad_features)
    ]
    assert spearmanr(*scores).statistic >= 0.95  # std scaling: column a became 0 and Spearman 0.20


def test_tabular_standardizer_without_clipping_refuses_a_value_it_cannot_scale() -> None:
    values = np.array([[0.0], [1e-300], [2e-300], [1e308]])
    with pytest.raises(InputError, match="row 3, column 0 is 1e\\+308, too far"):
        TabularStandardizer(clip=None).fit_transform(values)


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
    image = featurizer_for("image", "pixels", size=(4, 4), grayscale=False)
    assert isinstance(image, ImagePixelFeaturizer) and image.n_channels == 3
    assert isinstance(featurizer_for("tabular"), TabularStandardizer)
    with pytest.raises(InputError, match="Unknown input kind"):
        featurizer_for("audio")
    with pytest.raises(InputError, match="Bad options"):
        featurizer_for("tabular", size=3)


def test_cnn_sees_mnist_size_images_by_default_and_pixel_features_stay_8x8() -> None:
    from relabel.dataset import LabeledDataset
    from relabel.featurizers import CNN_IMAGE_SIZE, featurize

    images = [png_bytes((255, 255, 255), size=(40, 40)), png_bytes((0, 0, 0), size=(40, 40))]
    dataset = LabeledDataset(
        ids=np.array([1, 2]),
        inputs=images,
        kind="image",
        labels=np.array(["a", "b"]),
        classes=["a", "b"],
        provenance=pd.DataFrame(index=[1, 2]),
    )
    arrays, shape = featurize(dataset, "cnn")
    assert arrays.shape == (2, 1, CNN_IMAGE_SIZE, CNN_IMAGE_SIZE) == (2, 1, 28, 28)
    assert shape == (1, 28, 28)
    pixels, none = featurize(dataset, "logistic", features="pixels")
    assert pixels.shape == (2, 64) and none is None
    smaller, _ = featurize(dataset, "cnn", image_size=12)
    assert smaller.shape == (2, 1, 12, 12)
