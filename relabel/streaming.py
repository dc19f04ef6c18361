"""Exact self-influence ranking of a tabular CSV/Parquet file in memory bounded independently of n
(``relabel rank --stream``): the logistic model of :mod:`relabel.logistic`, scored as in
:mod:`relabel.influence.exact`, with the data read in row chunks and never held whole.

Passes:
  1. the file, ``chunk_rows`` rows at a time (:func:`connectors.files.iter_labeled_chunks`): each row's
     label and id are kept (n small values, for the ranks and the output), its raw features are appended
     to a scratch file (float64, mode 0600 in a 0700 temporary folder, deleted at the end), and a uniform
     reservoir sample of ``sample_rows`` rows (Vitter's algorithm R, seeded) is kept for the robust
     scaling;
  2. the robust z-scores of :class:`relabel.featurizers.TabularStandardizer` (median, IQR/1.349, the MAD
     fallbacks, clip ±10) are fitted on the sample: exact when n ≤ ``sample_rows``, else the sample's
     quantiles, whose standard error is √(q(1 − q)/R)/f(x_q) (for normal data and R = 100,000: 0.004 σ for
     the median, ≈ 0.5 % of the IQR); one pass rewrites the scratch file as the scaled design
     X̃ = [z(x), 1] (and deletes the raw copy), which every later pass reads chunk by chunk;
  3. the fit (:func:`relabel.logistic.minimize_objective`: L-BFGS, then Newton–CG to ‖∇J‖ ≤ 1e-8), each
     J, ∇J and Hessian-vector product one pass over the scratch file;
  4. H accumulated chunk by chunk (:class:`relabel.influence.exact.HessianAccumulator`), one Cholesky;
  5. per chunk: probabilities, loss, margin, and self_influence_i = ‖L⁻¹g_i‖² by triangular solves on
     ``solve_rows`` gradient rows at a time.

Memory beyond the interpreter: 8·(2p² + chunk·(d + 1)·c + solve_rows·p + R·d) bytes (H and its factor,
a few chunk-sized arrays, the gradient rows, the sample) plus ≈ 8·n·(methods + 3) bytes for the per-item
ids, labels and scores the ranks need; the n × d data live only in the scratch file (8·n·(d + 1) bytes on
disk, twice that while it is rewritten).
"""

from __future__ import annotations

import os
import resource
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from scipy import linalg
from scipy.special import log_softmax

from connectors.files import iter_labeled_chunks, sorted_class_texts
from relabel.errors import ConvergenceError, InputError
from relabel.featurizers import TabularStandardizer
from relabel.influence.exact import HessianAccumulator, check_parameter_budget
from relabel.logistic import LogisticFit, LogisticObjective, minimize_objective
from relabel.methods import cross_entropy_loss, probability_margin, random_scores
from relabel.selection import add_rank_columns

DEFAULT_CHUNK_ROWS = 65_536
DEFAULT_SAMPLE_ROWS = 100_000
SOLVE_ROWS = 1024


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux ``ru_maxrss`` is in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class RowReservoir:
    """A uniform random sample of at most ``capacity`` rows of a stream (algorithm R): row t (0-based)
    replaces a uniformly drawn slot j ∈ [0, t] when j < capacity, so every row is kept with probability
    capacity / n. Memory: capacity × columns floats."""

    def __init__(self, capacity: int, n_columns: int, seed: int = 0) -> None:
        self.sample = np.empty((int(capacity), n_columns), dtype=np.float64)
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, rows: np.ndarray) -> None:
        capacity = len(self.sample)
        filling = max(0, min(capacity - self.seen, len(rows)))
        self.sample[self.seen : self.seen + filling] = rows[:filling]
        positions = np.arange(self.seen + filling, self.seen + len(rows))
        if len(positions):
            slots = self.rng.integers(0, positions + 1)
            kept = slots < capacity
            self.sample[slots[kept]] = rows[filling:][kept]  # later rows win a shared slot, as in order
        self.seen += len(rows)

    def rows(self) -> np.ndarray:
        return self.sample[: min(self.seen, len(self.sample))]


