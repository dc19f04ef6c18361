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
    product_dtype: type[np.floating] = np.float64,
) -> np.ndarray:
    """The exact Hessian H of J at Θ̂, shape (p, p), p = K·(d+1), class-major blocks (module docstring).

    Per row chunk c, block (k, l > k) gets one GEMM X̃_cᵀ (w_kl ∘ X̃_c); a diagonal block, whose weights
    w_kk = p_k(1 − p_k) are ≥ 0, gets a SYRK-shaped product (√w_kk ∘ X̃_c)ᵀ(√w_kk ∘ X̃_c) at half the
    flops. One preallocated (chunk × (d+1)) buffer holds the weighted rows; the lower blocks are mirrored.
    ``progress`` is called with the rows done after each chunk. ``product_dtype`` float32 runs each chunk's
    products in single precision (about twice the speed; each entry then carries a relative rounding error
    of order 6e-8 · √chunk); the chunk results are always summed in a float64 H.
    """
    accumulator = HessianAccumulator(X_tilde.shape[1], probabilities.shape[1], product_dtype)
    for rows in index_chunks(X_tilde.shape[0], row_chunk_size):
        accumulator.add(X_tilde[rows], probabilities[rows])
        if progress is not None:
            progress(len(rows))
    return accumulator.hessian(l2)


class HessianAccumulator:
    """Σ_c X̃_cᵀ diag(w_kl) X̃_c over row chunks fed one at a time (:func:`logistic_hessian` for the maths),
    so H can be built from chunks read from a file; memory: H (p² floats) + one chunk."""

    def __init__(self, width: int, n_classes: int, product_dtype: type[np.floating] = np.float64) -> None:
        self.width, self.n_classes, self.product_dtype = width, n_classes, product_dtype
        self.sums = np.zeros((n_classes * width, n_classes * width), dtype=np.float64)
        self.n_rows = 0

    def add(self, X_chunk: np.ndarray, P_chunk: np.ndarray) -> None:
        """Add one chunk's blocks (upper triangle of blocks only) for rows X̃_c with probabilities P_c."""
        width = self.width
        X_chunk = X_chunk.astype(self.product_dtype, copy=False)
        buffer = np.empty(X_chunk.shape, dtype=self.product_dtype)
        for k in range(self.n_classes):
            diagonal = slice(k * width, (k + 1) * width)
            np.multiply(X_chunk, np.sqrt(P_chunk[:, k] * (1.0 - P_chunk[:, k]))[:, None], out=buffer)
            self.sums[diagonal, diagonal] += buffer.T @ buffer  # numpy dispatches Aᵀ·A to SYRK
            for other in range(k + 1, self.n_classes):
                np.multiply(X_chunk, (-P_chunk[:, k] * P_chunk[:, other])[:, None], out=buffer)
                self.sums[diagonal, other * width : (other + 1) * width] += X_chunk.T @ buffer
        self.n_rows += len(X_chunk)

    def hessian(self, l2: float) -> np.ndarray:
        """H = sums / n with the lower blocks mirrored and λ on the diagonal (the sums are consumed)."""
        hessian, width = self.sums, self.width
        hessian /= self.n_rows
        for row_class, column_class in zip(*np.triu_indices(self.n_classes, k=1), strict=True):
            rows = slice(row_class * width, (row_class + 1) * width)
            columns = slice(column_class * width, (column_class + 1) * width)
            hessian[columns, rows] = hessian[rows, columns].T
        hessian[np.diag_indices(len(hessian))] += l2
        return hessian


GIB = 1024**3
DEFAULT_MEMORY_BUDGET_BYTES = 4 * GIB
MEMORY_BUDGET_ENV = "RELABEL_EXACT_MEMORY_GIB"


