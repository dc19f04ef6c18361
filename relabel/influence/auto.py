"""``solver="auto"`` for PyTorch models: pick direct, CG or LiSSA by an estimate of time and memory.

Cost model (n right-hand sides = the n training items, p parameters, c₆₄ / c₃₂ = measured seconds of one
Hessian-vector product column in float64 / float32 on the full data, F = measured float64 GEMM rate):

    direct  time ≈ p·c (form H) + (p³/3 + n·p²)/F (Cholesky + triangular solves)     memory 8·p² bytes
            c = c₃₂ when float32 columns are accurate enough (κ̂·2⁻²³·√p ≤ 1e-3), else c₆₄
    cg      time ≈ n · ½√κ̂ ln(2/ε) · c₃₂                                           memory 32·b·p bytes
    lissa   time ≈ n · κ̂ ln(κ̂/ε) · c₃₂                                               memory 24·b·p bytes
            (textbook LiSSA's count: an upper estimate, the EK-FAC preconditioner cuts κ 3–10× in practice)

with κ̂ = (λ̂_max + δ)/λ_min(H + δI) from a 40-step Lanczos estimate, ε the target relative error bound
and b the block of right-hand sides. ``auto`` takes the fastest solver whose memory fits: the direct
solver only when the p × p matrix fits ``memory_budget_bytes`` (default 2 GiB, p ≲ 16,000), otherwise
CG (its √κ iterations beat LiSSA's κ at every κ > 1 on the same operator). An explicit solver name
skips the choice but the same estimate is still recorded. ``SolverChoice.describe()`` is one line.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from relabel.errors import InputError
from relabel.influence.base import InfluenceSolver
from relabel.influence.cg import CgConfig, CgSolver
from relabel.influence.direct import DEFAULT_HESSIAN_MEMORY_BUDGET, DirectSolver
from relabel.influence.lissa import LissaConfig, LissaSolver
from relabel.influence.spectrum import Spectrum, operator_spectrum, resolve_damping, smallest_damped_lower
from relabel.influence.torch_objective import TorchObjective, modules_with_parameters

# Blocks of 64 right-hand sides / identity columns by default: on CPU the vmapped HVP's cost per column
# is lowest around 16–64 columns (measured on the digits MLP: 0.66 ms at 16, 0.78 at 64, 1.5 at 256 —
# larger blocks spill the caches), while fewer Python round trips favour larger blocks.
ITERATIVE_WORK_BUDGET = 2 * 2**30  # bytes of HVP temporaries per batched call (sets the block size)
TORCH_SOLVER_NAMES = ("direct", "cg", "lissa")
SLOW_ESTIMATE_SECONDS = 600.0  # above this the choice's reason says how to make the problem smaller


@dataclass
class SolverChoice:
    """Which solver runs and why: ``name``, ``reason``, and its ``estimated_seconds`` / ``estimated_bytes``;
    ``estimates`` holds (seconds, bytes) for every candidate, ``measurements`` the timings they use."""

    name: str
    reason: str
    estimated_seconds: float
    estimated_bytes: int
    estimates: dict[str, tuple[float, int]] = field(default_factory=dict)
    measurements: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        others = ", ".join(
            f"{name} ≈ {seconds:.0f} s / {_bytes(size)}"
            for name, (seconds, size) in self.estimates.items()
            if name != self.name
        )
        return (
            f"solver {self.name}: {self.reason}; estimated {self.estimated_seconds:.0f} s, "
            f"{_bytes(self.estimated_bytes)}" + (f" (vs {others})" if others else "")
        )


def _bytes(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def activation_elements_per_item(objective: TorchObjective) -> int:
    """Elements produced by the module's leaf layers for one input (forward hooks): the scale of the
    temporaries one Hessian-vector product column keeps per training row. When θ is a subset (e.g. the
    last layer), only the layers from the first one owning a chosen parameter on (registration order)
    count: the products replay only what depends on θ."""
    total = 0
    handles = []

    def count(_module, _inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    chosen = set(objective.parameter_names)
    first = next(
        (module for module, own in modules_with_parameters(objective.model) if chosen & set(own)), None
    )
    reached = False
    for module in objective.model.modules():
        reached = reached or module is first
        if reached and not list(module.children()):
            handles.append(module.register_forward_hook(count))
    try:
        with torch.no_grad():
            objective.outputs(objective.theta, objective.X[:1])
    finally:
        for handle in handles:
            handle.remove()
    return max(total, objective.n_parameters // max(objective.n_items, 1), 1)


def fitting_block_size(objective: TorchObjective, requested: int, itemsize: int = 4) -> int:
    """Largest block ≤ ``requested`` whose vmapped HVP temporaries (≈ 6 copies of the activations of
    every row in a data chunk, per column) fit ``ITERATIVE_WORK_BUDGET``."""
    rows = min(objective.n_items, objective.data_chunk_size)
    activations = activation_elements_per_item(objective)
    per_column = 6 * rows * activations * itemsize + 4 * objective.n_parameters * 8
    return int(max(1, min(requested, ITERATIVE_WORK_BUDGET // per_column)))


def _seconds_per_column(objective: TorchObjective, columns: int, seed: int) -> float:
    """Wall seconds of one HVP column on all rows (one batched call of ``columns`` columns, after the
    linearisation is built; the build is included once, spread over the p columns direct would need)."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn((columns, objective.n_parameters), generator=generator, dtype=torch.float64)
    vectors = vectors.to(objective.device, objective.dtype)
    operator = objective.hessian_operator()
    operator(vectors[:1])  # warm-up (first vmap trace)
    start = time.perf_counter()
    operator(vectors)
    return (time.perf_counter() - start) / columns


