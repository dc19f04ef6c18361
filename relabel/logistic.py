"""Multinomial logistic regression fitted to its exact optimum, in float64 (numpy).

The model and objective are the contract of docs/maths.md, § Model and objective:

    inputs x ∈ R^d, classes 0..K-1, parameters Θ = [W; bᵀ] ∈ R^{(d+1)×K}  (last row is the bias b)
    x̃ = (x, 1) ∈ R^{d+1},  p(x) = softmax(x̃ᵀ Θ) ∈ Δ^K
    J(Θ) = (1/n) Σ_i CE(y_i, p(x_i)) + (λ/2) ‖Θ‖²_F        (the bias is penalised too)

K = 2 uses the same (over-parametrised, softmax) definition; λ > 0 makes J strictly convex, so the
optimum Θ̂ is unique and the Hessian there is positive definite.

Flattened parameter vector (used for gradients and the Hessian): class-major,
θ[k·(d+1) + j] = Θ[j, k], i.e. θ = vec of the K×(d+1) matrix Θᵀ read row by row. In that layout the
per-example loss gradient is the Kronecker product g_i = (p_i − e_{y_i}) ⊗ x̃_i.

The fit runs L-BFGS to a loose tolerance, then Newton steps whose direction is solved by conjugate
gradients on exact Hessian-vector products (never forming H), until ‖∇J(Θ̂)‖₂ ≤ ``gradient_tolerance``
(default 1e-8). If it cannot get there, :class:`~relabel.errors.ConvergenceError` is raised: influence
at a non-optimum is meaningless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import log_softmax

from relabel.errors import ConvergenceError, InputError


def with_bias_column(X: np.ndarray) -> np.ndarray:
    """X̃ = [X, 1]: the (n, d+1) float64 design matrix whose last column multiplies the bias."""
    X = np.asarray(X, dtype=np.float64)
    return np.hstack([X, np.ones((X.shape[0], 1), dtype=np.float64)])


def softmax_probabilities(X_tilde: np.ndarray, Theta: np.ndarray) -> np.ndarray:
    """p_i = softmax(x̃_iᵀ Θ), shape (n, K), computed stably in float64."""
    logits = X_tilde @ Theta
    return np.exp(log_softmax(logits, axis=1))


@dataclass
class LogisticFit:
    """A fitted model: Θ̂ and what the fit reached.

    Fields: ``Theta`` (d+1, K) float64 with the bias in the last row; ``l2`` (λ); ``gradient_norm``
    (‖∇J(Θ̂)‖₂, dimensionless, float64); ``objective`` (J(Θ̂), nats); ``newton_steps`` and
    ``lbfgs_iterations`` (work done).
    """

    Theta: np.ndarray
    l2: float
    gradient_norm: float
    objective: float
    lbfgs_iterations: int
    newton_steps: int

    @property
    def n_classes(self) -> int:
        return self.Theta.shape[1]

    @property
    def n_parameters(self) -> int:
        return self.Theta.size

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, K)."""
        return softmax_probabilities(with_bias_column(X), self.Theta)


