"""Extreme eigenvalues of the Hessian operator (Lanczos) and the damping rule shared by every solver.

Every deep-model solver solves the same problem, (H + δI) x = g with H = ∇²J(θ̂) (mean training loss
plus weight decay) and δ the damping; the spectrum estimate decides the default δ, LiSSA's scale s,
and the error bounds that stop the iterative solvers.

Lanczos (k steps, full re-orthogonalisation, one Hessian-vector product per step) gives Ritz values
θ_1 ≤ … ≤ θ_k of H restricted to a Krylov space. The largest Ritz value converges quickly to λ_max(H)
from below; ``largest_bound`` adds the last Ritz pair's residual norm, a bound for the distance from θ_k
to an eigenvalue of H, so it is a safe upper estimate. The smallest Ritz value approaches λ_min(H) from
above, slowly when the bottom of the spectrum is clustered: it is used only (a) to refuse an indefinite
H + δI early and (b) through :func:`smallest_damped_lower`, which for a positive semi-definite H is the
exact lower bound δ (≤ λ_min(H + δI)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from relabel.errors import ConvergenceError

if TYPE_CHECKING:
    from relabel.influence.torch_objective import TorchObjective

DEFAULT_DAMPING_FRACTION = 0.01


@dataclass
class Spectrum:
    """Lanczos estimates for H (without δ): ``largest`` (Ritz), ``largest_bound`` (Ritz + residual,
    an upper estimate), ``smallest`` (Ritz, an over-estimate of λ_min), ``steps`` (HVPs used)."""

    largest: float
    largest_bound: float
    smallest: float
    steps: int


def lanczos_spectrum(
    apply: Callable[[torch.Tensor], torch.Tensor],
    dimension: int,
    steps: int = 40,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Spectrum:
    """Extreme Ritz values of the symmetric operator ``apply`` (vector (p,) → (p,)) after ``steps`` steps."""
    steps = max(1, min(int(steps), dimension))
    generator = generator or torch.Generator().manual_seed(0)
    vector = torch.randn(dimension, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    vector = vector / torch.linalg.vector_norm(vector)
    basis = torch.empty((steps, dimension), dtype=dtype, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    previous_beta = 0.0
    for step in range(steps):
        basis[step] = vector
        product = apply(vector)
        if not torch.isfinite(product).all():
            raise ConvergenceError(
                "a Hessian-vector product is NaN/inf: the model's loss is not twice differentiable at θ̂ "
                "or training diverged (standardise the features, raise weight decay l2)"
            )
        alpha = float(vector @ product)
        product = product - alpha * vector
        if step > 0:
            product = product - previous_beta * basis[step - 1]
        # full re-orthogonalisation (twice is enough) keeps the Ritz values free of ghost copies
        for _ in range(2):
            product = product - basis[: step + 1].T @ (basis[: step + 1] @ product)
        beta = float(torch.linalg.vector_norm(product))
        alphas.append(alpha)
        if step == steps - 1 or beta <= 1e-12 * max(abs(alpha), 1e-300):
            betas.append(beta)
            break
        betas.append(beta)
        vector = product / beta
        previous_beta = beta
    k = len(alphas)
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    residual_top = abs(betas[k - 1] * float(vectors[k - 1, -1]))
    return Spectrum(
        largest=float(values[-1]),
        largest_bound=float(values[-1]) + residual_top,
        smallest=float(values[0]),
        steps=k,
    )


def operator_spectrum(
    objective: TorchObjective,
    steps: int = 40,
    *,
    generator: torch.Generator | None = None,
    operator: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Spectrum:
    """:func:`lanczos_spectrum` over the objective's θ of ``operator`` (a symmetric map of blocks of
    vectors (m, p) → (m, p)); by default the full-data Hessian ``objective.hessian_operator()``."""
    operator = operator or objective.hessian_operator()
    return lanczos_spectrum(
        lambda v: operator(v[None, :])[0],
        objective.n_parameters,
        steps,
        generator=generator,
        dtype=objective.dtype,
        device=objective.device,
    )


def resolve_damping(damping: float | None, spectrum: Spectrum, convex: bool) -> float:
    """δ: the given value, else 0 for a known-convex model (λ > 0 makes H positive definite),
    else ``DEFAULT_DAMPING_FRACTION`` · λ̂_max(H) (condition number of H + δI ≤ ≈ 101 when H ⪰ 0).

    Refuses a model that is not at a minimum (λ̂_max ≤ 0) and an H + δI seen to be indefinite."""
    largest = spectrum.largest
    if not math.isfinite(largest) or largest <= 0:
        raise ConvergenceError(
            f"the Hessian's largest eigenvalue estimate is {largest:.3g}; the model is not at a "
            "minimum of its training objective (train longer or raise weight decay)"
        )
    delta = float(damping) if damping is not None else 0.0 if convex else DEFAULT_DAMPING_FRACTION * largest
    if spectrum.smallest + delta <= 0:
        raise ConvergenceError(
            f"H + δI is not positive definite: smallest Hessian eigenvalue ≈ {spectrum.smallest:.3g} with "
            f"damping δ = {delta:.3g}; set damping above {-spectrum.smallest:.3g} "
            f"(e.g. {-2 * spectrum.smallest:.3g})"
        )
    return delta


def smallest_damped_lower(spectrum: Spectrum, damping: float, weight_decay: float = 0.0) -> float:
    """A lower estimate of λ_min(H + δI) for error bounds.

    If the Lanczos minimum is ≥ 0 the Hessian is taken as positive semi-definite (plus its weight decay
    λ for a convex model): the bound is δ + (λ if convex else 0) — exact, not an estimate, for H ⪰ 0.
    Otherwise the (over-)estimate λ̂_min + δ, halved as a safety margin."""
    if spectrum.smallest >= 0:
        return damping + weight_decay
    return 0.5 * (spectrum.smallest + damping)