def exact_solver_bytes(
    n_parameters: int,
    n_classes: int = 1,
    chunk_size: int = 1024,
    row_chunk_size: int = 8192,
    precision: str = "float64",
) -> int:
    """Estimated peak bytes of the exact solver beyond the data: H and its Cholesky factor (two p × p
    float64 arrays), the gradient and whitened chunks (2 · chunk · p) and the Hessian's row buffer
    (row chunk × (d + 1), with d + 1 = p / K); "mixed" precision adds the float32 copy of the factor."""
    p = int(n_parameters)
    width = p // max(int(n_classes), 1)
    single_factor = 4 * p * p if precision == "mixed" else 0
    return 8 * (2 * p * p + 2 * int(chunk_size) * p + int(row_chunk_size) * width) + single_factor


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


def check_memory_budget(
    gradients: LogisticGradients, chunk_size: int, budget: int | None = None, precision: str = "float64"
) -> None:
    """InputError (one line, naming what to change) when the exact solver would exceed the budget."""
    check_parameter_budget(gradients.n_parameters, gradients.n_classes, chunk_size, budget, precision)


def check_parameter_budget(
    p: int, n_classes: int, chunk_size: int, budget: int | None = None, precision: str = "float64"
) -> None:
    """:func:`check_memory_budget` for p parameters over ``n_classes`` classes."""
    budget = memory_budget_bytes(budget)
    needed = exact_solver_bytes(p, n_classes, chunk_size, precision=precision)
    if needed <= budget:
        return
    raise InputError(
        f"the exact solver needs ≈{needed / GIB:.1f} GiB for its {p:,} × {p:,} Hessian and Cholesky factor "
        f"(p = {n_classes} classes × {p // n_classes:,} features + bias), over its {budget / GIB:.1f} GiB "
        "budget: use fewer features (a smaller TF-IDF vocabulary, TextTfidfFeaturizer(max_features=...), or "
        f"a smaller --image-size), or --model mlp (iterative solver), or raise ${MEMORY_BUDGET_ENV} if the "
        "machine has the memory"
    )


PRECISIONS = ("float64", "mixed")
DEFAULT_MIXED_TOLERANCE = 1e-5
PROBE_COUNT = 32
PROBE_SAFETY_FACTOR = 4.0


def logistic_hessian_vector_products(
    X_tilde: np.ndarray, probabilities: np.ndarray, l2: float, vectors: np.ndarray, row_chunk_size: int = 8192
) -> np.ndarray:
    """H v for each column v of ``vectors`` (shape (p, m)), exact in float64, without forming H.

    With V_j the K × (d+1) class-major reshape of column j and A = X̃ V_jᵀ (n × K):
    H v_j = (1/n) X̃ᵀ[P∘A − P∘rowsum(P∘A)] (read class-major) + λ v_j (docs/maths.md § Gradients and
    Hessian); ≈ 4·n·p·m flops, over row chunks (memory ≈ chunk · m · K floats).
    """
    n, width = X_tilde.shape
    n_classes = probabilities.shape[1]
    m = vectors.shape[1]
    # (d+1, m·K): column j·K + k holds class k's block of v_j
    blocks = vectors.reshape(n_classes, width, m).transpose(1, 2, 0).reshape(width, m * n_classes)
    product = np.zeros((width, m * n_classes), dtype=np.float64)
    for rows in index_chunks(n, row_chunk_size):
        X_chunk = X_tilde[rows]
        P_chunk = probabilities[rows][:, None, :]
        weighted = P_chunk * (X_chunk @ blocks).reshape(len(rows), m, n_classes)
        weighted -= P_chunk * weighted.sum(axis=2, keepdims=True)
        product += X_chunk.T @ weighted.reshape(len(rows), m * n_classes)
    product = product.reshape(width, m, n_classes).transpose(2, 0, 1).reshape(n_classes * width, m)
    return product / n + l2 * vectors