class LogisticObjective:
    """J(Θ), its gradient and exact Hessian-vector products for fixed data (X̃, y) and λ."""

    def __init__(self, X_tilde: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> None:
        self.X_tilde = X_tilde
        self.y = y
        self.n_classes = n_classes
        self.l2 = float(l2)
        self.n = X_tilde.shape[0]
        self.width = X_tilde.shape[1]
        self.one_hot = np.zeros((self.n, n_classes))
        self.one_hot[np.arange(self.n), y] = 1.0

    def unflatten(self, theta: np.ndarray) -> np.ndarray:
        """Θ (d+1, K) from the class-major flat vector θ."""
        return theta.reshape(self.n_classes, -1).T

    @staticmethod
    def flatten(Theta: np.ndarray) -> np.ndarray:
        """Class-major flat vector θ from Θ (d+1, K)."""
        return np.ascontiguousarray(Theta.T).ravel()

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(J(θ), ∇J(θ)) with ∇J = (1/n) X̃ᵀ(P − Y) + λΘ, flattened class-major."""
        Theta = self.unflatten(theta)
        log_p = log_softmax(self.X_tilde @ Theta, axis=1)
        loss = -np.mean(log_p[np.arange(self.n), self.y])
        value = loss + 0.5 * self.l2 * float(theta @ theta)
        residual = np.exp(log_p) - self.one_hot
        gradient = (self.X_tilde.T @ residual) / self.n + self.l2 * Theta
        return value, self.flatten(gradient)

    def hessian_vector_product_operator(self, theta: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """v ↦ H v at θ, exact: H v = (1/n) X̃ᵀ[P∘A − P∘(rowsum(P∘A))] + λ V with A = X̃ V."""
        P = softmax_probabilities(self.X_tilde, self.unflatten(theta))

        def hessian_vector_product(v: np.ndarray) -> np.ndarray:
            V = self.unflatten(v)
            A = self.X_tilde @ V
            PA = P * A
            curvature = PA - P * PA.sum(axis=1, keepdims=True)
            return self.flatten(self.X_tilde.T @ curvature / self.n + self.l2 * V)

        return hessian_vector_product


def _conjugate_gradient(
    apply_matrix: Callable[[np.ndarray], np.ndarray], b: np.ndarray, relative_tolerance: float, max_steps: int
) -> np.ndarray:
    """Solve A x = b for symmetric positive definite A given only x ↦ A x."""
    x = np.zeros_like(b)
    r = b.copy()
    d = r.copy()
    rr = float(r @ r)
    target = (relative_tolerance * np.sqrt(float(b @ b))) ** 2
    for _ in range(max_steps):
        if rr <= target:
            break
        Ad = apply_matrix(d)
        step = rr / float(d @ Ad)
        x += step * d
        r -= step * Ad
        rr_new = float(r @ r)
        d = r + (rr_new / rr) * d
        rr = rr_new
    return x


def validate_training_data(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and finiteness; returns (X float64 2-D, y int64 1-D)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2:
        raise InputError(f"X must be a 2-D array (n items × d features); got shape {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise InputError(
            f"y must have one label per row of X: X has {X.shape[0]} rows, y has shape {y.shape}"
        )
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        row, column = bad[0]
        raise InputError(
            f"X has a non-finite value (NaN or inf) at row {row}, feature {column}: clean or impute it first"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError("y must hold integer class indices 0..K-1 (map labels to indices first)")
    return X, y.astype(np.int64)


def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int | None = None,
    *,
    l2: float = 1e-3,
    gradient_tolerance: float = 1e-8,
    max_lbfgs_iterations: int = 5000,
    max_newton_steps: int = 30,
    initial_Theta: np.ndarray | None = None,
) -> LogisticFit:
    """Fit Θ̂ = argmin J(Θ) (see the module docstring) until ‖∇J(Θ̂)‖₂ ≤ ``gradient_tolerance``.

    X: (n, d) features; y: (n,) integer classes in 0..K-1; λ = ``l2`` > 0 (per-parameter L2 weight,
    applied to the mean loss). Raises ConvergenceError when the tolerance is not reached.
    """
    X, y = validate_training_data(X, y)
    if l2 <= 0:
        raise InputError(f"l2 must be > 0 (it makes the Hessian positive definite); got {l2}")
    n_classes = int(n_classes if n_classes is not None else y.max() + 1)
    if y.min() < 0 or y.max() >= n_classes:
        raise InputError(f"labels must lie in 0..{n_classes - 1}; got range {y.min()}..{y.max()}")
    objective = LogisticObjective(with_bias_column(X), y, n_classes, l2)
    return minimize_objective(
        objective,
        initial_Theta,
        gradient_tolerance=gradient_tolerance,
        max_lbfgs_iterations=max_lbfgs_iterations,
        max_newton_steps=max_newton_steps,
    )


def minimize_objective(
    objective: LogisticObjective,
    initial_Theta: np.ndarray | None = None,
    *,
    gradient_tolerance: float = 1e-8,
    max_lbfgs_iterations: int = 5000,
    max_newton_steps: int = 30,
) -> LogisticFit:
    """Θ̂ = argmin J for any objective with LogisticObjective's interface (``value_and_gradient``,
    ``hessian_vector_product_operator``, ``flatten``/``unflatten``, ``n_classes``, ``l2``, ``width``):
    L-BFGS to a loose tolerance, then Newton–CG steps until ‖∇J(Θ̂)‖₂ ≤ ``gradient_tolerance``."""
    n_classes = objective.n_classes
    theta0 = (
        objective.flatten(initial_Theta)
        if initial_Theta is not None
        else np.zeros(n_classes * objective.width)
    )
    lbfgs = optimize.minimize(
        objective.value_and_gradient,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_lbfgs_iterations, "gtol": 1e-7, "ftol": 1e-15, "maxcor": 20},
    )
    theta = lbfgs.x
    value, gradient = objective.value_and_gradient(theta)
    newton_steps = 0
    while np.linalg.norm(gradient) > gradient_tolerance and newton_steps < max_newton_steps:
        hvp = objective.hessian_vector_product_operator(theta)
        direction = _conjugate_gradient(hvp, -gradient, relative_tolerance=1e-10, max_steps=2000)
        # Backtracking (Armijo) keeps the step safe far from the optimum; near it the full step is taken.
        step = 1.0
        while step > 1e-8:
            candidate = theta + step * direction
            candidate_value, candidate_gradient = objective.value_and_gradient(candidate)
            if candidate_value <= value + 1e-4 * step * float(gradient @ direction) + 1e-15 * abs(value):
                break
            step *= 0.5
        theta, value, gradient = candidate, candidate_value, candidate_gradient
        newton_steps += 1
    gradient_norm = float(np.linalg.norm(gradient))
    if not np.isfinite(gradient_norm) or gradient_norm > gradient_tolerance:
        raise ConvergenceError(
            f"logistic fit stopped at gradient norm {gradient_norm:.3g} > {gradient_tolerance:g} after "
            f"{lbfgs.nit} L-BFGS iterations and {newton_steps} Newton steps; influence scores at a "
            "non-optimum are meaningless. Standardise the features or raise l2."
        )
    return LogisticFit(
        Theta=objective.unflatten(theta).copy(),
        l2=objective.l2,
        gradient_norm=gradient_norm,
        objective=float(value),
        lbfgs_iterations=int(lbfgs.nit),
        newton_steps=newton_steps,
    )
