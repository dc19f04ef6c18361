"""Brute-force references the fast code is tested against (autograd Hessians, one solve per point)."""

from __future__ import annotations

import numpy as np
import torch

from relabel.logistic import LogisticFit


def logistic_objective_torch(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float):
    """J(θ) of relabel.logistic as a torch function of the class-major flat θ (float64)."""
    X_tilde = torch.tensor(np.hstack([X, np.ones((len(X), 1))]), dtype=torch.float64)
    targets = torch.tensor(y)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        Theta = theta.reshape(n_classes, -1).T
        loss = torch.nn.functional.cross_entropy(X_tilde @ Theta, targets)
        return loss + 0.5 * l2 * (theta * theta).sum()

    def example_gradient(theta: torch.Tensor, i: int) -> torch.Tensor:
        theta = theta.detach().clone().requires_grad_(True)
        Theta = theta.reshape(n_classes, -1).T
        loss = torch.nn.functional.cross_entropy(X_tilde[i : i + 1] @ Theta, targets[i : i + 1])
        (gradient,) = torch.autograd.grad(loss, theta)
        return gradient

    return objective, example_gradient


def brute_force_logistic_influence(X: np.ndarray, y: np.ndarray, fit: LogisticFit):
    """(explicit autograd Hessian H, list of per-example gradients g_i) at the fitted optimum."""
    objective, example_gradient = logistic_objective_torch(X, y, fit.n_classes, fit.l2)
    theta = torch.tensor(np.ascontiguousarray(fit.Theta.T).ravel())
    hessian = torch.autograd.functional.hessian(objective, theta)
    gradients = [example_gradient(theta, i) for i in range(len(X))]
    return hessian, gradients