def _gemm_rate() -> float:
    """float64 flops per second of this machine's BLAS on a 768 × 768 product (best of 3)."""
    a = np.random.default_rng(0).standard_normal((768, 768))
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 768**3 / max(best, 1e-9)


def choose_solver(
    objective: TorchObjective,
    *,
    requested: str = "auto",
    convex: bool = False,
    damping: float | None = None,
    tolerance: float = 1e-2,
    block_size: int = 64,
    memory_budget_bytes: int = DEFAULT_HESSIAN_MEMORY_BUDGET,
    n_solves: int | None = None,
    spectrum: Spectrum | None = None,
    seed: int = 0,
) -> tuple[SolverChoice, Spectrum]:
    """The cost-model choice (module docstring) and the Lanczos spectrum it measured (reused later)."""
    if requested not in ("auto", *TORCH_SOLVER_NAMES):
        raise InputError(f"unknown solver {requested!r}: choose auto, {', '.join(TORCH_SOLVER_NAMES)}")
    p, n = objective.n_parameters, n_solves if n_solves is not None else objective.n_items
    if spectrum is None:
        spectrum = operator_spectrum(objective, 40, generator=torch.Generator().manual_seed(seed))
    delta = resolve_damping(damping, spectrum, convex)
    lower = smallest_damped_lower(spectrum, delta, objective.weight_decay if convex else 0.0)
    # lower ≤ 0: no positive lower bound on λ_min(A) (e.g. δ = 0 given for a non-convex model)
    kappa = max((spectrum.largest_bound + delta) / lower, 1.0) if lower > 0 else math.inf
    block = fitting_block_size(objective, block_size)
    probe = max(1, min(block, 32))
    c64 = _seconds_per_column(objective, probe, seed)
    c32 = _seconds_per_column(objective.with_dtype(torch.float32), probe, seed)
    rate = _gemm_rate()
    cg_iterations = 0.5 * math.sqrt(kappa) * math.log(2 / tolerance)
    lissa_iterations = kappa * math.log(max(kappa / tolerance, math.e))
    direct_float32 = kappa * 2.0**-23 * math.sqrt(p) <= 1e-3
    column_seconds = c32 if direct_float32 else c64
    estimates = {
        "direct": (p * column_seconds + (p**3 / 3 + n * p**2 + 60 * p**2) / rate, 8 * p * p),
        "cg": (n * cg_iterations * c32, 32 * block * p),
        "lissa": (n * lissa_iterations * c32, 24 * block * p),
    }
    name, reason = _pick(requested, estimates, memory_budget_bytes, p, n, kappa)
    seconds, size = estimates[name]
    if seconds > SLOW_ESTIMATE_SECONDS:
        reason += (
            f"; over {SLOW_ESTIMATE_SECONDS / 60:.0f} min: restrict θ (InfluenceSettings(parameters=...)), "
            "score fewer items, or use a GPU (device='cuda')"
        )
    choice = SolverChoice(
        name=name,
        reason=reason,
        estimated_seconds=seconds,
        estimated_bytes=size,
        estimates=estimates,
        measurements={
            "seconds_per_hvp_column_float64": c64,
            "seconds_per_hvp_column_float32": c32,
            "gemm_flops_per_second": rate,
            "condition_number": kappa,
            "damping": delta,
            "block_size": block,
            "direct_float32_columns": float(direct_float32),
        },
    )
    return choice, spectrum


