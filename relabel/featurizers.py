"""Featurizers: raw inputs of one kind (text, image, tabular) -> a float64 feature matrix.

Every featurizer has the same two methods:

* ``fit_transform(inputs) -> np.ndarray`` of shape ``(n_items, n_features)``, dtype float64: learn what it
  needs from ``inputs`` (vocabulary, column means) and return their features;
* ``transform(inputs)``: features of new inputs with what was learned (raises InputError before a fit,
  for featurizers that learn something).

All of them are deterministic: the same inputs give the same matrix, bit for bit.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import pandas as pd

from relabel.dataset import LabeledDataset, text_inputs
from relabel.errors import InputError
from relabel.models.cnn import CNN_IMAGE_SIZE  # noqa: F401  (re-exported: the CNN default side)

if TYPE_CHECKING:
    from relabel.image_embeddings import ImageEmbeddingFeaturizer
    from relabel.text_embeddings import SentenceEmbeddingFeaturizer


class TextTfidfFeaturizer:
    """TF-IDF of word unigrams (scikit-learn ``TfidfVectorizer``), as a dense matrix.

    Output: ``(n_texts, n_terms)`` float64, ``n_terms <= max_features`` (the most frequent terms of the fit
    texts, ties broken alphabetically); each row is L2-normalised (unit length; an empty text gives a
    zero row).
    """

    feature_note: str | None = None  # set by featurizer_for when "auto" fell back

    def __init__(self, max_features: int = 5000, lowercase: bool = True, sublinear_tf: bool = True) -> None:
        self.max_features = max_features
        self.lowercase = lowercase
        self.sublinear_tf = sublinear_tf
        self._vectorizer: Any = None

    def fit_transform(self, inputs: Sequence[str]) -> np.ndarray:
        """Learn the vocabulary and IDF weights from ``inputs``; return ``(n, n_terms)`` float64."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = text_inputs(inputs)
        self._vectorizer = TfidfVectorizer(
            max_features=self.max_features,
            lowercase=self.lowercase,
            sublinear_tf=self.sublinear_tf,
            dtype=np.float64,
        )
        try:
            matrix = self._vectorizer.fit_transform(texts)
        except ValueError as error:  # empty vocabulary: only stop words / empty strings
            raise InputError(f"Cannot build text features: {error}; the texts hold no words") from None
        return np.asarray(matrix.toarray(), dtype=np.float64)

    def transform(self, inputs: Sequence[str]) -> np.ndarray:
        """Features of ``inputs`` with the fitted vocabulary; ``(n, n_terms)`` float64."""
        if self._vectorizer is None:
            raise InputError("TextTfidfFeaturizer.transform called before fit_transform")
        return np.asarray(self._vectorizer.transform(text_inputs(inputs)).toarray(), dtype=np.float64)

    @property
    def feature_names(self) -> list[str]:
        """The term of each output column (after a fit)."""
        if self._vectorizer is None:
            return []
        return [str(name) for name in self._vectorizer.get_feature_names_out()]


PIXEL_IMAGE_SIZE = 8  # default side in pixels of the pixel features of the logistic and mlp models


