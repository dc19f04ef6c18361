"""Exact self-influence for the multinomial logistic model: blockwise Hessian, one Cholesky.

With p = K·(d+1) parameters (class-major layout of :mod:`relabel.logistic`), at the optimum Θ̂
(docs/maths.md, § Gradients and Hessian and § Exact solver):

    g_i = (p_i − e_{y_i}) ⊗ x̃_i                                   (per-example CE gradient)
    H   = (1/n) Σ_i (diag(p_i) − p_i p_iᵀ) ⊗ x̃_i x̃_iᵀ + λ I
        block (k, l) = (1/n) X̃ᵀ diag(w_kl) X̃ + λ δ_kl I,   w_kl,i = p_ik δ_kl − p_ik p_il

Algorithm (float64 throughout):
  1. build the K(K+1)/2 distinct blocks of H over row chunks: GEMMs off the diagonal, SYRKs on it
                                                                          ≈ n·K²·(d+1)² flops;
  2. factor H = L Lᵀ once (LAPACK potrf)                                  ≈ p³/3 flops;
  3. self_influence_i = g_iᵀ H⁻¹ g_i = ‖L⁻¹ g_i‖², by triangular solves on chunks of the n × p
     gradient matrix (LAPACK trsm)                                        ≈ n·p² flops.
H is never inverted and no point is solved alone. Peak memory ≈ 8·(p² + 2·chunk·p + chunk·K·(d+1))
bytes beyond X̃ itself; the chunk size changes memory and speed, never the numbers beyond rounding.

Memory budget: H is dense, so its size grows as p² (a 10-class text project with 5,000 TF-IDF terms has
p ≈ 50,000: 20 GB for H alone). Before allocating anything the solver estimates the bytes of H and of its
Cholesky factor (counted as a second p × p array: LAPACK may copy H), plus the gradient chunks, by
:func:`exact_solver_bytes`; above the budget it raises an InputError naming the settings to change (fewer
features, the iterative solver) instead of exhausting the machine's memory. Default budget:
:data:`DEFAULT_MEMORY_BUDGET_BYTES` = 4 GiB (p up to ≈ 16,000), overridden by the ``memory_budget_bytes``
parameter or the environment variable ``RELABEL_EXACT_MEMORY_GIB`` (GiB, e.g. ``24``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from scipy import linalg

from relabel.errors import ConvergenceError, InputError
from relabel.influence.base import InfluenceSolver, index_chunks
from relabel.logistic import LogisticFit, softmax_probabilities, with_bias_column


class LogisticGradients:
    """Per-example cross-entropy gradients g_i = (p_i − e_{y_i}) ⊗ x̃_i at a fitted Θ̂ (numpy, float64)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, fit: LogisticFit) -> None:
        self.X_tilde = with_bias_column(X)
        self.y = np.asarray(y, dtype=np.int64)
        self.fit = fit
        self.probabilities = softmax_probabilities(self.X_tilde, fit.Theta)
        self.n_items = self.X_tilde.shape[0]
        self.n_classes = fit.n_classes
        self.n_parameters = fit.n_parameters

    def residuals(self, indices: np.ndarray) -> np.ndarray:
        """r_i = p_i − e_{y_i}, shape (m, K)."""
        residual = self.probabilities[indices].copy()
        residual[np.arange(len(indices)), self.y[indices]] -= 1.0
        return residual

    def per_example_gradients(self, indices: np.ndarray) -> np.ndarray:
        """Rows g_i, shape (m, p), class-major: g_i[k·(d+1) + j] = r_ik · x̃_ij."""
        residual = self.residuals(indices)
        rows = self.X_tilde[indices]
        return np.einsum("ik,ij->ikj", residual, rows).reshape(len(indices), -1)


