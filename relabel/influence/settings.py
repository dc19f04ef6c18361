"""How self-influence is solved, apart from the model: which solver, δ, the seed, θ, and the budgets.

These settings belong to every solver (the exact Cholesky one, direct, CG and LiSSA); each iterative
solver's own knobs (tolerance, block size, preconditioner, …) stay in its config
(:class:`~relabel.influence.lissa.LissaConfig`, :class:`~relabel.influence.cg.CgConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relabel.errors import InputError
from relabel.influence.cg import CgConfig
from relabel.influence.direct import DEFAULT_HESSIAN_MEMORY_BUDGET
from relabel.influence.exact import PRECISIONS
from relabel.influence.lissa import LissaConfig
from relabel.influence.scope import DEFAULT_SCOPE_BUDGET_SECONDS, SCOPES

SOLVER_NAMES = ("auto", "exact", "direct", "cg", "lissa")


@dataclass
class InfluenceSettings:
    """Settings shared by every influence solver.

    solver:                "auto" (the model kind's exact solver when it has one, else direct / cg / lissa
                           by the cost model of :mod:`relabel.influence.auto`), or one of those names.
    damping:               δ added to H; None → 0 for a convex objective, 0.01·λ̂_max(H) otherwise
                           (docs/maths.md § Damping). Applies to whichever solver runs.
    seed:                  seeds the Lanczos start vectors and LiSSA's minibatches.
    parameters:            restrict θ to parameters with these names or name prefixes (e.g. ("2",) or
                           ("fc.",)); None → chosen by ``influence_parameters``.
    influence_parameters:  deep models: "auto", "all" or "last" (:mod:`relabel.influence.scope`).
    scope_budget_seconds:  the full-θ estimate "auto" may spend before falling back to the last layer.
    hessian_memory_budget: bytes the p × p Hessian of the direct solver may take.
    chunk_size:            training rows per gradient block when scoring.
    exact_precision:       the exact logistic solver: "float64" or "mixed" (float32 products and solves,
                           float64 Cholesky factor, accuracy measured on probe items; see
                           :class:`~relabel.influence.exact.ExactLogisticSolver`).
    lissa, cg:             each iterative solver's own settings.
    """

    solver: str = "auto"
    damping: float | None = None
    seed: int = 0
    parameters: tuple[str, ...] | None = None
    influence_parameters: str = "auto"
    scope_budget_seconds: float = DEFAULT_SCOPE_BUDGET_SECONDS
    hessian_memory_budget: int = DEFAULT_HESSIAN_MEMORY_BUDGET
    chunk_size: int = 1024
    exact_precision: str = "float64"
    lissa: LissaConfig = field(default_factory=LissaConfig)
    cg: CgConfig = field(default_factory=CgConfig)

    def __post_init__(self) -> None:
        if self.solver not in SOLVER_NAMES:
            raise InputError(f"unknown solver {self.solver!r}: choose one of {', '.join(SOLVER_NAMES)}")
        if self.influence_parameters not in SCOPES:
            choices = ", ".join(SCOPES)
            raise InputError(
                f"unknown influence_parameters {self.influence_parameters!r}: choose one of {choices}"
            )
        if self.exact_precision not in PRECISIONS:
            raise InputError(
                f"exact_precision must be one of {', '.join(PRECISIONS)}; got {self.exact_precision!r}"
            )
        if self.lissa is None:
            self.lissa = LissaConfig()
        if self.cg is None:
            self.cg = CgConfig()
