"""Which parameters θ self-influence is taken over: all of a deep model's, or its last layer's.

Self-influence of all n items over all p parameters costs, whatever the solver, either p Hessian-vector
product columns (direct) or n·k of them (an iterative solver, k iterations per item), each a pass over
all n training rows. For a convolutional model on a CPU one column costs 0.1–0.5 s, so a few thousand
items take hours. The classic remedy (Koh & Liang 2017, § 5.1: "we only consider the top layer") is to
take θ = the last layer's weights, the body held fixed at θ̂: g_i and H are then the last layer's
gradient and the matching diagonal block of the Hessian (docs/maths.md, § Parameter scope). Each column
of that block only replays the last layer, so it is exact and fast.

``influence_parameters``:
- ``"all"``: every trainable parameter;
- ``"last"``: the parameters of the last module (in registration order) that owns trainable parameters;
- ``"auto"`` (default): ``"all"`` when the cheapest full-θ solve is estimated within
  ``budget_seconds`` (default 120 s), else ``"last"``. The estimate is taken before training (a column's
  cost does not depend on the weights): seconds of one float32 HVP column c on all rows, times
  min(p [direct, when the p × p matrix fits the memory budget], n · ½√κ₀ · ln(2/ε) [CG]), with κ₀ = 101,
  the condition number the default damping δ = 0.01·λ_max gives a positive semi-definite H, ε = 1e-2.
  The reason, with the estimate, is printed with the solver line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from relabel.errors import InputError
from relabel.influence.spectrum import DEFAULT_DAMPING_FRACTION
from relabel.influence.torch_objective import (
    PerExampleLoss,
    TorchObjective,
    cross_entropy_per_example,
    modules_with_parameters,
)

SCOPES = ("auto", "all", "last")  # θ that deep models take self-influence over (module docstring)
DEFAULT_SCOPE_BUDGET_SECONDS = 120.0
PROBE_COLUMNS = 2
_NOMINAL_CONDITION = 1.0 + 1.0 / DEFAULT_DAMPING_FRACTION
_NOMINAL_TOLERANCE = 1e-2


@dataclass
class ParameterScope:
    """θ for influence: ``names`` (None = all trainable parameters), ``kind`` ("all" or "last"),
    ``n_parameters`` of ``total_parameters``, ``reason`` (one clause), and the full-θ estimate in seconds
    (NaN when not estimated)."""

    names: tuple[str, ...] | None
    kind: str
    n_parameters: int
    total_parameters: int
    reason: str
    full_estimate_seconds: float = math.nan

    def gradient_label(self) -> str:
        """What θ the fit's ‖∇J‖ is measured over (the parameters the polish minimised)."""
        return {"all": "all parameters", "last": "the last layer"}.get(self.kind, "the given parameters")

    def describe(self) -> str:
        names = ", ".join(self.names or ())
        what = {"all": "all parameters", "last": f"the last layer ({names})"}.get(self.kind, names)
        return (
            f"influence over {what}: {self.n_parameters:,} of {self.total_parameters:,} parameters; "
            f"{self.reason}"
        )


def last_layer_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the trainable parameters of the last module (registration order) that owns any."""
    last: tuple[str, ...] = ()
    for _, own in modules_with_parameters(model):
        last = own
    if not last:
        raise InputError("the model has no trainable parameters to take influence over")
    return last


def _count(model: nn.Module, names: Sequence[str] | None) -> int:
    return sum(
        parameter.numel()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and (names is None or name in names)
    )


def full_scope_estimate(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    weight_decay: float,
    loss_fn: PerExampleLoss = cross_entropy_per_example,
    memory_budget_bytes: int,
) -> float:
    """Seconds the cheapest full-θ solve would take (module docstring), from a timed float32 column."""
    objective = TorchObjective(model, X, y, weight_decay=weight_decay, loss_fn=loss_fn).with_dtype(
        torch.float32
    )
    p, n = objective.n_parameters, objective.n_items
    vectors = torch.randn(
        (PROBE_COLUMNS, p), generator=torch.Generator().manual_seed(0), dtype=torch.float32
    ).to(objective.device)
    operator = objective.hessian_operator()
    operator(vectors[:1])  # warm-up
    started = time.perf_counter()
    operator(vectors)
    column = (time.perf_counter() - started) / PROBE_COLUMNS
    iterations = 0.5 * math.sqrt(_NOMINAL_CONDITION) * math.log(2 / _NOMINAL_TOLERANCE)
    candidates = [n * iterations * column]
    if 8 * p * p <= memory_budget_bytes:
        candidates.append(p * column)
    return min(candidates)


def choose_scope(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    requested: str = "auto",
    *,
    weight_decay: float,
    loss_fn: PerExampleLoss = cross_entropy_per_example,
    budget_seconds: float = DEFAULT_SCOPE_BUDGET_SECONDS,
    memory_budget_bytes: int = 2 * 2**30,
) -> ParameterScope:
    """The θ to take influence over (module docstring)."""
    if requested not in SCOPES:
        raise InputError(f"unknown influence_parameters {requested!r}: choose one of {', '.join(SCOPES)}")
    total = _count(model, None)
    last = last_layer_names(model)
    if requested == "all" or (requested == "auto" and _count(model, last) == total):
        return ParameterScope(None, "all", total, total, "requested" if requested == "all" else "one layer")
    if requested == "last":
        return ParameterScope(last, "last", _count(model, last), total, "requested")
    estimate = full_scope_estimate(
        model, X, y, weight_decay=weight_decay, loss_fn=loss_fn, memory_budget_bytes=memory_budget_bytes
    )
    if estimate <= budget_seconds:
        reason = f"all parameters estimated at {_duration(estimate)} ≤ the {_duration(budget_seconds)} budget"
        return ParameterScope(None, "all", total, total, reason, estimate)
    reason = (
        f"all {total:,} parameters estimated at {_duration(estimate)} > the {_duration(budget_seconds)} "
        "budget (influence_parameters='all' to insist, or a GPU)"
    )
    return ParameterScope(last, "last", _count(model, last), total, reason, estimate)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
