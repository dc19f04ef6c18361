"""LiSSA: (H + δI)⁻¹ v by a stochastic Neumann series, for any PyTorch model (Agarwal et al. 2017).

Recursion, for a block of right-hand sides at once (docs/maths.md, § LiSSA):

    h_0 = v;   h_{t+1} = v + h_t − ((H_{B_t} + δI) h_t) / s;   result = h_T / s

With A = H + δI, the fixed point is h* = s A⁻¹ v, so h_T / s → A⁻¹ v. The error contracts by
I − A/s each step, so the series converges only when every eigenvalue of A/s lies in (0, 2):
A must be positive definite (δ > −λ_min(H)) and s > λ_max(A)/2. Error after t steps shrinks like
(1 − λ_min(A)/s)^t, so iterations grow with the condition number s/λ_min(A).

Defaults (documented choices):
- s = λ̂_max(H) + δ, with λ̂_max from power iteration on the full-data Hessian: the eigenvalues of
  A/s then lie in (0, ≈1], half of the allowed window, leaving room for minibatch Hessians whose
  spectrum exceeds the full one and for the power-iteration underestimate;
- δ = 0 when the objective is known convex with λ > 0 (the logistic model), else 0.01 · λ̂_max(H);
- H_B = the full-data Hessian (deterministic; ``batch_size`` picks minibatches instead, with
  ``repeats`` independent runs averaged);
- stop when every column's relative change ‖h_{t+1} − h_t‖ / ‖h_{t+1}‖ ≤ ``tolerance``; a column that
  has converged leaves the block (the others go on); ``max_iterations`` bounds the depth.
  With full-data Hessians, reaching the depth unconverged is an error (``on_max_iterations``). With
  minibatch Hessians the relative change never falls below the sampling noise, so the depth T is the
  normal end, as in the original LiSSA; the final change is still reported in the diagnostics.

Failure is loud: a non-finite h, or ‖h_t‖ beyond the bound s‖v‖/λ_min(A) that a convergent series
respects (×10), raises :class:`~relabel.errors.ConvergenceError` naming the setting to change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from relabel.errors import ConvergenceError
from relabel.influence.base import InfluenceSolver
from relabel.influence.torch_objective import TorchObjective


@dataclass
class LissaConfig:
    """Settings of the LiSSA solver (see the module docstring for the defaults' reasoning).

    damping:          δ added to the Hessian; None → 0 for convex models, 0.01·λ̂_max(H) otherwise.
    scale:            s; None → λ̂_max(H) + δ. Must exceed λ_max(H_B + δI)/2 for convergence.
    batch_size:       rows per Hessian estimate H_B; None → all training rows (deterministic).
    repeats:          independent runs averaged (only useful with minibatches).
    tolerance:        stop a column when its relative change per step ≤ this.
    max_iterations:   depth limit T; None → 20,000 with full-data Hessians, and with minibatches the depth
                      at which the deterministic error (1 − λ_min(A)/s)^T falls below e⁻⁷ ≈ 1e-3,
                      T = ⌈7 s / λ_min(A)⌉ (at most 20,000). See on_max_iterations.
    block_size:       right-hand sides solved together per vmapped Hessian-vector product.
    power_iterations: iterations for the λ_max / λ_min estimates.
    parameters:       restrict θ to parameters with these names or name prefixes (e.g. ("2",) or
                      ("fc.",) for a last layer); None → all trainable parameters.
    on_max_iterations: "raise", "warn" or "accept" when max_iterations is reached before tolerance;
                      None → "raise" with full-data Hessians, "accept" with minibatches (depth T).
    seed:             seeds minibatch sampling and the power-iteration start vector.
    """

    damping: float | None = None
    scale: float | None = None
    batch_size: int | None = None
    repeats: int = 1
    tolerance: float = 1e-6
    max_iterations: int | None = None
    block_size: int = 256
    power_iterations: int = 100
    parameters: tuple[str, ...] | None = None
    on_max_iterations: str | None = None
    seed: int = 0


@dataclass
class LissaDiagnostics:
    """What the solver did: the spectrum estimates it used and how its iterations ended.

    largest_eigenvalue / smallest_eigenvalue: power-iteration estimates for H (without δ).
    damping, scale: δ and s used. iterations: the deepest any column went. final_relative_change:
    the largest relative change among columns when they stopped. converged: all within tolerance.
    n_solves: right-hand sides solved so far.
    """

    largest_eigenvalue: float
    smallest_eigenvalue: float
    damping: float
    scale: float
    iterations: int = 0
    final_relative_change: float = 0.0
    converged: bool = True
    n_solves: int = 0
    residual_history: list[float] = field(default_factory=list)


def _power_iteration(
    apply: Callable[[torch.Tensor], torch.Tensor],
    dimension: int,
    iterations: int,
    generator: torch.Generator,
    like: torch.Tensor,
) -> float:
    """Dominant eigenvalue (Rayleigh quotient) of the symmetric operator ``apply`` by power iteration."""
    vector = torch.randn(dimension, generator=generator, dtype=like.dtype).to(like.device)
    vector /= torch.linalg.vector_norm(vector)
    estimate = 0.0
    for _ in range(iterations):
        product = apply(vector)
        new_estimate = float(vector @ product)
        norm = torch.linalg.vector_norm(product)
        if not torch.isfinite(norm) or norm == 0:
            return new_estimate
        vector = product / norm
        if abs(new_estimate - estimate) <= 1e-4 * abs(new_estimate):
            return new_estimate
        estimate = new_estimate
    return estimate


class LissaSolver(InfluenceSolver):
    """(H + δI)⁻¹ v by LiSSA on a :class:`TorchObjective`; diagnostics in ``self.diagnostics``."""

    def __init__(
        self,
        objective: TorchObjective,
        config: LissaConfig | None = None,
        *,
        convex: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        self.config = config or LissaConfig()
        super().__init__(objective, chunk_size or self.config.block_size)
        self.objective = objective
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.full_hessian = objective.hessian_operator()
        self.diagnostics = self._estimate_spectrum(convex)

    def _full_hvp(self, vector: torch.Tensor) -> torch.Tensor:
        return self.full_hessian(vector[None, :])[0]

    def _batch_hessian(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """H_B + λI on a fresh minibatch, or the full-data operator when batch_size is unset."""
        batch_size = self.config.batch_size
        if batch_size is None or batch_size >= self.objective.n_items:
            return self.full_hessian
        rows = torch.randperm(self.objective.n_items, generator=self.generator)[:batch_size]
        return self.objective.hessian_operator(rows.to(self.objective.X.device))

    def _estimate_spectrum(self, convex: bool) -> LissaDiagnostics:
        config = self.config
        p = self.objective.n_parameters
        like = self.objective.theta
        largest = _power_iteration(self._full_hvp, p, config.power_iterations, self.generator, like)
        if not math.isfinite(largest) or largest <= 0:
            raise ConvergenceError(
                f"the Hessian's largest eigenvalue estimate is {largest:.3g}; the model is not at a "
                "minimum of its training objective (train longer or raise weight decay)"
            )
        shifted = _power_iteration(
            lambda v: largest * v - self._full_hvp(v), p, config.power_iterations, self.generator, like
        )
        smallest = largest - shifted
        damping = float(config.damping) if config.damping is not None else 0.0 if convex else 0.01 * largest
        if smallest + damping <= 0:
            raise ConvergenceError(
                f"H + δI is not positive definite: smallest Hessian eigenvalue ≈ {smallest:.3g} with "
                f"damping δ = {damping:.3g}; set damping above {-smallest:.3g} (e.g. {-2 * smallest:.3g})"
            )
        scale = float(config.scale) if config.scale is not None else largest + damping
        if scale <= (largest + damping) / 2:
            raise ConvergenceError(
                f"LiSSA scale s = {scale:.3g} is too small: it must exceed λ_max(H + δI)/2 ≈ "
                f"{(largest + damping) / 2:.3g}; leave scale unset or raise it"
            )
        return LissaDiagnostics(
            largest_eigenvalue=largest, smallest_eigenvalue=smallest, damping=damping, scale=scale
        )

    def _solve_block(self, vectors: torch.Tensor) -> torch.Tensor:
        """One LiSSA run for a block of right-hand sides (m, p) → s⁻¹ h_T ≈ (H + δI)⁻¹ v."""
        config, diagnostics = self.config, self.diagnostics
        damping, scale = diagnostics.damping, diagnostics.scale
        smallest_damped = max(diagnostics.smallest_eigenvalue, 0.0) + damping
        vector_norms = torch.linalg.vector_norm(vectors, dim=1)
        if smallest_damped > 0:
            norm_bound = 10.0 * scale * vector_norms / smallest_damped
        else:
            norm_bound = 1e10 * vector_norms
        estimate = vectors.clone()
        active = torch.arange(vectors.shape[0], device=vectors.device)
        change = torch.zeros(vectors.shape[0], dtype=vectors.dtype, device=vectors.device)
        depth = self.depth()
        for iteration in range(1, depth + 1):
            current = estimate[active]
            curvature = self._batch_hessian()(current)
            updated = vectors[active] + current - (curvature + damping * current) / scale
            if not torch.isfinite(updated).all():
                raise ConvergenceError(
                    f"LiSSA produced NaN/inf at iteration {iteration} (s = {scale:.3g}, δ = {damping:.3g}); "
                    "the eigenvalues of (H_B + δI)/s left (0, 2): raise scale, or use a larger batch_size"
                )
            updated_norms = torch.linalg.vector_norm(updated, dim=1)
            if (updated_norms > norm_bound[active]).any():
                raise ConvergenceError(
                    f"LiSSA diverged at iteration {iteration}: ‖h‖ passed the bound s‖v‖/λ_min "
                    f"(s = {scale:.3g}, δ = {damping:.3g}); H_B + δI is not positive definite "
                    "or s too small: raise damping or scale, or use a larger batch_size"
                )
            column_change = torch.linalg.vector_norm(updated - current, dim=1) / updated_norms.clamp_min(
                1e-300
            )
            estimate[active] = updated
            change[active] = column_change
            still_moving = column_change > config.tolerance
            if iteration % 50 == 0 or not still_moving.any():
                diagnostics.residual_history.append(float(column_change.max()))
            diagnostics.iterations = max(diagnostics.iterations, iteration)
            active = active[still_moving]
            if len(active) == 0:
                break
        final_change = float(change.max()) if len(change) else 0.0
        diagnostics.final_relative_change = max(diagnostics.final_relative_change, final_change)
        if len(active) > 0:
            diagnostics.converged = False
            message = (
                f"LiSSA reached max_iterations = {depth} with relative change "
                f"{final_change:.3g} > tolerance {config.tolerance:g} (s = {scale:.3g}, δ = {damping:.3g}); "
                "raise max_iterations or damping, or loosen tolerance"
            )
            policy = config.on_max_iterations
            if policy is None:
                policy = "accept" if self.uses_minibatches() else "raise"
            if policy == "accept":
                return estimate / scale
            if policy == "raise":
                raise ConvergenceError(message)
            import warnings

            warnings.warn(message, RuntimeWarning, stacklevel=3)
        return estimate / scale

    def uses_minibatches(self) -> bool:
        batch_size = self.config.batch_size
        return batch_size is not None and batch_size < self.objective.n_items

    def depth(self) -> int:
        """The iteration limit T (see LissaConfig.max_iterations)."""
        if self.config.max_iterations is not None:
            return int(self.config.max_iterations)
        if not self.uses_minibatches():
            return 20_000
        smallest_damped = max(self.diagnostics.smallest_eigenvalue, 0.0) + self.diagnostics.damping
        if smallest_damped <= 0:
            return 20_000
        return int(min(20_000, math.ceil(7.0 * self.diagnostics.scale / smallest_damped)))

    def inverse_hvp(self, vectors: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(H + δI)⁻¹ v for each row v, by LiSSA in blocks of ``block_size``, averaged over repeats."""
        vectors = torch.as_tensor(vectors, dtype=self.objective.dtype, device=self.objective.device)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        results = []
        for start in range(0, vectors.shape[0], self.config.block_size):
            block = vectors[start : start + self.config.block_size]
            runs = [self._solve_block(block) for _ in range(self.config.repeats)]
            results.append(torch.stack(runs).mean(0))
            self.diagnostics.n_solves += block.shape[0]
        return torch.cat(results)