class ImagePixelFeaturizer:
    """Images (encoded files as bytes) -> resized pixel values in [0, 1].

    Each image is decoded with Pillow, converted to grayscale (``"L"``, C=1) or RGB (C=3), resized to
    ``size = (width, height)`` with bilinear filtering, and scaled from 0..255 to 0..1.

    * :meth:`image_arrays`: ``(n, C, H, W)`` float64, for a CNN;
    * :meth:`fit_transform` / :meth:`transform`: the same values flattened to ``(n, C*H*W)`` float64 (channel,
      then row, then column), for the logistic model. Nothing is learned: both give the same result.
    """

    feature_note: str | None = None  # set by featurizer_for when "auto" fell back

    def __init__(
        self, size: tuple[int, int] = (PIXEL_IMAGE_SIZE, PIXEL_IMAGE_SIZE), grayscale: bool = True
    ) -> None:
        width, height = size
        if width < 1 or height < 1:
            raise InputError(f"Image size must be positive, got {size}")
        self.size = (int(width), int(height))
        self.grayscale = grayscale

    @property
    def n_channels(self) -> int:
        """C: 1 for grayscale, 3 for RGB."""
        return 1 if self.grayscale else 3

    def image_arrays(self, inputs: Sequence[bytes]) -> np.ndarray:
        """``(n, C, H, W)`` float64 pixel values in [0, 1]."""
        from PIL import Image, UnidentifiedImageError

        width, height = self.size
        arrays = np.empty((len(inputs), self.n_channels, height, width), dtype=np.float64)
        for position, content in enumerate(inputs):
            try:
                with Image.open(io.BytesIO(content)) as image:
                    converted = image.convert("L" if self.grayscale else "RGB")
                    resized = converted.resize(self.size, resample=Image.Resampling.BILINEAR)
                    pixels = np.asarray(resized, dtype=np.float64) / 255.0
            except (UnidentifiedImageError, OSError, TypeError, ValueError) as error:
                raise InputError(
                    f"Image input {position} cannot be decoded ({type(error).__name__})"
                ) from None
            arrays[position] = pixels[np.newaxis] if self.grayscale else pixels.transpose(2, 0, 1)
        return arrays

    def fit_transform(self, inputs: Sequence[bytes]) -> np.ndarray:
        """``(n, C*H*W)`` float64 pixel values in [0, 1]."""
        return self.transform(inputs)

    def transform(self, inputs: Sequence[bytes]) -> np.ndarray:
        """``(n, C*H*W)`` float64 pixel values in [0, 1]."""
        arrays = self.image_arrays(inputs)
        return arrays.reshape(len(arrays), -1)


