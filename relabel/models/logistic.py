"""``logistic``: multinomial logistic regression, fitted in closed form, with exact self-influence.

J(Θ) = mean cross-entropy + (λ/2)‖Θ‖² is strictly convex for λ > 0, so the fit (L-BFGS then Newton,
:func:`relabel.logistic.fit_logistic`) reaches the unique optimum and the Hessian is formed and
Cholesky-factored exactly (:class:`relabel.influence.exact.ExactLogisticSolver`). Asked for an iterative
solver, it hands the same fit to them as a torch ``Linear(d, K)`` (δ = 0 by default: J is convex).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from relabel.models.base import FitSummary, FittedModel, ModelKind, ModelSettings

if TYPE_CHECKING:
    from torch import nn

    from relabel.influence.base import InfluenceSolver
    from relabel.influence.settings import InfluenceSettings
    from relabel.logistic import LogisticFit


class LogisticModel(ModelKind):
    name = "logistic"
    description = "multinomial logistic regression: exact self-influence"
    inputs = "features"
    solvers = ("auto", "exact", "direct", "cg", "lissa")
    default_solver = "exact"
    convex = True

    def build(self, input_shape: tuple[int, ...], n_classes: int, settings: ModelSettings) -> nn.Module:
        from relabel.torch_models import build_logistic

        return build_logistic(int(np.prod(input_shape)), n_classes)

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        settings: ModelSettings,
        influence: InfluenceSettings,
    ) -> FittedModel:
        """The closed-form fit; for an iterative solver also the torch module and objective carrying it."""
        from relabel.logistic import fit_logistic

        rows = self.prepare(X, settings)
        with tqdm(total=1, desc="fit logistic", disable=not settings.progress, leave=False) as bar:
            fit = fit_logistic(
                rows, y, n_classes, l2=settings.l2, gradient_tolerance=settings.gradient_tolerance or 1e-8
            )
            bar.update(1)
        summary = FitSummary(
            "logistic",
            fit.gradient_norm,
            fit.objective,
            fit.lbfgs_iterations + fit.newton_steps,
            fit.n_parameters,
        )
        fitted = FittedModel(
            probabilities=fit.predict_proba(rows), summary=summary, logistic_fit=fit, convex=True
        )
        if influence.solver in ("auto", "exact"):
            fitted.exact_solver = lambda chunk_size, progress, precision: exact_solver(
                rows, y, fit, chunk_size, progress, precision
            )
            return fitted
        fitted.module = self._module(fit, settings)
        fitted.objective = self._objective(fitted.module, rows, y, settings)
        fitted.probabilities = fitted.objective.probabilities()
        return fitted

    def predict_proba(self, fitted: FittedModel, X: np.ndarray, settings: ModelSettings) -> np.ndarray:
        """softmax([x, 1] Θ̂) for each row of ``X``, (n, K) float64."""
        return fitted.logistic_fit.predict_proba(self.prepare(X, settings))

    def _module(self, fit: LogisticFit, settings: ModelSettings) -> nn.Module:
        import torch

        module = self.build((fit.Theta.shape[0] - 1,), fit.n_classes, settings)
        module = module.to(settings.torch_device(), torch.float64)
        with torch.no_grad():
            module.weight.copy_(torch.as_tensor(fit.Theta[:-1].T))
            module.bias.copy_(torch.as_tensor(fit.Theta[-1]))
        return module

    @staticmethod
    def _objective(module: nn.Module, rows: np.ndarray, y: np.ndarray, settings: ModelSettings):
        import torch

        from relabel.influence.torch_objective import TorchObjective

        device = settings.torch_device()
        return TorchObjective(
            module,
            torch.as_tensor(rows, dtype=torch.float64, device=device),
            torch.as_tensor(y, device=device),
            weight_decay=settings.l2,
            loss_fn=settings.per_example_loss(),
        )


def exact_solver(
    rows: np.ndarray, y: np.ndarray, fit: LogisticFit, chunk_size: int, progress: bool, precision: str
) -> InfluenceSolver:
    """The exact solver: H formed from the fit's probabilities and Cholesky-factored (``precision``:
    "float64" or "mixed", see :class:`~relabel.influence.exact.ExactLogisticSolver`)."""
    from relabel.influence.exact import ExactLogisticSolver, LogisticGradients

    gradients = LogisticGradients(rows, y, fit)
    with tqdm(total=gradients.n_items, desc="Hessian", disable=not progress, leave=False) as bar:
        return ExactLogisticSolver(gradients, chunk_size, hessian_progress=bar.update, precision=precision)
