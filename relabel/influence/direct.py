"""Direct solver for any PyTorch model: form H + δI from Hessian-vector products, factor it once.

H is the **true Hessian** of the training objective J(θ) = mean loss + (λ/2)‖θ‖² at θ̂ (the README's
contract), not the Gauss–Newton matrix: the Gauss–Newton matrix is positive semi-definite by
construction but drops the term Σ_i ∇²f_i · ∂ℓ/∂f_i, which is not small at mislabeled items — the very
items self-influence is meant to rank — so it would change the scores we are asked to compute.

Algorithm (float64):
  1. columns of H in blocks: H [e_j … e_{j+b}] by one vmapped reverse-over-reverse HVP per block over
     the identity columns (:meth:`TorchObjective.hessian_operator`), ≈ p / b batched HVPs;
  2. symmetrise (the HVPs are symmetric only up to rounding), add δI;
  3. one Cholesky H + δI = LLᵀ (LAPACK potrf, in place) ≈ p³/3 flops;
  4. self_influence_i = ‖L⁻¹ g_i‖² by triangular solves on chunks of gradient rows ≈ n·p² flops.
Exact up to float64 rounding (relative error ≈ κ(H + δI)·1e-16). ``hvp_dtype="float32"`` forms the
columns with float32 HVPs (≈ 3× faster on CPU) and keeps the matrix, the factorisation and the solves in
float64: the columns then carry ≈ 1e-7 relative rounding, so the solves are accurate to ≈ κ·1e-7·√p —
``solver="auto"`` uses it when that is ≤ 1e-3. Memory: the p × p matrix, 8·p² bytes,
refused above ``memory_budget_bytes`` (default 2 GiB, p ≲ 16,000), plus one block of HVP columns.

If the Cholesky factorisation fails, H + δI is not positive definite (a saddle point or a too-small δ
for a non-convex model): the error names the smallest eigenvalue estimate and the damping to set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg

from relabel.errors import ConvergenceError, InputError
from relabel.influence.base import InfluenceSolver
from relabel.influence.spectrum import Spectrum, lanczos_spectrum, resolve_damping
from relabel.influence.torch_objective import TorchObjective

DEFAULT_HESSIAN_MEMORY_BUDGET = 2 * 2**30  # bytes for the p × p float64 matrix


@dataclass
class DirectDiagnostics:
    """What the direct solver did.

    damping: δ. largest_eigenvalue / smallest_eigenvalue: of H (without δ) from the formed matrix
    (Lanczos on the dense matrix; the smallest is an over-estimate). asymmetry: max |H − Hᵀ| / max |H|
    before symmetrising (float rounding of the HVPs). form_seconds / factor_seconds: stage times.
    hvp_blocks: batched HVP calls used to form H. relative_error_bound: ≈ κ(H + δI) · u · √p with u the
    unit rounding of ``hvp_dtype`` (2⁻⁵² or 2⁻²³), the rounding level of the solves. hvp_dtype: its name.
    """

    damping: float
    largest_eigenvalue: float
    smallest_eigenvalue: float
    asymmetry: float
    form_seconds: float
    factor_seconds: float
    hvp_blocks: int
    relative_error_bound: float
    hvp_dtype: str = "float64"
    n_solves: int = 0


def form_hessian(
    objective: TorchObjective,
    column_block: int = 64,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """H = ∇²J(θ̂) (weight decay included, no δ) as a float64 numpy (p, p) array, not yet symmetrised,
    from vmapped HVPs over blocks of identity columns; returns (H, number of batched HVP calls)."""
    p = objective.n_parameters
    operator = objective.hessian_operator()
    hessian = np.empty((p, p), dtype=np.float64)
    calls = 0
    for start in range(0, p, column_block):
        stop = min(start + column_block, p)
        identity = torch.zeros((stop - start, p), dtype=objective.dtype, device=objective.device)
        identity[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        hessian[start:stop] = operator(identity).detach().to("cpu", torch.float64).numpy()
        calls += 1
        if progress is not None:
            progress(stop - start)
    return hessian, calls


def symmetrise_in_place(matrix: np.ndarray, block: int = 1024) -> float:
    """matrix ← (matrix + matrixᵀ)/2 block by block (no second p × p copy); returns max |M − Mᵀ| / max |M|."""
    p = matrix.shape[0]
    worst = 0.0
    for i in range(0, p, block):
        rows = slice(i, min(i + block, p))
        for j in range(0, i + 1, block):
            columns = slice(j, min(j + block, p))
            upper = matrix[columns, rows].T
            worst = max(worst, float(np.abs(matrix[rows, columns] - upper).max()))
            average = 0.5 * (matrix[rows, columns] + upper)
            matrix[rows, columns] = average
            matrix[columns, rows] = average.T
    scale = float(np.abs(matrix).max()) or 1.0
    return worst / scale


class DirectSolver(InfluenceSolver):
    """(H + δI)⁻¹ through one Cholesky factor of the Hessian formed from HVPs (module docstring).

    ``damping`` None → 0 for a known-convex model, else 0.01·λ_max(H) (the same rule as LiSSA and CG, so
    every solver answers the same question). ``spectrum`` may pass an estimate already made (auto).
    """

    name = "direct"

    def __init__(
        self,
        objective: TorchObjective,
        *,
        damping: float | None = None,
        convex: bool = False,
        memory_budget_bytes: int = DEFAULT_HESSIAN_MEMORY_BUDGET,
        column_block: int = 64,
        chunk_size: int = 1024,
        progress: Callable[[int], None] | None = None,
        hvp_dtype: str = "float64",
    ) -> None:
        super().__init__(objective, chunk_size)
        self.objective = objective
        p = objective.n_parameters
        needed = 8 * p * p
        if needed > memory_budget_bytes:
            raise InputError(
                f"the direct solver needs the {p:,} × {p:,} Hessian ({needed / 2**30:.1f} GiB) but the "
                f"memory budget is {memory_budget_bytes / 2**30:.2f} GiB: raise hessian_memory_budget or use "
                "solver='cg'"
            )
        start = time.perf_counter()
        if hvp_dtype not in ("float32", "float64"):
            raise ValueError(f"hvp_dtype must be 'float32' or 'float64'; got {hvp_dtype!r}")
        column_objective = objective.with_dtype(torch.float32 if hvp_dtype == "float32" else torch.float64)
        hessian, calls = form_hessian(column_objective, column_block, progress)
        if not np.isfinite(hessian).all():
            raise ConvergenceError(
                "the Hessian has NaN/inf entries: training diverged or the loss is not twice differentiable "
                "at θ̂ (standardise the features, raise weight decay l2)"
            )
        asymmetry = symmetrise_in_place(hessian)
        form_seconds = time.perf_counter() - start
        dense = torch.from_numpy(hessian)
        spectrum: Spectrum = lanczos_spectrum(lambda v: dense @ v, p, steps=min(p, 60))
        delta = resolve_damping(damping, spectrum, convex)
        hessian[np.diag_indices(p)] += delta
        start = time.perf_counter()
        try:
            self.cholesky_factor = linalg.cholesky(hessian, lower=True, overwrite_a=True, check_finite=False)
        except linalg.LinAlgError as error:
            raise ConvergenceError(
                f"H + δI is not positive definite (Cholesky failed: {error}); Lanczos estimates "
                f"λ_min(H) ≈ {spectrum.smallest:.3g} (an over-estimate), δ = {delta:.3g}: raise damping "
                f"(e.g. to {max(10 * delta, -2 * spectrum.smallest, 1e-8):.3g}) or train closer to a minimum"
            ) from error
        factor_seconds = time.perf_counter() - start
        smallest_damped = max(spectrum.smallest + delta, 1e-300)
        self.diagnostics = DirectDiagnostics(
            damping=delta,
            largest_eigenvalue=spectrum.largest,
            smallest_eigenvalue=spectrum.smallest,
            asymmetry=asymmetry,
            form_seconds=form_seconds,
            factor_seconds=factor_seconds,
            hvp_blocks=calls,
            relative_error_bound=(spectrum.largest + delta)
            / smallest_damped
            * (2.0**-23 if hvp_dtype == "float32" else 2.0**-52)
            * np.sqrt(p),
            hvp_dtype=hvp_dtype,
        )

    def _rows(self, vectors) -> np.ndarray:
        if isinstance(vectors, torch.Tensor):
            return vectors.detach().to("cpu", torch.float64).numpy()
        return np.asarray(vectors, dtype=np.float64)

    def inverse_hvp(self, vectors):
        """(H + δI)⁻¹ v for each row v (two triangular solves); returns the input's type."""
        rows = self._rows(vectors)
        single = rows.ndim == 1
        rows = rows[None, :] if single else rows
        solved = linalg.cho_solve((self.cholesky_factor, True), rows.T, check_finite=False).T
        self.diagnostics.n_solves += rows.shape[0]
        solved = solved[0] if single else solved
        if isinstance(vectors, torch.Tensor):
            return torch.as_tensor(solved, dtype=vectors.dtype, device=vectors.device)
        return solved

    def self_influence_of(self, gradient_rows) -> np.ndarray:
        """‖L⁻¹ g_i‖² for each row g_i (= g_iᵀ (H + δI)⁻¹ g_i), shape (m,)."""
        rows = self._rows(gradient_rows)
        whitened = linalg.solve_triangular(self.cholesky_factor, rows.T, lower=True, check_finite=False)
        self.diagnostics.n_solves += rows.shape[0]
        return np.einsum("ij,ij->j", whitened, whitened)

    def describe(self) -> str:
        d = self.diagnostics
        return (
            f"direct: H + δI formed from {d.hvp_blocks} {d.hvp_dtype} HVP blocks ({d.form_seconds:.1f} s), "
            f"factored ({d.factor_seconds:.1f} s); δ = {d.damping:.3g}, λ_max(H) ≈ "
            f"{d.largest_eigenvalue:.3g}, exact up to rounding (≈ {d.relative_error_bound:.0e} relative)"
        )