class TabularStandardizer:
    """Numeric columns -> robust z-scores: ``(x − median) / scale``, clipped to ``[−clip, clip]``.

    Robust so that one absurd cell (``1e308`` typed by mistake) cannot erase a column, as a mean and a
    standard deviation would (its deviation overflows, or dwarfs every other value's):

    * centre: the column's median; scale: its interquartile range / 1.349 (equal to the standard deviation
      for normal data). When the IQR is 0 (over half the values equal) the scale is the median absolute
      deviation × 1.4826, and when that is 0 too, the median of ``|x − median|`` over the values that differ
      from the median (a 0/1 column with 90 % zeros gets scale 1). A column with a single value maps to 0.
      Quantiles are order statistics (``method="inverted_cdf"``: values of the column, never interpolated).
    * overflow-free: deviations and scales are computed on halved values (``x/2 − m/2``), which cannot
      overflow for finite inputs, and z-scores beyond ``clip`` (default 10, i.e. ten standard deviations of
      normal data; None: no clipping) are set to ``±clip``, so the output is always finite.

    Output: ``(n_rows, n_columns)`` float64. ``transform`` uses the fit's medians and scales and requires the
    same columns (by name when the inputs are DataFrames).
    """

    feature_note: str | None = None  # set by featurizer_for when "auto" fell back

    IQR_TO_SD = 1.349
    MAD_TO_SD = 1.4826

    def __init__(self, clip: float | None = 10.0) -> None:
        if clip is not None and not float(clip) > 0:
            raise InputError(f"TabularStandardizer clip must be > 0 or None; got {clip!r}")
        self.clip = None if clip is None else float(clip)
        self.center_: np.ndarray | None = None
        self.half_scale_: np.ndarray | None = None
        self.columns_: list[str] | None = None

    def _matrix(self, inputs: pd.DataFrame | np.ndarray) -> np.ndarray:
        if isinstance(inputs, pd.DataFrame):
            if self.columns_ is not None and list(map(str, inputs.columns)) != self.columns_:
                raise InputError(
                    f"Tabular columns {list(map(str, inputs.columns))} differ from the fitted ones "
                    f"{self.columns_}"
                )
            try:
                matrix = inputs.to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError("Tabular inputs hold non-numeric values") from None
        else:
            matrix = np.asarray(inputs, dtype=np.float64)
        if matrix.ndim != 2:
            raise InputError(f"Tabular inputs must be 2-D (rows x columns), got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            row, column = np.argwhere(~np.isfinite(matrix))[0]
            raise InputError(
                f"Tabular input row {row}, column {column} is {matrix[row, column]}; need finite numbers"
            )
        return matrix

    @staticmethod
    def _quantiles(values: np.ndarray, q: list[float]) -> np.ndarray:
        return np.quantile(values, q, axis=0, method="inverted_cdf")

    def fit_transform(self, inputs: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Learn per-column median and robust scale; return the clipped robust z-scores (n, d), float64."""
        self.columns_ = None
        matrix = self._matrix(inputs)
        self.columns_ = list(map(str, inputs.columns)) if isinstance(inputs, pd.DataFrame) else None
        if len(matrix) == 0:
            raise InputError("Tabular inputs hold no rows")
        q1, center, q3 = self._quantiles(matrix, [0.25, 0.5, 0.75])
        half_scale = (q3 / 2 - q1 / 2) / self.IQR_TO_SD  # halved: cannot overflow
        deviation = np.abs(matrix / 2 - center / 2)
        for column in np.flatnonzero(half_scale <= 0):
            values = deviation[:, column]
            mad = self._quantiles(values, [0.5])[0] * self.MAD_TO_SD
            differing = values[values > 0]
            half_scale[column] = (
                mad if mad > 0 else (self._quantiles(differing, [0.5])[0] if len(differing) else 0)
            )
        self.center_ = center
        self.half_scale_ = np.where(half_scale > 0, half_scale, np.inf)  # x / inf = 0: single-value columns
        return self.transform(inputs)

    def transform(self, inputs: pd.DataFrame | np.ndarray) -> np.ndarray:
        """``clip((x − median) / scale)`` per column with the fitted statistics; (n, d) float64, finite."""
        if self.center_ is None or self.half_scale_ is None:
            raise InputError("TabularStandardizer.transform called before fit_transform")
        matrix = self._matrix(inputs)
        if matrix.shape[1] != len(self.center_):
            raise InputError(
                f"Tabular inputs have {matrix.shape[1]} columns; the fit had {len(self.center_)}"
            )
        with np.errstate(over="ignore"):  # a huge deviation over a small scale → ±inf, clipped below
            z = (matrix / 2 - self.center_ / 2) / self.half_scale_
        if self.clip is not None:
            np.clip(z, -self.clip, self.clip, out=z)
        elif not np.isfinite(z).all():
            row, column = np.argwhere(~np.isfinite(z))[0]
            raise InputError(
                f"Tabular input row {row}, column {column} is {matrix[row, column]:g}, too far from the "
                "column's other values to scale; fix the cell or scale with clipping"
            )
        return z


#: Feature sets (``--features``). Text: "auto" = sentence embeddings when the ``text`` extra is installed,
#: TF-IDF otherwise; "embeddings" (:class:`relabel.text_embeddings.SentenceEmbeddingFeaturizer`); "tfidf".
#: Images: "auto" = pretrained EfficientNet-Lite0 embeddings when the ``image`` extra is installed, pixels
#: otherwise; "embeddings" (:class:`relabel.image_embeddings.ImageEmbeddingFeaturizer`); "pixels"
#: (:class:`ImagePixelFeaturizer`). Tabular inputs take only "auto".
FEATURE_SETS: tuple[str, ...] = ("auto", "embeddings", "tfidf", "pixels")
TEXT_FEATURE_SETS: tuple[str, ...] = ("auto", "embeddings", "tfidf")
IMAGE_FEATURE_SETS: tuple[str, ...] = ("auto", "embeddings", "pixels")
#: Options only the sentence-embedding featurizer takes (TF-IDF ignores them when "auto" falls back).
EMBEDDING_ONLY_OPTIONS = ("model", "device", "batch_size", "cache_dir", "progress", "long_text", "max_chunks")
#: Options only the image-embedding featurizer takes (pixels ignore them).
IMAGE_EMBEDDING_ONLY_OPTIONS = ("model", "device", "batch_size", "cache_dir", "progress")


class FeatureFallbackWarning(UserWarning):
    """features="auto" fell back to TF-IDF (text) or pixels (images) because the extra is not installed."""


Featurizer = Union[  # the embedding classes are names only while type checking
    TextTfidfFeaturizer,
    "SentenceEmbeddingFeaturizer",
    ImagePixelFeaturizer,
    "ImageEmbeddingFeaturizer",
    TabularStandardizer,
]


def resolve_text_features(features: str = "auto") -> tuple[str, str | None]:
    """Which text features ``features`` means here: ``("embeddings" | "tfidf", note)``.

    ``note`` is None, or one line saying that "auto" fell back to TF-IDF and how to get the better features.
    "embeddings" without the extra raises InputError with the install command.
    """
    from relabel.text_embeddings import TEXT_EXTRA_HINT, embeddings_available, model_spec

    if features not in TEXT_FEATURE_SETS:
        raise InputError(f"unknown text features {features!r}: choose one of {', '.join(TEXT_FEATURE_SETS)}")
    if features == "tfidf":
        return "tfidf", None
    if features == "embeddings":
        model_spec()  # InputError naming what to install when the extra is missing
        return "embeddings", None
    if embeddings_available():
        return "embeddings", None
    return "tfidf", (f"text features: TF-IDF (sentence embeddings find more label errors: {TEXT_EXTRA_HINT})")


def resolve_image_features(features: str = "auto") -> tuple[str, str | None]:
    """Which image features ``features`` means here: ``("embeddings" | "pixels", note)``.

    "auto" means pixels (the embeddings did not beat pixels on the digits measured, at ~40× the time);
    ``note`` is None, or, for "auto" without the ``image`` extra, one line saying how to get the embeddings.
    "embeddings" without the extra raises InputError with the install command.
    """
    from relabel.image_embeddings import IMAGE_EXTRA_HINT, image_embeddings_available, image_model_spec

    if features not in IMAGE_FEATURE_SETS:
        raise InputError(
            f"unknown image features {features!r}: choose one of {', '.join(IMAGE_FEATURE_SETS)}"
        )
    if features == "pixels":
        return "pixels", None
    if features == "embeddings":
        image_model_spec()  # InputError naming what to install when the extra is missing
        return "embeddings", None
    # "auto" is pixels: measured on MNIST-size digits, the ImageNet embeddings found fewer planted flips
    # than 8×8 pixels (62–65 % vs 65–70 % at 10 % checked) at ~40× the time (scripts/bench_image_features.py);
    # embeddings are asked for by name until auto's model choice measures them per project.
    note = None if image_embeddings_available() else (
        f"image features: pixels (pretrained image embeddings, --features embeddings, need the image extra: "
        f"{IMAGE_EXTRA_HINT})"
    )
    return "pixels", note


def featurizer_for(kind: str, features: str = "auto", **options: Any) -> Featurizer:
    """The featurizer for an input kind: ``"text"``, ``"image"`` or ``"tabular"``; ``options`` go to it.

    ``features`` chooses among :data:`TEXT_FEATURE_SETS` for text (:func:`resolve_text_features`) and
    :data:`IMAGE_FEATURE_SETS` for images (:func:`resolve_image_features`); when "auto" falls back (to
    TF-IDF, to pixels), a :class:`FeatureFallbackWarning` is issued and the featurizer's ``feature_note``
    holds the same line (None otherwise). Tabular inputs take only "auto". Options only an embedding
    featurizer takes are dropped when the other features are used.
    """
    classes: dict[str, Any] = {
        "text": TextTfidfFeaturizer,
        "image": ImagePixelFeaturizer,
        "tabular": TabularStandardizer,
    }
    if kind not in classes:
        raise InputError(f"Unknown input kind {kind!r}; expected one of {', '.join(classes)}")
    note = None
    if kind == "text":
        chosen, note = resolve_text_features(features)
        if chosen == "embeddings":
            from relabel.text_embeddings import SentenceEmbeddingFeaturizer

            classes["text"] = SentenceEmbeddingFeaturizer
        else:
            options = {k: v for k, v in options.items() if k not in EMBEDDING_ONLY_OPTIONS}
    elif kind == "image":
        chosen, note = resolve_image_features(features)
        if chosen == "embeddings":
            from relabel.image_embeddings import ImageEmbeddingFeaturizer

            classes["image"] = ImageEmbeddingFeaturizer
            options = {k: v for k, v in options.items() if k != "grayscale"}
        else:
            options = {k: v for k, v in options.items() if k not in IMAGE_EMBEDDING_ONLY_OPTIONS}
    elif features not in ("auto", None):
        if features not in FEATURE_SETS:
            raise InputError(f"unknown features {features!r}: choose one of {', '.join(FEATURE_SETS)}")
        raise InputError(
            f"features={features!r} applies to text and images; {kind} inputs take features='auto'"
        )
    try:
        featurizer = classes[kind](**options)
    except TypeError as error:
        raise InputError(f"Bad options for the {kind} featurizer: {error}") from None
    featurizer.feature_note = note
    if note is not None:
        warnings.warn(note, FeatureFallbackWarning, stacklevel=2)
    return featurizer


def featurize(
    dataset: LabeledDataset,
    model: str,
    image_size: int | None = None,
    *,
    features: str = "auto",
    device: str = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, Any]:
    """Features of a dataset for ``model``: (n, d) float64 rows, or (n, C, H, W) pixel arrays for the CNN.

    Uses :func:`featurizer_for` (text → sentence embeddings or TF-IDF per ``features``; image → pretrained
    embeddings or pixels per ``features``, always pixels for a model that takes images (the CNN); tabular
    → robust z-scores); ``image_size`` overrides the image side length in pixels (default: the model kind's
    ``default_image_size``: 8 for pixel features, ``CNN_IMAGE_SIZE`` = 28, MNIST's size, for the CNN; 224
    for image embeddings); ``device``/``progress`` go to the embedding models. Returns the features and the
    ``image_shape`` (C, H, W) to hand to a model that takes images (None otherwise).
    """
    from relabel.models import model_kind

    kind = model_kind(model)
    options: dict[str, Any] = {}
    if image_size is None and kind.inputs == "images":
        image_size = kind.default_image_size
    if image_size is not None and dataset.kind == "image":
        options["size"] = (int(image_size), int(image_size))
    if dataset.kind in ("text", "image"):
        options.update(device=device, progress=progress)
    if dataset.kind == "image" and kind.inputs == "images":
        features = "pixels"  # the CNN learns its own features from the pixels
    chosen = features if dataset.kind in ("text", "image") else "auto"
    featurizer = featurizer_for(dataset.kind, chosen, **options)
    if kind.inputs == "images":
        if dataset.kind != "image":
            raise InputError(f"model {kind.name!r} needs an image project; this one is {dataset.kind}")
        arrays = np.asarray(featurizer.image_arrays(dataset.inputs), dtype=np.float64)
        return arrays, tuple(int(side) for side in arrays.shape[1:])
    X = np.asarray(featurizer.fit_transform(dataset.inputs), dtype=np.float64)
    return X.reshape(len(X), -1), None