def _pick(
    requested: str, estimates: dict[str, tuple[float, float]], budget: int, p: int, n: int, kappa: float
) -> tuple[str, str]:
    """(solver, reason): the requested one, or the cheapest of direct (when H fits ``budget`` bytes) and CG;
    LiSSA (κ̂ iterations against CG's √κ̂) is never cheaper on the same operator."""
    if requested != "auto":
        return requested, "requested"
    direct_fits = estimates["direct"][1] <= budget
    candidates = ["direct", "cg"] if direct_fits else ["cg"]
    name = min(candidates, key=lambda candidate: estimates[candidate][0])
    if name == "direct":
        return name, (
            f"p = {p:,}: the {p:,}² Hessian fits the {_bytes(budget)} budget and forming + factoring it is "
            "the fastest exact route"
        )
    if not direct_fits:
        return name, (
            f"p = {p:,}: the Hessian ({_bytes(estimates['direct'][1])}) exceeds the {_bytes(budget)} budget; "
            f"CG (√κ̂ iterations, κ̂ ≈ {kappa:.0f}) beats LiSSA"
        )
    return name, f"CG on {n:,} right-hand sides is estimated faster than forming the {p:,}² Hessian"


def build_solver(
    objective: TorchObjective,
    requested: str = "auto",
    *,
    convex: bool = False,
    damping: float | None = None,
    seed: int = 0,
    lissa: LissaConfig | None = None,
    cg: CgConfig | None = None,
    memory_budget_bytes: int = DEFAULT_HESSIAN_MEMORY_BUDGET,
    chunk_size: int = 1024,
) -> tuple[InfluenceSolver, SolverChoice]:
    """Choose (or take) a solver for ``objective`` and build it; returns (solver, choice).

    ``auto`` builds the direct solver with float32 HVP columns when κ̂·2⁻²³·√p ≤ 1e-3 (see
    :mod:`relabel.influence.direct`); an explicit ``"direct"`` is always float64 (exact to rounding).

    ``damping`` (δ; None → the rule of :func:`~relabel.influence.spectrum.resolve_damping`) and ``seed``
    (Lanczos start vectors, LiSSA's minibatches) apply to whichever solver runs; ``lissa`` and ``cg`` hold
    each iterative solver's own settings.
    """
    lissa = lissa or LissaConfig()
    cg = cg or CgConfig()
    tolerance = lissa.tolerance if requested == "lissa" else cg.tolerance
    choice, spectrum = choose_solver(
        objective,
        requested=requested,
        convex=convex,
        damping=damping,
        tolerance=tolerance,
        block_size=cg.block_size if requested != "lissa" else lissa.block_size,
        memory_budget_bytes=memory_budget_bytes,
        seed=seed,
    )
    block = int(choice.measurements["block_size"])
    if choice.name == "direct":
        solver: InfluenceSolver = DirectSolver(
            objective,
            damping=damping,
            convex=convex,
            memory_budget_bytes=memory_budget_bytes,
            column_block=fitting_block_size(objective, 64, itemsize=8),
            chunk_size=chunk_size,
            # explicit solver="direct" stays float64 (exact); auto takes float32 columns when accurate
            hvp_dtype="float32"
            if requested == "auto" and choice.measurements["direct_float32_columns"]
            else "float64",
        )
    elif choice.name == "cg":
        config = CgConfig(**{**cg.__dict__, "block_size": min(cg.block_size, block)})
        solver = CgSolver(objective, config, damping=damping, seed=seed, convex=convex, spectrum=spectrum)
    else:
        config = LissaConfig(**{**lissa.__dict__, "block_size": min(lissa.block_size, block)})
        solver = LissaSolver(objective, config, damping=damping, seed=seed, convex=convex, spectrum=spectrum)
    return solver, choice
