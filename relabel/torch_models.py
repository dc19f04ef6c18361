"""PyTorch models relabel can score, and the trainer that brings them to a stationary point.

- ``mlp``: feature vectors → Linear(d, h) → tanh → Linear(h, K). tanh keeps the loss twice
  differentiable everywhere, so the Hessian used by influence functions is well defined.
- ``cnn``: small images (C, H, W) → [Conv3×3(8) → tanh → AvgPool2] → [Conv3×3(16) → tanh → AvgPool2]
  → Linear(16·⌊H/4⌋·⌊W/4⌋, K). Built for 8×8 to 32×32 inputs.
- ``logistic``: Linear(d, K), the same model as :mod:`relabel.logistic` (used to run LiSSA on it).

Training minimises J(θ) = mean per-example loss + (λ/2)‖θ‖² until ‖∇J‖₂ ≤ ``gradient_tolerance``; the
reached gradient norm is reported and a fit that stays above it raises ConvergenceError (influence at a
non-stationary point is meaningless; docs/maths.md, § Optimum requirement). Two trainers:

- :func:`train_for_influence` (what ``SuspicionScorer`` uses): seeded float32 minibatch Adam with a cosine
  learning-rate decay does the bulk of the descent cheaply, then a float64 full-batch L-BFGS polish
  (:func:`train_to_stationary_point`) brings ‖∇J‖ below the tolerance; both stages share one time limit.
- :func:`train_to_stationary_point`: full-batch L-BFGS (strong-Wolfe line search) in the model's dtype
  from wherever the parameters are.

When influence is taken over the last layer only (:mod:`relabel.influence.scope`), the polish brings
‖∂J/∂θ_last‖ below the tolerance with the body fixed: the stationarity that influence over that θ needs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from relabel.errors import ConvergenceError
from relabel.influence.torch_objective import PerExampleLoss, cross_entropy_per_example, owning_module


def build_mlp(n_features: int, n_classes: int, hidden_units: int = 64) -> nn.Module:
    """Linear(d, h) → tanh → Linear(h, K)."""
    return nn.Sequential(nn.Linear(n_features, hidden_units), nn.Tanh(), nn.Linear(hidden_units, n_classes))


def build_cnn(image_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Two 3×3 conv + tanh + 2×2 average-pool stages, then a linear classifier; input (C, H, W)."""
    channels, height, width = image_shape
    flat = 16 * (height // 4) * (width // 4)
    if flat == 0:
        raise ValueError(f"cnn needs images of at least 4×4 pixels; got {height}×{width}")
    return nn.Sequential(
        nn.Conv2d(channels, 8, kernel_size=3, padding=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 16, kernel_size=3, padding=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, n_classes),
    )


def build_logistic(n_features: int, n_classes: int) -> nn.Module:
    """Linear(d, K): multinomial logistic regression as a module."""
    return nn.Linear(n_features, n_classes)


@dataclass
class TrainingReport:
    """How training ended: ``gradient_norm`` ‖∇J‖₂ at the end (float64, full data), ``objective`` J (nats),
    ``iterations`` (L-BFGS iterations; plus Adam steps for :func:`train_for_influence`), and for
    :func:`train_for_influence` the split: ``adam_steps``, ``adam_gradient_norm`` (‖∇J‖ after Adam),
    ``lbfgs_iterations``, ``seconds``."""

    gradient_norm: float
    objective: float
    iterations: int
    adam_steps: int = 0
    adam_gradient_norm: float = float("nan")
    lbfgs_iterations: int = 0
    seconds: float = 0.0


def _not_stationary(
    norm: float, tolerance: float, iterations: int, seconds_limit: float | None
) -> ConvergenceError:
    """The error for a fit that stopped above the gradient tolerance, naming the limit it hit."""
    limit = (
        f"the time limit ({seconds_limit:.0f} s; raise max_training_seconds)"
        if seconds_limit is not None
        else f"{iterations} L-BFGS iterations (raise max_training_iterations)"
    )
    return ConvergenceError(
        f"training stopped at gradient norm {norm:.3g} > gradient_tolerance {tolerance:g} after {limit}; "
        "influence needs a stationary point: raise the limit, raise weight decay (l2), loosen "
        "gradient_tolerance, or standardise the features"
    )


def train_to_stationary_point(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    weight_decay: float,
    loss_fn: PerExampleLoss = cross_entropy_per_example,
    gradient_tolerance: float = 1e-4,
    max_iterations: int = 5000,
    progress: Callable[[int, float], None] | None = None,
    max_seconds: float | None = None,
) -> TrainingReport:
    """Minimise J(θ) = mean ℓ + (λ/2)‖θ‖² over all trainable parameters by full-batch L-BFGS.

    ``progress(iterations_done, gradient_norm)`` is called after each L-BFGS round of 20 iterations.
    Raises ConvergenceError when ‖∇J‖₂ > gradient_tolerance after ``max_iterations`` or ``max_seconds``.
    """
    started = time.perf_counter()
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    n_parameters = sum(parameter.numel() for parameter in parameters)
    model.train(False)

    def new_optimizer() -> torch.optim.LBFGS:
        return torch.optim.LBFGS(
            parameters,
            lr=1.0,
            max_iter=20,
            history_size=50,
            # L-BFGS tests max |∂J/∂θ_j|, not ‖∇J‖₂ (≤ √p·max): scale so it never stops before we do
            tolerance_grad=gradient_tolerance / (10 * math.sqrt(max(n_parameters, 1))),
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

    optimizer = new_optimizer()

    def objective() -> torch.Tensor:
        penalty = sum((parameter * parameter).sum() for parameter in parameters)
        return loss_fn(model(X), y).mean() + 0.5 * weight_decay * penalty

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    def gradient_norm() -> tuple[float, float]:
        value = closure()
        norm = torch.sqrt(sum((parameter.grad**2).sum() for parameter in parameters))
        return float(norm.detach()), float(value.detach())

    iterations = 0
    norm, value = gradient_norm()
    out_of_time = False
    while norm > gradient_tolerance and iterations < max_iterations:
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            out_of_time = True
            break
        optimizer.step(closure)
        iterations += 20
        previous = norm
        norm, value = gradient_norm()
        if progress is not None:
            progress(iterations, norm)
        if not torch.isfinite(torch.tensor(value)):
            raise ConvergenceError("training diverged (objective is NaN/inf): standardise the features")
        if norm == previous and norm > gradient_tolerance:
            # L-BFGS made no progress (line search stalled): restart its memory once more.
            optimizer = new_optimizer()
    optimizer.zero_grad()
    if norm > gradient_tolerance:
        raise _not_stationary(norm, gradient_tolerance, iterations, max_seconds if out_of_time else None)
    return TrainingReport(
        gradient_norm=norm, objective=value, iterations=iterations, lbfgs_iterations=iterations
    )


def _adam_stage(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    adam_steps: int,
    learning_rate: float,
    seed: int,
    deadline: float,
    progress: Callable[[int, float], None] | None,
    *,
    weight_decay: float,
    loss_fn: PerExampleLoss,
    batch_size: int,
) -> tuple[int, float]:
    """Stage 1 of :func:`train_for_influence`: float32 minibatch Adam on a copy of ``model``, weights copied
    back at the end; stops at ``adam_steps`` or the ``deadline`` (``time.perf_counter`` seconds). Returns
    (steps done, ‖∇J‖₂ of ``model`` on the full data afterwards)."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    fast = copy.deepcopy(model).to(torch.float32)
    fast.train(False)
    fast_parameters = [parameter for parameter in fast.parameters() if parameter.requires_grad]
    inputs = X.to(torch.float32) if torch.is_floating_point(X) else X
    optimizer = torch.optim.Adam(fast_parameters, lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    n = X.shape[0]
    batch = max(1, min(batch_size, n))
    steps_done = 0
    while steps_done < adam_steps and time.perf_counter() < deadline:
        order = torch.randperm(n, generator=generator).to(X.device)
        for start in range(0, n - batch + 1, batch):
            rows = order[start : start + batch]
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * learning_rate * (1 + math.cos(math.pi * steps_done / adam_steps))
            optimizer.zero_grad()
            penalty = sum((parameter * parameter).sum() for parameter in fast_parameters)
            loss = loss_fn(fast(inputs[rows]), y[rows]).mean() + 0.5 * weight_decay * penalty
            loss.backward()
            optimizer.step()
            steps_done += 1
            if steps_done >= adam_steps:
                break
        if not math.isfinite(float(loss.detach())):
            raise ConvergenceError(
                "training diverged (objective is NaN/inf): standardise the features or lower the "
                "learning rate"
            )
        if progress is not None:
            progress(steps_done, math.sqrt(sum(float((p.grad**2).sum()) for p in fast_parameters)))
    with torch.no_grad():
        for target, source in zip(parameters, fast_parameters, strict=True):
            target.copy_(source.to(target.dtype))
    model.zero_grad()
    penalty = sum((parameter * parameter).sum() for parameter in parameters)
    (loss_fn(model(X), y).mean() + 0.5 * weight_decay * penalty).backward()
    norm = math.sqrt(sum(float((parameter.grad**2).sum()) for parameter in parameters))
    model.zero_grad()
    return steps_done, norm


@contextmanager
def polish_target(
    model: nn.Module, X: torch.Tensor, names: Sequence[str] | None
) -> Iterator[tuple[nn.Module, torch.Tensor]]:
    """(module, inputs) for the polish over the parameters ``names`` (None: the whole model on X).

    If ``names`` are all of one module's parameters and that module's output on its recorded inputs is
    the model's output, yield that module and the cached inputs; otherwise yield the whole model on X
    with every other parameter's ``requires_grad`` switched off for the duration (then restored)."""
    if names is None:
        yield model, X
        return
    chosen = set(names)
    module = owning_module(model, names)
    cached = _cached_inputs(model, module, X) if module is not None else None
    if module is not None and cached is not None:
        yield module, cached
        return
    frozen = [p for name, p in model.named_parameters() if p.requires_grad and name not in chosen]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield model, X
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def is_final_linear(model: nn.Module, names: Sequence[str] | None, X: torch.Tensor) -> bool:
    """True when ``names`` are exactly the parameters of an ``nn.Linear`` that is the model's last step
    (checked on the first rows of X): with the body fixed, cross-entropy over that θ is then a
    multinomial logistic regression, convex, and its Hessian plus λI is positive definite."""
    module = owning_module(model, names)
    return isinstance(module, nn.Linear) and _cached_inputs(model, module, X[:8]) is not None


def _cached_inputs(model: nn.Module, module: nn.Module, X: torch.Tensor) -> torch.Tensor | None:
    """The inputs ``module`` receives when the model runs on X, if the model's output is exactly
    ``module`` applied to them (the module is the last step); else None."""
    recorded: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, inputs, _out: recorded.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            outputs = model(X)
    finally:
        handle.remove()
    if len(recorded) != 1:
        return None
    with torch.no_grad():
        if not torch.equal(module(recorded[0]), outputs):
            return None
    return recorded[0]


def train_for_influence(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    weight_decay: float,
    loss_fn: PerExampleLoss = cross_entropy_per_example,
    gradient_tolerance: float = 1e-4,
    max_iterations: int = 5000,
    max_seconds: float = 600.0,
    adam_steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 1e-2,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    polish_parameters: Sequence[str] | None = None,
) -> TrainingReport:
    """Fast training to a near-stationary point: float32 Adam, then a float64 L-BFGS polish (in place).

    Stage 1 — a float32 copy of ``model`` (and of ``X``) takes ``adam_steps`` minibatch Adam steps
    (``batch_size`` rows, seeded shuffles, learning rate ``learning_rate`` decayed by a cosine to 0; the
    L2 term is in the loss, as in J, not decoupled). Cheap steps on the bulk of the descent.
    Stage 2 — the weights are copied back into ``model`` (its own dtype, float64 in relabel) and full-batch
    L-BFGS runs until ‖∇J‖₂ ≤ ``gradient_tolerance`` (≤ ``max_iterations``); from the Adam point it
    needs far fewer iterations than from the initialisation.
    ``polish_parameters`` (names, e.g. the last layer's): stage 2 minimises J over those only, the rest
    held at the Adam point, and ``gradient_norm`` is ‖∂J/∂θ‖ for them (the stationarity influence over
    that θ needs). When they are one module's parameters and that module is the model's last step, the
    polish runs on that module's cached inputs (one forward pass of the body instead of one per step).
    Both stages share ``max_seconds`` (Adam stops early at half of it). ``progress(steps, ‖∇J‖)`` is called
    every Adam epoch (‖∇J‖ of the last minibatch there) and every 20 L-BFGS iterations (full data).
    Raises :class:`ConvergenceError` naming the limit hit and the settings to change.
    """
    started = time.perf_counter()
    steps_done, adam_norm = 0, float("nan")
    if adam_steps > 0 and any(parameter.requires_grad for parameter in model.parameters()):
        options = {"weight_decay": weight_decay, "loss_fn": loss_fn, "batch_size": batch_size}
        steps_done, adam_norm = _adam_stage(
            model, X, y, adam_steps, learning_rate, seed, started + 0.5 * max_seconds, progress, **options
        )

    def shifted(iterations: int, norm: float) -> None:
        if progress is not None:
            progress(steps_done + iterations, norm)

    remaining = max(max_seconds - (time.perf_counter() - started), 1.0)
    with polish_target(model, X, polish_parameters) as (polished, inputs):
        report = train_to_stationary_point(
            polished,
            inputs,
            y,
            weight_decay=weight_decay,
            loss_fn=loss_fn,
            gradient_tolerance=gradient_tolerance,
            max_iterations=max_iterations,
            progress=shifted,
            max_seconds=remaining,
        )
    return TrainingReport(
        gradient_norm=report.gradient_norm,
        objective=report.objective,
        iterations=steps_done + report.iterations,
        adam_steps=steps_done,
        adam_gradient_norm=adam_norm,
        lbfgs_iterations=report.iterations,
        seconds=time.perf_counter() - started,
    )