def probe_indices(gradients: LogisticGradients, count: int = PROBE_COUNT, seed: int = 0) -> np.ndarray:
    """The items the mixed-precision check is measured on: the count/2 largest ‖g_i‖² = ‖r_i‖²‖x̃_i‖²
    (the candidates for the top of the ranking) and count/2 drawn at random (seeded), sorted."""
    n = gradients.n_items
    if n <= count:
        return np.arange(n)
    residual = gradients.probabilities.copy()
    residual[np.arange(n), gradients.y] -= 1.0
    norms = np.einsum("ik,ik->i", residual, residual) * np.einsum(
        "ij,ij->i", gradients.X_tilde, gradients.X_tilde
    )
    largest = np.argsort(norms)[-(count // 2) :]
    rest = np.setdiff1d(np.arange(n), largest)
    drawn = np.random.default_rng(seed).choice(rest, size=count - len(largest), replace=False)
    return np.sort(np.concatenate([largest, drawn]))


class ExactLogisticSolver(InfluenceSolver):
    """H⁻¹ through one Cholesky factor of the exact logistic Hessian.

    ``self_influence`` uses ‖L⁻¹ g_i‖² (one triangular solve per chunk), which equals g_iᵀ H⁻¹ g_i.
    ``memory_budget_bytes``: refuse (InputError) before allocating when :func:`exact_solver_bytes` exceeds it
    (None: ``$RELABEL_EXACT_MEMORY_GIB`` GiB, else 4 GiB; see the module docstring).

    ``precision``: "float64" (default: every product in float64) or "mixed": the Hessian's GEMM/SYRK
    products and the per-item triangular solves in float32, the Cholesky factor in float64, pairwise
    influence (:meth:`inverse_hvp`) refined by one step against exact float64 Hessian-vector products. The
    achieved accuracy is measured before any item is scored, on :func:`probe_indices` (32 items): their
    mixed scores against float64 references x_i = H⁻¹g_i refined by one step with exact Hessian-vector
    products (≈ 4·n·p·32 flops; the reference's own relative error is then ≈ ε², ε ≈ 1e-6 the mixed
    one). The estimate :attr:`estimated_relative_error` is ``PROBE_SAFETY_FACTOR`` (4) × the largest
    probe error, for the items not probed (on iris, wine, breast cancer, digits and synthetic data the
    largest error over all items was 1.0–2.6× the probes'). When it exceeds ``mixed_tolerance``
    (default 1e-5) the Hessian is rebuilt in float64 and everything runs in float64;
    :attr:`precision_used` and :meth:`describe` say which ran and the error estimated.

    Why not 1e-8: float32 keeps 24 bits (unit roundoff u = 2⁻²⁴ ≈ 6e-8). Each entry of a float32-built H
    carries a relative error of a few u (measured ≈ 3e-7 of the largest entry), and s_i = g_iᵀH⁻¹g_i
    inherits it times H's conditioning: measured maximum errors 1e-7 to 2e-6, never below u. A
    refinement step with a float64 residual costs as much per item as the float64 triangular solve it
    replaces, so the n scores are not refined; only pairwise influence is.
    """

    def __init__(
        self,
        gradients: LogisticGradients,
        chunk_size: int = 1024,
        hessian_progress: Callable[[int], None] | None = None,
        memory_budget_bytes: int | None = None,
        precision: str = "float64",
        mixed_tolerance: float = DEFAULT_MIXED_TOLERANCE,
    ) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        check_memory_budget(gradients, chunk_size, memory_budget_bytes, precision)
        super().__init__(gradients, chunk_size)
        self.precision_requested = precision
        self.mixed_tolerance = float(mixed_tolerance)
        self.estimated_relative_error: float | None = None
        self.single_factor: np.ndarray | None = None
        product_dtype = np.float32 if precision == "mixed" else np.float64
        self.cholesky_factor = self._factor(product_dtype, hessian_progress)
        if precision == "mixed":
            self.single_factor = self.cholesky_factor.astype(np.float32)
            self.estimated_relative_error = PROBE_SAFETY_FACTOR * self._probe_relative_error()
            if not self.estimated_relative_error <= self.mixed_tolerance:
                self.single_factor = None
                self.cholesky_factor = self._factor(np.float64, None)

    @property
    def precision_used(self) -> str:
        """Which precision ran: "mixed" (float32 products passed the accuracy check) or "float64"."""
        return "mixed" if self.single_factor is not None else "float64"

    def _factor(self, product_dtype: type[np.floating], progress: Callable[[int], None] | None) -> np.ndarray:
        """L with H = LLᵀ (float64), H built with products in ``product_dtype``."""
        gradients = self.gradients
        hessian = logistic_hessian(
            gradients.X_tilde,
            gradients.probabilities,
            gradients.fit.l2,
            progress=progress,
            product_dtype=product_dtype,
        )
        try:
            return linalg.cholesky(hessian, lower=True, overwrite_a=True, check_finite=True)
        except (linalg.LinAlgError, ValueError) as error:
            raise ConvergenceError(
                f"the logistic Hessian is not positive definite or not finite ({error}); raise l2"
            ) from error

    def _exact_hvp(self, columns: np.ndarray) -> np.ndarray:
        gradients = self.gradients
        return logistic_hessian_vector_products(
            gradients.X_tilde, gradients.probabilities, gradients.fit.l2, columns
        )

    def refined_solve(self, right_hand_sides: np.ndarray, steps: int = 1) -> np.ndarray:
        """H⁻¹ B (B: p × m) from the factor, then ``steps`` refinement steps x ← x + L⁻ᵀL⁻¹(B − H x) with
        H applied exactly in float64 (each step squares the relative error ‖H̃⁻¹(H − H̃)‖ left by a factor of
        a float32-built H̃)."""
        solved = linalg.cho_solve((self.cholesky_factor, True), right_hand_sides, check_finite=False)
        for _ in range(steps):
            residual = right_hand_sides - self._exact_hvp(solved)
            solved += linalg.cho_solve((self.cholesky_factor, True), residual, check_finite=False)
        return solved

    def _probe_relative_error(self) -> float:
        """max_i |s_i(mixed) − s_i(reference)| / s_i(reference) over the probe items; the reference is
        g_iᵀx_i with x_i refined once (its relative error ≈ ε², ε that of the float32-built factor)."""
        rows = self.gradients.per_example_gradients(probe_indices(self.gradients))
        reference = np.einsum("ij,ji->i", rows, self.refined_solve(np.ascontiguousarray(rows.T), steps=1))
        mixed = self.self_influence_of(rows)
        return float(np.max(np.abs(mixed - reference) / reference))

    def describe(self) -> str:
        p = self.cholesky_factor.shape[0]
        head = f"exact: one Cholesky factor of the {p:,} × {p:,} logistic Hessian"
        if self.precision_requested == "float64":
            return f"{head} (float64, exact)"
        error = (
            f"estimated max relative error {self.estimated_relative_error:.1e} "
            f"({PROBE_SAFETY_FACTOR:g} × the largest of {PROBE_COUNT} probe items)"
        )
        if self.precision_used == "mixed":
            return f"{head} (mixed: float32 products, float64 factor; {error} ≤ {self.mixed_tolerance:g})"
        return f"{head} (float64: mixed precision refused, {error} > {self.mixed_tolerance:g})"

    def inverse_hvp(self, vectors: np.ndarray) -> np.ndarray:
        """H⁻¹ v for each row v (two triangular solves with the Cholesky factor; mixed: one refinement)."""
        right_hand_sides = np.asarray(vectors, dtype=np.float64).T
        steps = 1 if self.precision_used == "mixed" else 0
        return self.refined_solve(np.ascontiguousarray(right_hand_sides), steps=steps).T

    def self_influence_of(self, gradient_rows: np.ndarray) -> np.ndarray:
        """‖L⁻¹ g_i‖² for each row g_i (= g_iᵀ H⁻¹ g_i), shape (m,); mixed: the solve in float32, the sum
        of squares in float64."""
        if self.single_factor is not None:
            whitened = linalg.solve_triangular(
                self.single_factor, gradient_rows.T.astype(np.float32), lower=True, check_finite=False
            ).astype(np.float64)
        else:
            whitened = linalg.solve_triangular(
                self.cholesky_factor, gradient_rows.T, lower=True, check_finite=False
            )
        return np.einsum("ij,ij->j", whitened, whitened)
