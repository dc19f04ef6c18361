"""The influence-solver interface: everything follows from one abstract method, ``inverse_hvp``.

Definitions (Koh & Liang 2017; the contract of docs/maths.md, § Self-influence and § Pairwise influence).
For training points z_1..z_n with per-example loss gradients g_i = ∇_θ L(z_i, θ̂) at the fitted optimum
θ̂ (the regulariser is *not* part of g_i) and H the Hessian of the training objective J (mean loss +
regulariser) at θ̂, possibly damped (H + δI):

    self_influence_i = g_iᵀ H⁻¹ g_i  ≥ 0            ( = −I_up,loss(z_i, z_i) in the paper; no 1/n factor )
    influence(j → i) = g_jᵀ H⁻¹ g_i                 ( = −I_up,loss(z_j, z_i) )

Higher self-influence = the model had to bend more to fit that point = more suspicious.
``influence(j → i) > 0`` means training point j *supports* item i's current label: removing j
(upweighting by ε = −1/n) would raise the loss of i by ≈ influence(j → i)/n.
Units: loss units (nats) per unit of upweighting ε, i.e. dimensionless nats.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np


class TrainingGradients(Protocol):
    """Access to the per-example loss gradients g_i at θ̂ (rows of the n × p gradient matrix)."""

    n_items: int
    n_parameters: int

    def per_example_gradients(self, indices: np.ndarray) -> Any:
        """Rows g_i for the given item indices, shape (len(indices), p) (numpy array or torch tensor)."""
        ...


def index_chunks(n_items: int, chunk_size: int) -> Iterator[np.ndarray]:
    """Consecutive index blocks 0..n-1 of at most ``chunk_size`` items."""
    for start in range(0, n_items, chunk_size):
        yield np.arange(start, min(start + chunk_size, n_items))


class InfluenceSolver(ABC):
    """Self-influence and pairwise influence from one abstract operation, ``inverse_hvp``.

    Subclasses differ only in how they apply H⁻¹ (exact Cholesky, LiSSA, ...). ``chunk_size`` bounds
    memory: at most ``chunk_size`` gradient rows are held at once, and results do not depend on it.
    """

    def __init__(self, gradients: TrainingGradients, chunk_size: int = 1024) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be ≥ 1; got {chunk_size}")
        self.gradients = gradients
        self.chunk_size = int(chunk_size)

    @abstractmethod
    def inverse_hvp(self, vectors: Any) -> Any:
        """H⁻¹ v for each row v of ``vectors`` (shape (m, p)); returns the same shape and type."""

    def describe(self) -> str:
        """One line: which solver ran and its accuracy diagnostics (subclasses say more)."""
        return f"{type(self).__name__}: p = {self.gradients.n_parameters:,}"

    def self_influence_of(self, gradient_rows: Any) -> np.ndarray:
        """g_iᵀ H⁻¹ g_i for each row g_i; shape (m,), float64."""
        solved = self.inverse_hvp(gradient_rows)
        return _to_numpy((gradient_rows * solved).sum(1))

    def self_influence(self, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """self_influence_i = g_iᵀ H⁻¹ g_i for every training item, shape (n,), in item order.

        ``progress`` (optional) is called with the number of items finished after each chunk.
        """
        scores = np.empty(self.gradients.n_items, dtype=np.float64)
        for indices in index_chunks(self.gradients.n_items, self.chunk_size):
            scores[indices] = self.self_influence_of(self.gradients.per_example_gradients(indices))
            if progress is not None:
                progress(len(indices))
        return scores

    def influence_on(self, item_gradient: Any) -> np.ndarray:
        """influence(j → i) = g_jᵀ H⁻¹ g_i for every training point j, for one item gradient g_i (p,).

        One H⁻¹ application, then one pass over the training gradients in chunks; shape (n,).
        """
        solved = self.inverse_hvp(item_gradient[None, :])[0]
        result = np.empty(self.gradients.n_items, dtype=np.float64)
        for indices in index_chunks(self.gradients.n_items, self.chunk_size):
            result[indices] = _to_numpy(self.gradients.per_example_gradients(indices) @ solved)
        return result


def _to_numpy(values: Any) -> np.ndarray:
    """float64 numpy copy of a numpy array or torch tensor (moved to the CPU)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    return values.detach().to("cpu").double().numpy()