def _scratch_writer(path: Path) -> BinaryIO:
    """A new file at ``path`` opened for binary writing, mode 0600 (it must not exist)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


class ScratchDesign:
    """The features on disk (row-major float64, mode 0600) and the per-row class codes. Raw features are
    appended in pass 1; :meth:`scale` rewrites them once as the design X̃ = [z(x), 1] (the raw copy is
    deleted), which :meth:`chunks` then reads chunk by chunk."""

    def __init__(self, folder: Path, n_columns: int, chunk_rows: int) -> None:
        self.folder, self.path = folder, folder / "features.f64"
        self.writer = _scratch_writer(self.path)
        self.n_columns, self.chunk_rows, self.n_rows = n_columns, chunk_rows, 0
        self.width = n_columns  # columns stored per row: d raw, then d + 1 after scale()
        self.codes = np.empty(0, dtype=np.int64)

    def append(self, features: np.ndarray) -> None:
        self.writer.write(np.ascontiguousarray(features, dtype=np.float64).tobytes())
        self.n_rows += len(features)

    def close(self) -> None:
        self.writer.close()

    def _stored_chunks(self) -> Iterator[tuple[slice, np.ndarray]]:
        with self.path.open("rb") as reader:
            for start in range(0, self.n_rows, self.chunk_rows):
                stop = min(start + self.chunk_rows, self.n_rows)
                stored = np.fromfile(reader, dtype=np.float64, count=(stop - start) * self.width)
                yield slice(start, stop), stored.reshape(stop - start, self.width)

    def scale(self, scaler: TabularStandardizer | None) -> None:
        """Rewrite the raw features as X̃ = [z(x), 1] with the fitted ``scaler`` (None: raw x)."""
        design_path = self.folder / "design.f64"
        with _scratch_writer(design_path) as writer:
            for _, raw in self._stored_chunks():
                design = np.empty((len(raw), self.n_columns + 1), dtype=np.float64)
                design[:, :-1] = scaler.transform(raw) if scaler is not None else raw
                design[:, -1] = 1.0
                writer.write(design.tobytes())
        self.path.unlink()
        self.path, self.width = design_path, self.n_columns + 1

    def chunks(self) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """(rows, X̃ chunk (m, d+1) float64, class codes (m,)) over the whole file, in file order."""
        assert self.width == self.n_columns + 1, "scale() first"
        for rows, design in self._stored_chunks():
            yield rows, design, self.codes[rows]


class StreamedLogisticObjective(LogisticObjective):
    """J, ∇J and Hv of :class:`relabel.logistic.LogisticObjective`, each one pass over a
    :class:`ScratchDesign` (chunk sums in float64, so only the summation order differs)."""

    def __init__(self, design: ScratchDesign, n_classes: int, l2: float) -> None:
        self.design, self.n_classes, self.l2 = design, n_classes, float(l2)
        self.n, self.width = design.n_rows, design.n_columns + 1

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        Theta = self.unflatten(theta)
        loss, gradient = 0.0, np.zeros_like(Theta)
        for _, X_chunk, y_chunk in self.design.chunks():
            log_p = log_softmax(X_chunk @ Theta, axis=1)
            picked = np.arange(len(y_chunk)), y_chunk
            loss -= float(log_p[picked].sum())
            residual = np.exp(log_p)
            residual[picked] -= 1.0
            gradient += X_chunk.T @ residual
        value = loss / self.n + 0.5 * self.l2 * float(theta @ theta)
        return value, self.flatten(gradient / self.n + self.l2 * Theta)

    def hessian_vector_product_operator(self, theta: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        Theta = self.unflatten(theta)

        def hessian_vector_product(v: np.ndarray) -> np.ndarray:
            V = self.unflatten(v)
            product = np.zeros_like(V)
            for _, X_chunk, _ in self.design.chunks():
                P = np.exp(log_softmax(X_chunk @ Theta, axis=1))
                PA = P * (X_chunk @ V)
                product += X_chunk.T @ (PA - P * PA.sum(axis=1, keepdims=True))
            return self.flatten(product / self.n + self.l2 * V)

        return hessian_vector_product


@dataclass
class StreamedRanking:
    """What :func:`stream_rank` returns: one row per item in file order (``scores``: the id and label
    columns, each method's score and ``rank_<method>``, ``predicted_label``, ``predicted_probability``),
    the classes, the fit, the rows the scaling was fitted on and the process's peak RSS in bytes."""

    scores: pd.DataFrame
    classes: list[str]
    fit: LogisticFit
    sample_rows: int
    peak_rss_bytes: int


def read_into_scratch(
    path: Path,
    folder: Path,
    label_column: str,
    id_column: str | None,
    feature_columns: Sequence[str] | None,
    chunk_rows: int,
    sample_rows: int,
) -> tuple[ScratchDesign, RowReservoir, np.ndarray, np.ndarray]:
    """Pass 1: (scratch design with codes, reservoir, ids, label texts) — see the module docstring."""
    design: ScratchDesign | None = None
    reservoir: RowReservoir | None = None
    ids, labels = [], []
    for chunk in iter_labeled_chunks(path, label_column, id_column, feature_columns, chunk_rows):
        if design is None:
            design = ScratchDesign(folder, chunk.features.shape[1], chunk_rows)
            reservoir = RowReservoir(sample_rows, chunk.features.shape[1])
        design.append(chunk.features)
        reservoir.add(chunk.features)  # type: ignore[union-attr]
        ids.append(chunk.ids)
        labels.append(chunk.labels)
    assert design is not None and reservoir is not None  # iter_labeled_chunks refuses an empty file
    design.close()
    all_ids = np.concatenate(ids)
    duplicated = pd.Series(all_ids).duplicated(keep="first").to_numpy()
    if duplicated.any():
        first = int(np.flatnonzero(duplicated)[0])
        raise InputError(
            f"{path}: data row {first + 1} repeats id {all_ids.tolist()[first]!r} of column {id_column!r}; "
            "ids must be unique"
        )
    return design, reservoir, all_ids, np.concatenate(labels)


def factor_streamed_hessian(design: ScratchDesign, fit: LogisticFit) -> np.ndarray:
    """Pass 4: L with H = LLᵀ, H accumulated chunk by chunk."""
    accumulator = HessianAccumulator(design.n_columns + 1, fit.n_classes)
    for _, X_chunk, _ in design.chunks():
        accumulator.add(X_chunk, np.exp(log_softmax(X_chunk @ fit.Theta, axis=1)))
    try:
        return linalg.cholesky(accumulator.hessian(fit.l2), lower=True, overwrite_a=True)
    except (linalg.LinAlgError, ValueError) as error:
        message = f"the logistic Hessian is not positive definite ({error}); raise l2"
        raise ConvergenceError(message) from error


def streamed_scores(
    design: ScratchDesign, fit: LogisticFit, methods: Sequence[str], seed: int
) -> dict[str, np.ndarray]:
    """Pass 5: each method's score (n,), ``predicted`` (class index) and ``probability`` per item."""
    n = design.n_rows
    columns = {name: np.empty(n) for name in (*methods, "probability")}
    columns["predicted"] = np.empty(n, dtype=np.int64)
    factor = factor_streamed_hessian(design, fit) if "self_influence" in methods else None
    for rows, X_chunk, y_chunk in design.chunks():
        P = np.exp(log_softmax(X_chunk @ fit.Theta, axis=1))
        columns["predicted"][rows] = P.argmax(axis=1)
        columns["probability"][rows] = P.max(axis=1)
        if "loss" in methods:
            columns["loss"][rows] = cross_entropy_loss(P, y_chunk)
        if "margin" in methods:
            columns["margin"][rows] = probability_margin(P, y_chunk)
        if factor is not None:
            residual = P
            residual[np.arange(len(y_chunk)), y_chunk] -= 1.0
            scores = columns["self_influence"][rows]
            for start in range(0, len(y_chunk), SOLVE_ROWS):
                part = slice(start, start + SOLVE_ROWS)
                gradients = np.einsum("ik,ij->ikj", residual[part], X_chunk[part])
                gradients = gradients.reshape(len(gradients), -1)
                whitened = linalg.solve_triangular(factor, gradients.T, lower=True, check_finite=False)
                scores[part] = np.einsum("ij,ij->j", whitened, whitened)
    if "random" in methods:
        columns["random"] = random_scores(n, seed)
    return columns


def stream_rank(
    path: str | Path,
    label_column: str,
    *,
    id_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    methods: Sequence[str] = ("self_influence", "loss"),
    l2: float = 1e-3,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    raw_features: bool = False,
    gradient_tolerance: float = 1e-8,
) -> StreamedRanking:
    """Rank a tabular file's rows by label suspicion in bounded memory (module docstring); InputError for
    bad input (as :class:`connectors.files.FileConnector`), ConvergenceError when the fit fails."""
    if chunk_rows < 1 or sample_rows < 1:
        raise InputError(f"chunk rows and sample rows must be ≥ 1; got {chunk_rows} and {sample_rows}")
    with tempfile.TemporaryDirectory(prefix="relabel-stream-") as folder:  # created 0700
        design, reservoir, ids, labels = read_into_scratch(
            Path(path), Path(folder), label_column, id_column, feature_columns, chunk_rows, sample_rows
        )
        classes = sorted_class_texts(set(labels.tolist()))
        design.codes = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
        counts = np.bincount(design.codes, minlength=len(classes))
        if len(classes) < 2 or counts.min() < 2:
            raise InputError(
                f"{path}: ranking needs at least two classes with at least 2 rows each; class counts: "
                + ", ".join(f"{name}: {count}" for name, count in zip(classes, counts, strict=True))
            )
        scaler = None if raw_features else TabularStandardizer()
        if scaler is not None:
            scaler.fit_transform(reservoir.rows())
        design.scale(scaler)
        p = len(classes) * (design.n_columns + 1)
        check_parameter_budget(p, len(classes), SOLVE_ROWS)
        objective = StreamedLogisticObjective(design, len(classes), l2)
        fit = minimize_objective(objective, gradient_tolerance=gradient_tolerance)
        columns = streamed_scores(design, fit, methods, seed)
    frame = pd.DataFrame({id_column or "row": ids, label_column: labels})
    for method in methods:
        frame[method] = columns[method]
    add_rank_columns(frame, methods)
    frame["predicted_label"] = np.asarray(classes, dtype=object)[columns["predicted"]]
    frame["predicted_probability"] = columns["probability"]
    return StreamedRanking(frame, classes, fit, len(reservoir.rows()), peak_rss_bytes())