def logistic_hessian(
    X_tilde: np.ndarray,
    probabilities: np.ndarray,
    l2: float,
    row_chunk_size: int = 8192,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The exact Hessian H of J at Θ̂, shape (p, p), p = K·(d+1), class-major blocks (module docstring).

    Per row chunk c, block (k, l > k) gets one GEMM X̃_cᵀ (w_kl ∘ X̃_c); a diagonal block, whose weights
    w_kk = p_k(1 − p_k) are ≥ 0, gets a SYRK-shaped product (√w_kk ∘ X̃_c)ᵀ(√w_kk ∘ X̃_c) at half the
    flops. One preallocated (chunk × (d+1)) buffer holds the weighted rows; the lower blocks are mirrored.
    ``progress`` is called with the rows done after each chunk.
    """
    n, width = X_tilde.shape
    n_classes = probabilities.shape[1]
    p = n_classes * width
    hessian = np.zeros((p, p), dtype=np.float64)
    weighted = np.empty((min(row_chunk_size, n), width), dtype=np.float64)
    for rows in index_chunks(n, row_chunk_size):
        X_chunk = X_tilde[rows]
        P_chunk = probabilities[rows]
        buffer = weighted[: len(rows)]
        for k in range(n_classes):
            diagonal = slice(k * width, (k + 1) * width)
            np.multiply(X_chunk, np.sqrt(P_chunk[:, k] * (1.0 - P_chunk[:, k]))[:, None], out=buffer)
            hessian[diagonal, diagonal] += buffer.T @ buffer  # numpy dispatches Aᵀ·A to SYRK
            for other in range(k + 1, n_classes):
                np.multiply(X_chunk, (-P_chunk[:, k] * P_chunk[:, other])[:, None], out=buffer)
                hessian[diagonal, other * width : (other + 1) * width] += X_chunk.T @ buffer
        if progress is not None:
            progress(len(rows))
    hessian /= n
    upper = np.triu_indices(n_classes, k=1)
    for row_class, column_class in zip(*upper, strict=True):
        rows = slice(row_class * width, (row_class + 1) * width)
        columns = slice(column_class * width, (column_class + 1) * width)
        hessian[columns, rows] = hessian[rows, columns].T
    hessian[np.diag_indices(p)] += l2
    return hessian


GIB = 1024**3
DEFAULT_MEMORY_BUDGET_BYTES = 4 * GIB
MEMORY_BUDGET_ENV = "RELABEL_EXACT_MEMORY_GIB"


def exact_solver_bytes(
    n_parameters: int, n_classes: int = 1, chunk_size: int = 1024, row_chunk_size: int = 8192
) -> int:
    """Estimated peak bytes of the exact solver beyond the data: H and its Cholesky factor (two p × p
    float64 arrays), the gradient and whitened chunks (2 · chunk · p) and the Hessian's row buffer
    (row chunk × (d + 1), with d + 1 = p / K)."""
    p = int(n_parameters)
    width = p // max(int(n_classes), 1)
    return 8 * (2 * p * p + 2 * int(chunk_size) * p + int(row_chunk_size) * width)


def memory_budget_bytes(budget: int | None = None) -> int:
    """``budget`` when given, else ``$RELABEL_EXACT_MEMORY_GIB`` GiB, else 4 GiB; InputError when the
    environment variable is not a positive number."""
    if budget is not None:
        return int(budget)
    raw = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_MEMORY_BUDGET_BYTES
    try:
        gib = float(raw)
    except ValueError:
        gib = -1.0
    if not gib > 0:
        raise InputError(f"${MEMORY_BUDGET_ENV} must be a positive number of GiB; got {raw!r}")
    return int(gib * GIB)


def check_memory_budget(gradients: LogisticGradients, chunk_size: int, budget: int | None = None) -> None:
    """InputError (one line, naming what to change) when the exact solver would exceed the budget."""
    budget = memory_budget_bytes(budget)
    needed = exact_solver_bytes(gradients.n_parameters, gradients.n_classes, chunk_size)
    if needed <= budget:
        return
    p, n_classes = gradients.n_parameters, gradients.n_classes
    raise InputError(
        f"the exact solver needs ≈{needed / GIB:.1f} GiB for its {p:,} × {p:,} Hessian and Cholesky factor "
        f"(p = {n_classes} classes × {p // n_classes:,} features + bias), over its {budget / GIB:.1f} GiB "
        "budget: use fewer features (a smaller TF-IDF vocabulary, TextTfidfFeaturizer(max_features=...), or "
        f"a smaller --image-size), or --model mlp (iterative solver), or raise ${MEMORY_BUDGET_ENV} if the "
        "machine has the memory"
    )


class ExactLogisticSolver(InfluenceSolver):
    """H⁻¹ through one Cholesky factor of the exact logistic Hessian (float64).

    ``self_influence`` uses ‖L⁻¹ g_i‖² (one triangular solve per chunk), which equals g_iᵀ H⁻¹ g_i.
    ``memory_budget_bytes``: refuse (InputError) before allocating when :func:`exact_solver_bytes` exceeds it
    (None: ``$RELABEL_EXACT_MEMORY_GIB`` GiB, else 4 GiB; see the module docstring).
    """

    def __init__(
        self,
        gradients: LogisticGradients,
        chunk_size: int = 1024,
        hessian_progress: Callable[[int], None] | None = None,
        memory_budget_bytes: int | None = None,
    ) -> None:
        check_memory_budget(gradients, chunk_size, memory_budget_bytes)
        super().__init__(gradients, chunk_size)
        hessian = logistic_hessian(
            gradients.X_tilde, gradients.probabilities, gradients.fit.l2, progress=hessian_progress
        )
        try:
            self.cholesky_factor = linalg.cholesky(hessian, lower=True, overwrite_a=True, check_finite=True)
        except (linalg.LinAlgError, ValueError) as error:
            raise ConvergenceError(
                f"the logistic Hessian is not positive definite or not finite ({error}); raise l2"
            ) from error

    def describe(self) -> str:
        p = self.cholesky_factor.shape[0]
        return f"exact: one Cholesky factor of the {p:,} × {p:,} logistic Hessian (float64, exact)"

    def inverse_hvp(self, vectors: np.ndarray) -> np.ndarray:
        """H⁻¹ v for each row v (two triangular solves with the Cholesky factor)."""
        solved = linalg.cho_solve((self.cholesky_factor, True), np.asarray(vectors).T, check_finite=False)
        return solved.T

    def self_influence_of(self, gradient_rows: np.ndarray) -> np.ndarray:
        """‖L⁻¹ g_i‖² for each row g_i (= g_iᵀ H⁻¹ g_i), shape (m,)."""
        whitened = linalg.solve_triangular(
            self.cholesky_factor, gradient_rows.T, lower=True, check_finite=False
        )
        return np.einsum("ij,ij->j", whitened, whitened)
