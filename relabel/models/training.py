"""Fitting a torch network for influence: choose θ, train to a stationary point over it, build the objective;
:class:`TorchModelKind`, the model kind every network (mlp, cnn, a user's module) is.

Shared by every torch model kind (mlp, cnn, a user's module). The order matters: θ (the parameter scope,
:mod:`relabel.influence.scope`) is chosen before training because the L-BFGS polish minimises J over θ
and ‖∂J/∂θ‖ is what stationarity is measured on (docs/maths.md § Optimum requirement).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from relabel.influence.scope import ParameterScope, choose_scope
from relabel.influence.settings import InfluenceSettings
from relabel.influence.torch_objective import (
    TorchObjective,
    cross_entropy_per_example,
    select_parameter_names,
)
from relabel.models.base import FitSummary, FittedModel, ModelKind, ModelSettings
from relabel.torch_models import is_final_linear, train_for_influence


def fit_module(
    module: nn.Module,
    name: str,
    inputs: torch.Tensor,
    y: np.ndarray,
    settings: ModelSettings,
    influence: InfluenceSettings,
    convex: bool = False,
) -> FittedModel:
    """Train ``module`` (float64, on ``settings.device``) on (inputs, y) unless ``settings.train_model`` is
    False; returns its probabilities, fit summary, objective over the chosen θ and convexity (``convex``:
    the kind's J is convex in all θ; else only a final linear layer's θ under cross-entropy is)."""
    module = module.to(settings.torch_device(), torch.float64)
    targets = torch.as_tensor(y, device=settings.torch_device())
    scope = model_scope(module, inputs, targets, settings, influence)
    n_parameters = sum(p.numel() for p in module.parameters())
    if settings.train_model:
        report = _train(module, name, inputs, targets, settings, scope)
        summary = FitSummary(
            name,
            report.gradient_norm,
            report.objective,
            report.iterations,
            n_parameters,
            scope.gradient_label(),
        )
    else:
        summary = FitSummary(name, float("nan"), float("nan"), 0, n_parameters)
    objective = TorchObjective(
        module,
        inputs,
        targets,
        weight_decay=settings.l2,
        loss_fn=settings.per_example_loss(),
        parameter_names=scope.names,
    )
    if not settings.train_model:
        summary.gradient_norm = objective.objective_gradient_norm()
    return FittedModel(
        probabilities=objective.probabilities(),
        summary=summary,
        module=module,
        objective=objective,
        parameter_scope=scope,
        convex=convex or last_layer_convex(module, scope, settings, inputs),
    )


def _train(
    module: nn.Module,
    name: str,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: ModelSettings,
    scope: ParameterScope,
):
    with tqdm(
        total=settings.max_training_iterations,
        desc=f"train {name}",
        disable=not settings.progress,
        leave=False,
    ) as bar:

        def advance(iterations: int, gradient_norm: float) -> None:
            bar.n = min(iterations, bar.total)
            bar.set_postfix(grad_norm=f"{gradient_norm:.2e}")
            bar.refresh()

        return train_for_influence(
            module,
            inputs,
            targets,
            weight_decay=settings.l2,
            loss_fn=settings.per_example_loss(),
            gradient_tolerance=settings.gradient_tolerance or 1e-4,
            max_iterations=settings.max_training_iterations,
            max_seconds=settings.max_training_seconds,
            seed=settings.seed,
            progress=advance,
            polish_parameters=scope.names,
        )


def model_scope(
    module: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: ModelSettings,
    influence: InfluenceSettings,
) -> ParameterScope:
    """θ for influence: ``influence.parameters`` when given, else :func:`choose_scope` by
    ``influence.influence_parameters`` within ``influence.scope_budget_seconds``."""
    if influence.parameters is not None:
        names = tuple(select_parameter_names(module, influence.parameters))
        size = sum(p.numel() for name, p in module.named_parameters() if name in names)
        total = sum(p.numel() for p in module.parameters() if p.requires_grad)
        return ParameterScope(names, "given", size, total, "InfluenceSettings.parameters")
    with tqdm(total=1, desc="influence scope", disable=not settings.progress, leave=False) as bar:
        scope = choose_scope(
            module,
            inputs,
            targets,
            influence.influence_parameters,
            weight_decay=settings.l2,
            loss_fn=settings.per_example_loss(),
            budget_seconds=influence.scope_budget_seconds,
            memory_budget_bytes=influence.hessian_memory_budget,
        )
        bar.update(1)
    return scope


def last_layer_convex(
    module: nn.Module, scope: ParameterScope, settings: ModelSettings, inputs: torch.Tensor
) -> bool:
    """J over θ is convex when θ is a final linear layer under cross-entropy with the body held fixed
    (docs/maths.md § Damping: then δ = 0 by default)."""
    return (
        scope.kind in ("last", "given")
        and settings.per_example_loss() is cross_entropy_per_example
        and is_final_linear(module, scope.names, inputs)
    )


class TorchModelKind(ModelKind):
    """A kind whose network is trained by :func:`relabel.torch_models.train_for_influence` and scored by the
    iterative solvers; subclasses only ``build`` the network."""

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        settings: ModelSettings,
        influence: InfluenceSettings,
    ) -> FittedModel:
        """Seed, build, choose θ (:func:`model_scope`), train to a stationary point over θ."""
        inputs = torch.as_tensor(
            self.prepare(X, settings), dtype=torch.float64, device=settings.torch_device()
        )
        torch.manual_seed(settings.seed)
        module = self.build(tuple(inputs.shape[1:]), n_classes, settings)
        return fit_module(module, self.name, inputs, y, settings, influence, convex=self.convex)

    def predict_proba(self, fitted: FittedModel, X: np.ndarray, settings: ModelSettings) -> np.ndarray:
        """softmax(f_θ̂(x)) for each row of ``X``, (n, K) float64."""
        inputs = torch.as_tensor(
            self.prepare(X, settings), dtype=torch.float64, device=settings.torch_device()
        )
        with torch.no_grad():
            return torch.softmax(fitted.module(inputs), dim=1).cpu().numpy()
