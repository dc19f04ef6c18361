"""PyTorch models relabel can score, and the trainer that brings them to a stationary point.

- ``mlp``: feature vectors → Linear(d, h) → tanh → Linear(h, K). tanh keeps the loss twice
  differentiable everywhere, so the Hessian used by influence functions is well defined.
- ``cnn``: small images (C, H, W) → [Conv3×3(8) → tanh → AvgPool2] → [Conv3×3(16) → tanh → AvgPool2]
  → Linear(16·⌊H/4⌋·⌊W/4⌋, K). Built for 8×8 to 32×32 inputs.
- ``logistic``: Linear(d, K), the same model as :mod:`relabel.logistic` (used to run LiSSA on it).

Training minimises J(θ) = mean per-example loss + (λ/2)‖θ‖² with full-batch L-BFGS (strong-Wolfe line
search) in float64 until ‖∇J‖₂ ≤ ``gradient_tolerance``; the reached gradient norm is reported and
a fit that stays above it raises ConvergenceError (influence at a non-stationary point is meaningless;
docs/maths.md, § Optimum requirement).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from relabel.errors import ConvergenceError
from relabel.influence.torch_objective import PerExampleLoss, cross_entropy_per_example


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
    """How training ended: ``gradient_norm`` ‖∇J‖₂ at the end, ``objective`` J (nats), ``iterations``."""

    gradient_norm: float
    objective: float
    iterations: int


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
) -> TrainingReport:
    """Minimise J(θ) = mean ℓ + (λ/2)‖θ‖² over all trainable parameters by full-batch L-BFGS.

    ``progress(iterations_done, gradient_norm)`` is called after each L-BFGS round of 20 iterations.
    Raises ConvergenceError when ‖∇J‖₂ > gradient_tolerance after ``max_iterations``.
    """
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    model.train(False)

    def new_optimizer() -> torch.optim.LBFGS:
        return torch.optim.LBFGS(
            parameters,
            lr=1.0,
            max_iter=20,
            history_size=50,
            tolerance_grad=gradient_tolerance / 10,
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
    while norm > gradient_tolerance and iterations < max_iterations:
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
        raise ConvergenceError(
            f"training stopped at gradient norm {norm:.3g} > {gradient_tolerance:g} after {iterations} "
            "L-BFGS iterations; influence needs a stationary point: raise max_iterations or weight decay "
            "(l2), or standardise the features"
        )
    return TrainingReport(gradient_norm=norm, objective=value, iterations=iterations)
