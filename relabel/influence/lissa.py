"""LiSSA: (H + δI)⁻¹ v by a stochastic Neumann series, for any PyTorch model (Agarwal et al. 2017).

Recursion, for a block of right-hand sides at once (docs/maths.md, § LiSSA):

    h_0 = v;   h_{t+1} = v + h_t − ((H_{B_t} + δI) h_t) / s;   result = h_T / s

With A = H + δI, the fixed point is h* = s A⁻¹ v, so h_T / s → A⁻¹ v. The error contracts by
I − A/s each step, so the series converges only when every eigenvalue of A/s lies in (0, 2):
A must be positive definite (δ > −λ_min(H)) and s > λ_max(A)/2. Error after t steps shrinks like
ρ^t with ρ = 1 − λ_min(A)/s, so iterations grow with the condition number s/λ_min(A): LiSSA needs
≈ κ·ln(κ/ε) iterations where conjugate gradients need ≈ ½√κ·ln(2/ε) (:mod:`relabel.influence.cg`).
It is the right tool when only minibatch Hessians are affordable (huge n) and a coarse answer is enough.

Defaults (documented choices):
- spectrum: Lanczos (``power_iterations`` HVPs, float64) → λ̂_max(H) with a residual upper bound, λ̂_min;
- δ = 0 when the objective is known convex with λ > 0 (the logistic model), else 0.01 · λ̂_max(H)
  (:func:`~relabel.influence.spectrum.resolve_damping`, shared by every solver);
- s = upper bound of λ_max(H) + δ, so the eigenvalues of A/s lie in (0, 1], half of the allowed window,
  leaving room for minibatch Hessians whose spectrum exceeds the full one;
- Hessian-vector products in float32 (``hvp_dtype``), the recursion h_t and all norms in float64: the
  float32 rounding (≈1e-7 relative per product, amplified by at most κ at the fixed point) is far below
  the 1e-2 target and the products cost about half;
- stopping rule on an **error bound**, not on a raw tolerance: with c_t = ‖h_{t+1} − h_t‖ / ‖h_{t+1}‖
  the relative change, the contraction gives
  ‖h* − h_{t+1}‖ / ‖h_{t+1}‖ ≲ c_t · ρ/(1 − ρ) = c_t · (s/λ_min(A) − 1);
  a column stops when that bound is ≤ ``tolerance`` (default 1e-2) and leaves the block;
  λ_min(A) is bounded below by δ when H ⪰ 0 (:func:`~relabel.influence.spectrum.smallest_damped_lower`);
- depth: the deterministic bound reaches ``tolerance`` after T = ⌈κ̂ · ln(κ̂ / tolerance)⌉ steps,
  κ̂ = s/λ_min(A).
  With full-data Hessians the limit is 2T + 100 (at most 20,000) and reaching it unconverged is an error
  (``on_max_iterations``). With minibatch Hessians (``batch_size``) the relative change never falls below
  the sampling noise, so the depth T is the normal end, as in the original LiSSA; the final bound is
  still reported in the diagnostics.

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
from relabel.influence.spectrum import Spectrum, lanczos_spectrum, resolve_damping, smallest_damped_lower
from relabel.influence.torch_objective import TorchObjective


@dataclass
class LissaConfig:
    """Settings of the LiSSA solver (see the module docstring for the defaults' reasoning).

    damping:          δ added to the Hessian; None → 0 for convex models, 0.01·λ̂_max(H) otherwise.
                      Also the δ of the direct and CG solvers when ``SuspicionScorer`` picks them.
    scale:            s; None → λ̂_max(H) + δ (upper estimate). Must exceed λ_max(H_B + δI)/2.
    batch_size:       rows per Hessian estimate H_B; None → all training rows (deterministic).
    repeats:          independent runs averaged (only useful with minibatches).
    tolerance:        stop a column when its relative error bound (relative change × (s/λ_min − 1))
                      is ≤ this (default 1e-2: enough to rank; 1e-6 would cost κ·ln(1e4) more steps).
    max_iterations:   depth limit; None → 2T + 100 (≤ 20,000) with full-data Hessians, T with minibatches,
                      T = ⌈κ̂ ln(κ̂/tolerance)⌉, κ̂ = s/λ_min(H + δI). See on_max_iterations.
    block_size:       right-hand sides solved together per vmapped Hessian-vector product.
    power_iterations: Hessian-vector products (Lanczos steps) for the λ_max / λ_min estimates.
    parameters:       restrict θ to parameters with these names or name prefixes (e.g. ("2",) or
                      ("fc.",) for a last layer); None → all trainable parameters.
    on_max_iterations: "raise", "warn" or "accept" when max_iterations is reached before tolerance;
                      None → "raise" with full-data Hessians, "accept" with minibatches (depth T).
    seed:             seeds minibatch sampling and the Lanczos start vector.
    hvp_dtype:        "float32" (default) or "float64" for the Hessian-vector products.
    """

    damping: float | None = None
    scale: float | None = None
    batch_size: int | None = None
    repeats: int = 1
    tolerance: float = 1e-2
    max_iterations: int | None = None
    block_size: int = 64
    power_iterations: int = 40
    parameters: tuple[str, ...] | None = None
    on_max_iterations: str | None = None
    seed: int = 0
    hvp_dtype: str = "float32"


@dataclass
class LissaDiagnostics:
    """What the solver did: the spectrum estimates it used and how its iterations ended.

    largest_eigenvalue / smallest_eigenvalue: Lanczos estimates for H (without δ). damping, scale: δ and
    s used. smallest_damped_lower: the λ_min(H + δI) bound in the error bound. iterations: the deepest any
    column went. final_relative_change: the largest relative change among columns when they stopped.
    max_error_bound: the largest final error bound (≤ tolerance when converged). converged: all within
    tolerance. n_solves: right-hand sides solved so far.
    """

    largest_eigenvalue: float
    smallest_eigenvalue: float
    damping: float
    scale: float
    smallest_damped_lower: float = 0.0
    iterations: int = 0
    final_relative_change: float = 0.0
    max_error_bound: float = 0.0
    converged: bool = True
    n_solves: int = 0
    residual_history: list[float] = field(default_factory=list)


class LissaSolver(InfluenceSolver):
    """(H + δI)⁻¹ v by LiSSA on a :class:`TorchObjective`; diagnostics in ``self.diagnostics``."""

    name = "lissa"

    def __init__(
        self,
        objective: TorchObjective,
        config: LissaConfig | None = None,
        *,
        convex: bool = False,
        chunk_size: int | None = None,
        spectrum: Spectrum | None = None,
    ) -> None:
        self.config = config or LissaConfig()
        super().__init__(objective, chunk_size or self.config.block_size)
        self.objective = objective
        self.hvp_objective = objective.for_hvps(self.config.hvp_dtype)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.full_hessian = self.hvp_objective.hessian_operator()
        self.diagnostics = self._estimate_spectrum(convex, spectrum)

    def _batch_hessian(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """H_B + λI on a fresh minibatch, or the full-data operator when batch_size is unset."""
        if not self.uses_minibatches():
            return self.full_hessian
        rows = torch.randperm(self.objective.n_items, generator=self.generator)[: self.config.batch_size]
        return self.hvp_objective.hessian_operator(rows.to(self.objective.X.device))

    def _estimate_spectrum(self, convex: bool, spectrum: Spectrum | None) -> LissaDiagnostics:
        config = self.config
        if spectrum is None:
            exact_operator = self.objective.hessian_operator()
            spectrum = lanczos_spectrum(
                lambda v: exact_operator(v[None, :])[0],
                self.objective.n_parameters,
                config.power_iterations,
                generator=self.generator,
                dtype=self.objective.dtype,
                device=self.objective.device,
            )
        damping = resolve_damping(config.damping, spectrum, convex)
        largest = max(spectrum.largest_bound, spectrum.largest)
        scale = float(config.scale) if config.scale is not None else largest + damping
        if scale <= (spectrum.largest + damping) / 2:
            raise ConvergenceError(
                f"LiSSA scale s = {scale:.3g} is too small: it must exceed λ_max(H + δI)/2 ≈ "
                f"{(spectrum.largest + damping) / 2:.3g}; leave scale unset or raise it"
            )
        lower = smallest_damped_lower(spectrum, damping, self.objective.weight_decay if convex else 0.0)
        return LissaDiagnostics(
            largest_eigenvalue=spectrum.largest,
            smallest_eigenvalue=spectrum.smallest,
            damping=damping,
            scale=scale,
            smallest_damped_lower=lower,
        )

    def _solve_block(self, vectors: torch.Tensor, quadratic: bool = False) -> torch.Tensor:
        """One LiSSA run for a block of right-hand sides (m, p) → s⁻¹ h_T ≈ (H + δI)⁻¹ v.

        ``quadratic``: stop on the error bound of vᵀh/s (self-influence) instead of the vector h."""
        config, diagnostics = self.config, self.diagnostics
        damping, scale = diagnostics.damping, diagnostics.scale
        smallest_damped = diagnostics.smallest_damped_lower
        bound_factor = max(scale / smallest_damped - 1.0, 1.0) if smallest_damped > 0 else math.inf
        vector_norms = torch.linalg.vector_norm(vectors, dim=1)
        if smallest_damped > 0:
            norm_bound = 10.0 * scale * vector_norms / smallest_damped
        else:
            norm_bound = 1e10 * vector_norms
        hvp_dtype = self.hvp_objective.dtype
        estimate = vectors.clone()
        active = torch.arange(vectors.shape[0], device=vectors.device)
        change = torch.zeros(vectors.shape[0], dtype=vectors.dtype, device=vectors.device)
        depth = self.depth()
        for iteration in range(1, depth + 1):
            current = estimate[active]
            curvature = self._batch_hessian()(current.to(hvp_dtype)).to(current.dtype)
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
            if quadratic:
                column_change = (vectors[active] * (updated - current)).sum(1).abs() / (
                    (vectors[active] * updated).sum(1).abs().clamp_min(1e-300)
                )
            else:
                column_change = torch.linalg.vector_norm(updated - current, dim=1) / updated_norms.clamp_min(
                    1e-300
                )
            estimate[active] = updated
            change[active] = column_change
            still_moving = column_change * bound_factor > config.tolerance
            if iteration % 50 == 0 or not still_moving.any():
                diagnostics.residual_history.append(float(column_change.max()))
            diagnostics.iterations = max(diagnostics.iterations, iteration)
            active = active[still_moving]
            if len(active) == 0:
                break
        final_change = float(change.max()) if len(change) else 0.0
        diagnostics.final_relative_change = max(diagnostics.final_relative_change, final_change)
        diagnostics.max_error_bound = max(diagnostics.max_error_bound, final_change * bound_factor)
        if len(active) > 0:
            diagnostics.converged = False
            message = (
                f"LiSSA reached max_iterations = {depth} with error bound {final_change * bound_factor:.3g} "
                f"> tolerance {config.tolerance:g} (s = {scale:.3g}, δ = {damping:.3g}); "
                "raise max_iterations or damping, or loosen tolerance (or use solver='cg')"
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

    def deterministic_depth(self) -> int:
        """T = ⌈κ̂ ln(κ̂ / tolerance)⌉, κ̂ = s / λ_min(H + δI): where the full-data bound meets tolerance."""
        smallest_damped = self.diagnostics.smallest_damped_lower
        if smallest_damped <= 0:
            return 20_000
        kappa = max(self.diagnostics.scale / smallest_damped, 1.0 + 1e-12)
        return int(min(20_000, math.ceil(kappa * math.log(max(kappa / self.config.tolerance, math.e)))))

    def depth(self) -> int:
        """The iteration limit (see LissaConfig.max_iterations)."""
        if self.config.max_iterations is not None:
            return int(self.config.max_iterations)
        if self.uses_minibatches():
            return self.deterministic_depth()
        return min(20_000, 2 * self.deterministic_depth() + 100)

    def inverse_hvp(self, vectors: torch.Tensor | np.ndarray, quadratic: bool = False) -> torch.Tensor:
        """(H + δI)⁻¹ v for each row v, by LiSSA in blocks of ``block_size``, averaged over repeats.

        ``quadratic`` stops each column on the error bound of vᵀ(H + δI)⁻¹v (see self_influence_of)."""
        vectors = torch.as_tensor(vectors, dtype=self.objective.dtype, device=self.objective.device)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        results = []
        for start in range(0, vectors.shape[0], self.config.block_size):
            block = vectors[start : start + self.config.block_size]
            runs = [self._solve_block(block, quadratic) for _ in range(self.config.repeats)]
            results.append(torch.stack(runs).mean(0))
            self.diagnostics.n_solves += block.shape[0]
        return torch.cat(results)

    def self_influence_of(self, gradient_rows: torch.Tensor | np.ndarray) -> np.ndarray:
        """gᵀ(H + δI)⁻¹g per row, each column stopped on the error bound of that number itself.

        With s ≥ λ_max(A) every term of q_t = Σ_{k<t} gᵀ(I − A/s)^k g / s is ≥ 0 and the increments
        Δ_t = q_{t+1} − q_t shrink at least by ρ = 1 − λ_min(A)/s per step, so the remaining tail is
        ≤ Δ_t·ρ/(1 − ρ) and the relative error of q_{t+1} is ≤ (Δ_t / q_{t+1})·(s/λ_min(A) − 1): a sharper,
        still rigorous (full-data H) bound than the vector one, since g's energy sits mostly on large
        eigenvalues that converge first."""
        rows = torch.as_tensor(gradient_rows, dtype=self.objective.dtype, device=self.objective.device)
        solved = self.inverse_hvp(rows, quadratic=True)
        return (rows * solved).sum(1).detach().to("cpu", torch.float64).numpy()

    def describe(self) -> str:
        d = self.diagnostics
        mode = f"minibatch H_B({self.config.batch_size})" if self.uses_minibatches() else "full-data H"
        return (
            f"lissa ({mode}, {self.config.hvp_dtype} HVPs): {d.n_solves} solves, {d.iterations} iterations, "
            f"error bound ≤ {d.max_error_bound:.1e} (target {self.config.tolerance:g}); "
            f"s = {d.scale:.3g}, δ = {d.damping:.3g}, λ_max(H) ≈ {d.largest_eigenvalue:.3g}"
        )
