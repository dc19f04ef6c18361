"""LiSSA: (H + δI)⁻¹ v by a (preconditioned, stochastic) Neumann series, any PyTorch model.

Recursion for a block of right-hand sides at once (Agarwal et al. 2017; docs/maths.md, § LiSSA), with
A = H + δI, an optional symmetric positive-definite preconditioner P ≈ A (P = I is textbook LiSSA) and a
scale s:

    x_0 = P⁻¹v / s;      x_{t+1} = x_t + P⁻¹(v − (H_{B_t} + δI) x_t) / s

so x_T = (1/s) Σ_{k≤T} (I − P⁻¹A/s)^k P⁻¹ v, the Neumann series of A⁻¹v; with P = I it is LiSSA's
h_t/s. The error contracts by I − P⁻¹A/s, so the series converges iff every eigenvalue μ of P⁻¹A
(real: it is similar to P^{-1/2} A P^{-1/2}) satisfies 0 < μ/s < 2: A positive definite and s > μ_max/2.
After t steps the error shrinks like ρ^t, ρ = max(|1 − μ_min/s|, |1 − μ_max/s|), so iterations grow with
the condition number κ = μ_max/μ_min of the *preconditioned* operator.

Defaults (documented choices):
- preconditioner: ``"ekfac"``, eigenvalue-corrected Kronecker-factored Gauss–Newton blocks per linear layer
  (:mod:`relabel.influence.preconditioner`); on the digits logistic model it cuts κ from 93 to 10.5, on
  the digits MLP from 101 to 38. ``"none"`` gives textbook LiSSA.
- spectrum: Lanczos on the symmetric P^{-1/2} A P^{-1/2} (``power_iterations`` float64 HVPs) → μ̂_max
  with a residual upper bound, μ̂_min; δ = 0 for a convex model with λ > 0, else 0.01 · λ̂_max(H)
  (:func:`~relabel.influence.spectrum.resolve_damping`, shared by every solver, from H's own spectrum);
- s: full-data Hessians and a preconditioner: (μ̂_min + upper μ̂_max)/2, the step that balances both ends
  of the spectrum (ρ ≈ (κ − 1)/(κ + 1)); minibatch Hessians or no preconditioner: upper μ̂_max, the
  classic choice whose window (0, 1] leaves room for minibatch spectra that exceed the full one;
- Hessian-vector products in float32 (``hvp_dtype``), the recursion and every inner product in float64;
- self-influence is the **variational estimate** q_t = 2vᵀx_t − x_tᵀA x_t (A x_t is the product the step
  needs anyway). With the residual r_t = v − A x_t, vᵀA⁻¹v − q_t = r_tᵀA⁻¹r_t ≥ 0: the error is
  *quadratic* in the solve error (LiSSA's vᵀx_t is only linear), q_t never exceeds the true score, and
      0 ≤ vᵀA⁻¹v − q_t ≤ r_tᵀP⁻¹r_t / μ_min(P⁻¹A);
- stopping on that **error bound**: a column stops when min(r_tᵀP⁻¹r_t / μ_low, ‖r_t‖²/λ_low(A)) / q_t ≤
  ``tolerance`` (default 1e-2) and leaves the block (the second term only when H ⪰ 0, λ_low(A) = δ, + λ
  for a convex model). μ_low is exact, (λ + δ)/λ_max(P), without a preconditioner or for
  a convex model (H ⪰ λI); otherwise ½ μ̂_min (the Lanczos value, which approaches μ_min from above,
  halved as a margin). For whole vectors (``inverse_hvp``) the bound is on ‖A⁻¹v − x_t‖_P / ‖x_t‖_P ≤
  ‖r_t‖_{P⁻¹} / (μ_low ‖x_t‖_P);
- depth: the bound reaches ``tolerance`` after about T = ⌈κ̂ · ln(κ̂ / tolerance)⌉ steps (κ̂ = s/μ_low),
  the limit is 2T + 100 (at most 20,000) with full-data Hessians and reaching it unconverged is an error
  (``on_max_iterations``). With minibatch Hessians (``batch_size``) the residual never falls below the
  sampling noise, so the depth T is the normal end, as in the original LiSSA.

Failure is loud: a non-finite iterate, or a residual ‖r_t‖_{P⁻¹} that grows past 10⁴ times its start
(a convergent series shrinks it), raises :class:`~relabel.errors.ConvergenceError` naming the setting to
change.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from relabel.errors import ConvergenceError
from relabel.influence.base import InfluenceSolver
from relabel.influence.preconditioner import (
    IdentityPreconditioner,
    KroneckerPreconditioner,
    build_preconditioner,
    check_preconditioner,
)
from relabel.influence.spectrum import Spectrum, operator_spectrum, resolve_damping, smallest_damped_lower
from relabel.influence.torch_objective import TorchObjective

DIVERGENCE_GROWTH = 1e4  # a residual this many times its start means the series diverges


@dataclass
class LissaConfig:
    """Settings of the LiSSA solver (see the module docstring for the defaults' reasoning).

    scale:            s; None → see the module docstring. Must exceed μ_max(P⁻¹(H_B + δI))/2.
    batch_size:       rows per Hessian estimate H_B; None → all training rows (deterministic).
    repeats:          independent runs averaged (only useful with minibatches).
    tolerance:        stop a column when its relative error bound is ≤ this (default 1e-2: enough to rank).
    max_iterations:   depth limit; None → 2T + 100 (≤ 20,000) with full-data Hessians, T with minibatches,
                      T = ⌈κ̂ ln(κ̂/tolerance)⌉, κ̂ = s/μ_low. See on_max_iterations.
    block_size:       right-hand sides solved together per vmapped Hessian-vector product.
    power_iterations: Hessian-vector products (Lanczos steps) for each spectrum estimate.
    on_max_iterations: "raise", "warn" or "accept" when max_iterations is reached before tolerance;
                      None → "raise" with full-data Hessians, "accept" with minibatches (depth T).
    hvp_dtype:        "float32" (default) or "float64" for the Hessian-vector products.
    preconditioner:   "ekfac" (default) or "none" (textbook LiSSA).
    """

    scale: float | None = None
    batch_size: int | None = None
    repeats: int = 1
    tolerance: float = 1e-2
    max_iterations: int | None = None
    block_size: int = 64
    power_iterations: int = 40
    on_max_iterations: str | None = None
    hvp_dtype: str = "float32"
    preconditioner: str = "ekfac"


@dataclass
class LissaDiagnostics:
    """What the solver did: the spectrum estimates it used and how its iterations ended.

    largest_eigenvalue / smallest_eigenvalue: Lanczos estimates for H (without δ). damping, scale: δ and
    s used. preconditioned_largest / preconditioned_smallest: Lanczos μ̂_max (upper) / μ̂_min of
    P^{-1/2}AP^{-1/2} (of A itself without a preconditioner). damped_operator_lower: the exact lower bound
    λ_min(A) ≥ δ (+ λ when convex) when H ⪰ 0, else 0 (unused). smallest_damped_lower: μ_low, the lower
    estimate of μ_min in the error bound. iterations: the deepest any column went. max_error_bound: the
    largest final error bound (≤ tolerance when converged). converged: all within tolerance. n_solves:
    right-hand sides solved so far. preconditioner: what P was.
    """

    largest_eigenvalue: float
    smallest_eigenvalue: float
    damping: float
    scale: float
    preconditioned_largest: float = 0.0
    preconditioned_smallest: float = 0.0
    smallest_damped_lower: float = 0.0
    damped_operator_lower: float = 0.0
    iterations: int = 0
    max_error_bound: float = 0.0
    converged: bool = True
    n_solves: int = 0
    preconditioner: str = "none"
    residual_history: list[float] = field(default_factory=list)


class LissaSolver(InfluenceSolver):
    """(H + δI)⁻¹ v by (preconditioned) LiSSA on a :class:`TorchObjective`; diagnostics in
    ``self.diagnostics``."""

    name = "lissa"

    def __init__(
        self,
        objective: TorchObjective,
        config: LissaConfig | None = None,
        *,
        damping: float | None = None,
        seed: int = 0,
        convex: bool = False,
        chunk_size: int | None = None,
        spectrum: Spectrum | None = None,
    ) -> None:
        self.config = config or LissaConfig()
        self.damping = damping
        check_preconditioner(self.config.preconditioner)
        super().__init__(objective, chunk_size or self.config.block_size)
        self.objective = objective
        self.hvp_objective = objective.for_hvps(self.config.hvp_dtype)
        self.generator = torch.Generator().manual_seed(seed)
        self.full_hessian = self.hvp_objective.hessian_operator()
        self.preconditioner: KroneckerPreconditioner | IdentityPreconditioner = IdentityPreconditioner()
        self.diagnostics = self._estimate_spectrum(convex, spectrum)

    def _lanczos(self, apply: Callable[[torch.Tensor], torch.Tensor]) -> Spectrum:
        return operator_spectrum(
            self.objective, self.config.power_iterations, generator=self.generator, operator=apply
        )

    def _estimate_spectrum(self, convex: bool, spectrum: Spectrum | None) -> LissaDiagnostics:
        """H's spectrum (→ δ), the preconditioner, then the spectrum of P^{-1/2}AP^{-1/2} (→ s, μ_low)."""
        config = self.config
        # the float64 linearisation: built only when a Lanczos run needs it
        exact_operator = (
            self.objective.hessian_operator()
            if spectrum is None or config.preconditioner == "ekfac"
            else None
        )
        spectrum = spectrum or self._lanczos(exact_operator)
        damping = resolve_damping(self.damping, spectrum, convex)
        damped_lower = smallest_damped_lower(
            spectrum, damping, self.objective.weight_decay if convex else 0.0
        )
        self.preconditioner = build_preconditioner(config.preconditioner, self.objective, damping)
        if config.preconditioner == "ekfac":
            split = self.preconditioner.apply_inverse_sqrt
            preconditioned = self._lanczos(lambda v: split(exact_operator(split(v)) + damping * split(v)))
            if spectrum.smallest >= 0:  # H ⪰ 0: μ_min(P⁻¹A) ≥ λ_min(A)/λ_max(P) exactly
                lower = damped_lower / self.preconditioner.largest_eigenvalue
            else:
                lower = 0.5 * preconditioned.smallest
            top, bottom = preconditioned.largest_bound, preconditioned.smallest
            default_scale = top if self.uses_minibatches() else 0.5 * (bottom + top)
        else:
            top = max(spectrum.largest_bound, spectrum.largest) + damping
            bottom, lower, default_scale = spectrum.smallest + damping, damped_lower, top
        scale = float(config.scale) if config.scale is not None else default_scale
        if scale <= top / 2:
            raise ConvergenceError(
                f"LiSSA scale s = {scale:.3g} is too small: it must exceed μ_max/2 ≈ {top / 2:.3g} "
                "(the largest eigenvalue of the preconditioned H + δI); leave scale unset or raise it"
            )
        return LissaDiagnostics(
            largest_eigenvalue=spectrum.largest,
            smallest_eigenvalue=spectrum.smallest,
            damping=damping,
            scale=scale,
            preconditioned_largest=top,
            preconditioned_smallest=bottom,
            smallest_damped_lower=lower,
            damped_operator_lower=damped_lower if spectrum.smallest >= 0 else 0.0,
            preconditioner=self.preconditioner.describe(),
        )

    def _batch_hessian(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """H_B + λI on a fresh minibatch, or the full-data operator when batch_size is unset."""
        if not self.uses_minibatches():
            return self.full_hessian
        rows = torch.randperm(self.objective.n_items, generator=self.generator)[: self.config.batch_size]
        return self.hvp_objective.hessian_operator(rows.to(self.objective.X.device))

    def _damped_product(self, current: torch.Tensor, iteration: int) -> torch.Tensor:
        """(H_B + δI) x in float64 from a ``hvp_dtype`` product; refuses NaN/inf."""
        product = self._batch_hessian()(current.to(self.hvp_objective.dtype)).to(current.dtype)
        product = product + self.diagnostics.damping * current
        if not torch.isfinite(product).all():
            d = self.diagnostics
            raise ConvergenceError(
                f"LiSSA produced NaN/inf at iteration {iteration} (s = {d.scale:.3g}, δ = {d.damping:.3g}); "
                "the eigenvalues of P⁻¹(H_B + δI)/s left (0, 2): raise scale, or use a larger batch_size"
            )
        return product

    def _error_bounds(
        self,
        current: torch.Tensor,
        residual: torch.Tensor,
        step: torch.Tensor,
        estimate: torch.Tensor,
        quadratic: bool,
    ) -> torch.Tensor:
        """Relative error bound per column (module docstring): of q_t for self-influence, else of x_t."""
        energy = (residual * step).sum(1).clamp_min(0.0)  # r_tᵀP⁻¹r_t
        lower = self.diagnostics.smallest_damped_lower
        if lower <= 0:
            return torch.full_like(energy, math.inf)
        if quadratic:
            gap = energy / lower
            if self.diagnostics.damped_operator_lower > 0:  # also r_tᵀA⁻¹r_t ≤ ‖r_t‖²/λ_min(A)
                plain = (residual * residual).sum(1) / self.diagnostics.damped_operator_lower
                gap = torch.minimum(gap, plain)
            return gap / estimate.abs().clamp_min(1e-300)
        size = (current * self.preconditioner.apply(current)).sum(1).clamp_min(1e-300)
        return (energy / size).sqrt() / lower

    def _solve_block(
        self, vectors: torch.Tensor, quadratic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One run for a block of right-hand sides (m, p) → (x ≈ A⁻¹v, q = 2vᵀx − xᵀAx) per row.

        ``quadratic``: stop each column on the error bound of q (self-influence) instead of x."""
        scale, tolerance = self.diagnostics.scale, self.config.tolerance
        solutions = self.preconditioner.apply_inverse(vectors) / scale
        estimates = torch.zeros(vectors.shape[0], dtype=vectors.dtype, device=vectors.device)
        bounds = torch.zeros_like(estimates)
        active = torch.arange(vectors.shape[0], device=vectors.device)
        start_energy: torch.Tensor | None = None
        depth = self.depth()
        for iteration in range(1, depth + 1):
            current, targets = solutions[active], vectors[active]
            product = self._damped_product(current, iteration)
            residual = targets - product
            step = self.preconditioner.apply_inverse(residual)
            estimate = 2 * (targets * current).sum(1) - (current * product).sum(1)
            bound = self._error_bounds(current, residual, step, estimate, quadratic)
            energy = (residual * step).sum(1)
            start_energy = energy if start_energy is None else start_energy
            self._refuse_divergence(energy, start_energy, iteration)
            estimates[active], bounds[active] = estimate, bound
            done = bound <= tolerance
            if iteration % 50 == 0 or done.all():
                self.diagnostics.residual_history.append(float(bound.max()))
            self.diagnostics.iterations = max(self.diagnostics.iterations, iteration)
            moving = ~done
            solutions[active[moving]] = current[moving] + step[moving] / scale
            active, start_energy = active[moving], start_energy[moving]
            if len(active) == 0:
                break
        self._finish(bounds, len(active) > 0, depth)
        return solutions, estimates

    def _refuse_divergence(self, energy: torch.Tensor, start: torch.Tensor, iteration: int) -> None:
        if (energy > DIVERGENCE_GROWTH**2 * start.clamp_min(1e-300)).any():
            d = self.diagnostics
            raise ConvergenceError(
                f"LiSSA diverged at iteration {iteration}: the residual grew {DIVERGENCE_GROWTH:.0e}-fold "
                f"(s = {d.scale:.3g}, δ = {d.damping:.3g}); H_B + δI is not positive definite or s is too "
                "small: raise damping or scale, or use a larger batch_size"
            )

    def _finish(self, bounds: torch.Tensor, unconverged: bool, depth: int) -> None:
        """Record the block's final bound; apply ``on_max_iterations`` when columns are left over."""
        d, config = self.diagnostics, self.config
        worst = float(bounds.max()) if len(bounds) else 0.0
        d.max_error_bound = max(d.max_error_bound, worst)
        if not unconverged:
            return
        d.converged = False
        message = (
            f"LiSSA reached max_iterations = {depth} with error bound {worst:.3g} > tolerance "
            f"{config.tolerance:g} (s = {d.scale:.3g}, δ = {d.damping:.3g}); raise max_iterations or "
            "damping, or loosen tolerance (or use solver='cg')"
        )
        policy = config.on_max_iterations or ("accept" if self.uses_minibatches() else "raise")
        if policy == "raise":
            raise ConvergenceError(message)
        if policy == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def uses_minibatches(self) -> bool:
        batch_size = self.config.batch_size
        return batch_size is not None and batch_size < self.objective.n_items

    def deterministic_depth(self) -> int:
        """T = ⌈κ̂ ln(κ̂ / tolerance)⌉, κ̂ = s / μ_low: where the full-data bound meets tolerance."""
        lower = self.diagnostics.smallest_damped_lower
        if lower <= 0:
            return 20_000
        kappa = max(self.diagnostics.scale / lower, 1.0 + 1e-12)
        return int(min(20_000, math.ceil(kappa * math.log(max(kappa / self.config.tolerance, math.e)))))

    def depth(self) -> int:
        """The iteration limit (see LissaConfig.max_iterations)."""
        if self.config.max_iterations is not None:
            return int(self.config.max_iterations)
        if self.uses_minibatches():
            return self.deterministic_depth()
        return min(20_000, 2 * self.deterministic_depth() + 100)

    def _solve(
        self, vectors: torch.Tensor | np.ndarray, quadratic: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(A⁻¹v, q) per row in blocks of ``block_size``, averaged over ``repeats`` runs."""
        vectors = torch.as_tensor(vectors, dtype=self.objective.dtype, device=self.objective.device)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        solutions, estimates = [], []
        for start in range(0, vectors.shape[0], self.config.block_size):
            block = vectors[start : start + self.config.block_size]
            runs = [self._solve_block(block, quadratic) for _ in range(self.config.repeats)]
            solutions.append(torch.stack([run[0] for run in runs]).mean(0))
            estimates.append(torch.stack([run[1] for run in runs]).mean(0))
            self.diagnostics.n_solves += block.shape[0]
        return torch.cat(solutions), torch.cat(estimates)

    def inverse_hvp(self, vectors: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(H + δI)⁻¹ v for each row v, each column stopped on the error bound of the vector."""
        return self._solve(vectors, quadratic=False)[0]

    def self_influence_of(self, gradient_rows: torch.Tensor | np.ndarray) -> np.ndarray:
        """gᵀ(H + δI)⁻¹g per row as the variational estimate q = 2gᵀx − xᵀ(H + δI)x, each column stopped
        on the bound of q's own relative error (module docstring): 0 ≤ gᵀA⁻¹g − q ≤ rᵀP⁻¹r / μ_min."""
        return self._solve(gradient_rows, quadratic=True)[1].detach().to("cpu", torch.float64).numpy()

    def describe(self) -> str:
        d = self.diagnostics
        kappa = d.preconditioned_largest / max(d.preconditioned_smallest, 1e-300)
        mode = f"minibatch H_B({self.config.batch_size})" if self.uses_minibatches() else "full-data H"
        return (
            f"lissa ({mode}, {self.config.hvp_dtype} HVPs, preconditioner {d.preconditioner}): "
            f"{d.n_solves} solves, {d.iterations} iterations, error bound ≤ {d.max_error_bound:.1e} "
            f"(target {self.config.tolerance:g}); κ(P⁻¹A) ≈ {kappa:.3g}, "
            f"s = {d.scale:.3g}, δ = {d.damping:.3g}, λ_max(H) ≈ {d.largest_eigenvalue:.3g}"
        )
