"""Conjugate gradients on (H + δI) x = g for a block of right-hand sides at once, any PyTorch model.

Each column runs its own CG recursion (its own step lengths), but all active columns share one vmapped
Hessian-vector product per iteration (:meth:`TorchObjective.hessian_operator`), so the cost per
iteration is one batched HVP, as in LiSSA. CG needs ≈ ½√κ·ln(2/ε) iterations where LiSSA needs
≈ κ·ln(κ/ε) (κ = condition number of H + δI), which is why it is the iterative default. By default it is
preconditioned (PCG) with the EK-FAC curvature P ≈ H + δI of :mod:`relabel.influence.preconditioner`:
z = P⁻¹r replaces r in the directions and step lengths, so κ becomes that of P⁻¹(H + δI) (digits: 93 → 10.5
for the logistic model, 101 → 38 for an MLP); ``preconditioner="none"`` is plain CG.

Stopping rule — an error bound on the quantity we return. For CG, x_k is the Galerkin solution on the
Krylov space, so with A = H + δI and e_k = x* − x_k:

    gᵀx* − gᵀx_k = ‖e_k‖²_A = r_kᵀ A⁻¹ r_k ≤ ‖r_k‖² / λ_min(A),      and gᵀx_k ≤ gᵀx*,

hence the relative error of the self-influence gᵀx_k is at most ‖r_k‖² / (λ_min(A) · gᵀx_k) — with or
without P, since preconditioned CG's iterate is still the A-norm-optimal point of its Krylov space. A column
stops when that bound is ≤ ``tolerance`` (default 1e-2). λ_min(A) is bounded below by δ when H ⪰ 0
(:func:`~relabel.influence.spectrum.smallest_damped_lower`). The products H p use ``hvp_dtype``
(float32 by default: its rounding, ≈1e-7·κ relative, is far below the 1e-2 target); x, r, p and every
inner product are float64. A negative curvature pᵀAp ≤ 0 (H + δI indefinite), NaN/inf, or reaching
``max_iterations`` raise :class:`~relabel.errors.ConvergenceError` naming the setting to change.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from relabel.errors import ConvergenceError
from relabel.influence.base import InfluenceSolver
from relabel.influence.preconditioner import build_preconditioner, check_preconditioner
from relabel.influence.spectrum import Spectrum, operator_spectrum, resolve_damping, smallest_damped_lower
from relabel.influence.torch_objective import TorchObjective


@dataclass
class CgConfig:
    """Settings of the CG solver.

    tolerance:      stop a column when its relative error bound on gᵀ(H + δI)⁻¹g is ≤ this.
    max_iterations: None → 3·√κ̂·ln(2/tolerance) + 20, κ̂ = (λ̂_max + δ)/λ_min-bound (at most p).
    block_size:     right-hand sides per batched HVP (auto lowers it to fit a memory budget).
    hvp_dtype:      "float32" (default) or "float64" for the Hessian-vector products.
    lanczos_steps:  HVPs spent on the spectrum estimate (λ̂_max for the default δ and κ̂).
    preconditioner: "ekfac" (default: preconditioned CG with the EK-FAC curvature P of
                    :mod:`relabel.influence.preconditioner`) or "none" (plain CG).
    """

    tolerance: float = 1e-2
    max_iterations: int | None = None
    block_size: int = 64
    hvp_dtype: str = "float32"
    lanczos_steps: int = 40
    preconditioner: str = "ekfac"


@dataclass
class CgDiagnostics:
    """damping δ; largest/smallest_eigenvalue of H (Lanczos); smallest_damped_lower: the λ_min(H + δI)
    bound used; iterations: deepest column; max_error_bound: the largest final relative error bound
    among solved columns (≤ tolerance when converged); n_solves; hvp_seconds: time in HVPs."""

    damping: float
    largest_eigenvalue: float
    smallest_eigenvalue: float
    smallest_damped_lower: float
    max_iterations: int
    iterations: int = 0
    max_error_bound: float = 0.0
    converged: bool = True
    n_solves: int = 0
    hvp_seconds: float = 0.0
    iteration_counts: list[int] = field(default_factory=list)


class CgSolver(InfluenceSolver):
    """(H + δI)⁻¹ v by block CG on a :class:`TorchObjective`; diagnostics in ``self.diagnostics``."""

    name = "cg"

    def __init__(
        self,
        objective: TorchObjective,
        config: CgConfig | None = None,
        *,
        damping: float | None = None,
        seed: int = 0,
        convex: bool = False,
        spectrum: Spectrum | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.config = config or CgConfig()
        check_preconditioner(self.config.preconditioner)
        super().__init__(objective, chunk_size or self.config.block_size)
        self.objective = objective
        self.hvp_objective = objective.for_hvps(self.config.hvp_dtype)
        self.operator = self.hvp_objective.hessian_operator()
        if spectrum is None:
            generator = torch.Generator().manual_seed(seed)
            spectrum = operator_spectrum(objective, self.config.lanczos_steps, generator=generator)
        self.spectrum = spectrum
        damping = resolve_damping(damping, spectrum, convex)
        lower = smallest_damped_lower(spectrum, damping, objective.weight_decay if convex else 0.0)
        if self.config.max_iterations is not None:
            depth = int(self.config.max_iterations)
        else:
            kappa = (spectrum.largest_bound + damping) / lower
            iterations = math.ceil(3 * math.sqrt(kappa) * math.log(2 / self.config.tolerance)) + 20
            depth = int(min(objective.n_parameters, iterations))
        self.preconditioner = build_preconditioner(self.config.preconditioner, objective, damping)
        self.diagnostics = CgDiagnostics(
            damping=damping,
            largest_eigenvalue=spectrum.largest,
            smallest_eigenvalue=spectrum.smallest,
            smallest_damped_lower=lower,
            max_iterations=depth,
        )

    def _apply(self, vectors: torch.Tensor) -> torch.Tensor:
        """(H + δI) V with the HVP in ``hvp_dtype``, result in the objective's dtype."""
        start = time.perf_counter()
        product = self.operator(vectors.to(self.hvp_objective.dtype)).to(vectors.dtype)
        self.diagnostics.hvp_seconds += time.perf_counter() - start
        return product + self.diagnostics.damping * vectors

    def _solve_block(self, rhs: torch.Tensor) -> torch.Tensor:
        """(Preconditioned) CG for a block of right-hand sides; z = P⁻¹r (z = r without P), and
        residual_sq holds rᵀz, the quantity the step lengths use."""
        diagnostics, tolerance = self.diagnostics, self.config.tolerance
        lower = diagnostics.smallest_damped_lower
        solution = torch.zeros_like(rhs)
        residual = rhs.clone()
        direction = self.preconditioner.apply_inverse(residual)
        residual_sq = (residual * direction).sum(1)
        done_at = torch.zeros(rhs.shape[0], dtype=torch.long, device=rhs.device)
        bound = torch.full((rhs.shape[0],), math.inf, dtype=rhs.dtype, device=rhs.device)
        zero = residual_sq == 0
        bound[zero] = 0.0
        active = torch.nonzero(~zero).flatten()
        iteration = 0
        while len(active) > 0 and iteration < diagnostics.max_iterations:
            iteration += 1
            p_active = direction[active]
            product = self._apply(p_active)
            curvature = (p_active * product).sum(1)
            if not torch.isfinite(product).all():
                raise ConvergenceError(
                    f"CG produced NaN/inf at iteration {iteration} (δ = {diagnostics.damping:.3g}): "
                    "the Hessian-vector products overflowed; use hvp_dtype='float64' or raise damping"
                )
            if (curvature <= 0).any():
                raise ConvergenceError(
                    f"CG met negative curvature pᵀ(H + δI)p ≤ 0 at iteration {iteration}: H + δI is not "
                    f"positive definite with δ = {diagnostics.damping:.3g}; raise damping "
                    f"(e.g. to {max(10 * diagnostics.damping, 1e-6):.3g}) or train closer to a minimum"
                )
            step = residual_sq[active] / curvature
            solution[active] += step[:, None] * p_active
            residual[active] -= step[:, None] * product
            preconditioned = self.preconditioner.apply_inverse(residual[active])
            new_sq = (residual[active] * preconditioned).sum(1)
            value = (rhs[active] * solution[active]).sum(1)
            plain_sq = (residual[active] * residual[active]).sum(1)
            column_bound = plain_sq / (lower * value.clamp_min(1e-300))
            bound[active] = column_bound
            direction[active] = preconditioned + (new_sq / residual_sq[active])[:, None] * p_active
            residual_sq[active] = new_sq
            finished = column_bound <= tolerance
            done_at[active[finished]] = iteration
            active = active[~finished]
        diagnostics.iterations = max(diagnostics.iterations, iteration)
        largest_bound = float(bound.max()) if len(bound) else 0.0
        diagnostics.max_error_bound = max(diagnostics.max_error_bound, largest_bound)
        diagnostics.iteration_counts.extend(done_at.tolist())
        if len(active) > 0:
            diagnostics.converged = False
            raise ConvergenceError(
                f"CG reached max_iterations = {diagnostics.max_iterations} with relative error bound "
                f"{float(bound[active].max()):.3g} > tolerance {tolerance:g} "
                f"(δ = {diagnostics.damping:.3g}); "
                "raise max_iterations or damping, or loosen tolerance"
            )
        return solution

    def inverse_hvp(self, vectors: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(H + δI)⁻¹ v for each row v, by CG in blocks of ``block_size`` right-hand sides."""
        vectors = torch.as_tensor(vectors, dtype=self.objective.dtype, device=self.objective.device)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        results = []
        for start in range(0, vectors.shape[0], self.config.block_size):
            block = vectors[start : start + self.config.block_size]
            results.append(self._solve_block(block))
            self.diagnostics.n_solves += block.shape[0]
        return torch.cat(results)

    def describe(self) -> str:
        d = self.diagnostics
        counts = np.asarray(d.iteration_counts) if d.iteration_counts else np.zeros(1)
        return (
            f"cg ({self.config.hvp_dtype} HVPs, preconditioner {self.preconditioner.describe()}): "
            f"{d.n_solves} solves, median {np.median(counts):.0f} / max "
            f"{d.iterations} iterations, relative error bound ≤ {d.max_error_bound:.1e} "
            f"(target {self.config.tolerance:g}); δ = {d.damping:.3g}, λ_max(H) ≈ {d.largest_eigenvalue:.3g}"
        )
