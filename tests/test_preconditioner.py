"""The EK-FAC preconditioner and preconditioned LiSSA against explicit Hessians (issue 11).

References: the Gauss–Newton matrix built from autograd Jacobians, the autograd Hessian and dense
solves. The claims checked: P is symmetric positive definite with consistent P, P⁻¹ and P^{-1/2}; its
eigenvalues in the Kronecker eigenbasis are the exact Gauss–Newton diagonal there; preconditioning
cuts the condition number and the iterations; the variational self-influence never exceeds the truth.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.preprocessing import StandardScaler

from relabel.influence.lissa import LissaConfig, LissaSolver
from relabel.influence.preconditioner import KroneckerPreconditioner
from relabel.influence.torch_objective import TorchObjective
from relabel.torch_models import build_logistic, train_to_stationary_point
from tests.test_lissa import explicit_damped_hessian, small_trained_mlp


def dense(operator, p: int) -> torch.Tensor:
    """The p × p matrix of a row-wise linear map (rows of the identity through it)."""
    return operator(torch.eye(p, dtype=torch.float64))


def gauss_newton(objective: TorchObjective) -> torch.Tensor:
    """(1/n) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i from autograd Jacobians of the logits."""
    total = torch.zeros((objective.n_parameters, objective.n_parameters), dtype=torch.float64)
    for x in objective.X:
        jacobian = torch.autograd.functional.jacobian(
            lambda theta, x=x: objective.outputs(theta, x[None, :])[0], objective.theta
        )
        p = torch.softmax(objective.outputs(objective.theta, x[None, :])[0], dim=0).detach()
        total += jacobian.T @ (torch.diag(p) - torch.outer(p, p)) @ jacobian
    return total / objective.n_items


@pytest.fixture(scope="module")
def logistic_objective() -> TorchObjective:
    X, y = load_wine(return_X_y=True)
    X = torch.tensor(StandardScaler().fit_transform(X))
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = build_logistic(X.shape[1], 3).double()
    train_to_stationary_point(model, X, y, weight_decay=1e-2, gradient_tolerance=1e-7)
    return TorchObjective(model, X, y, weight_decay=1e-2)


def test_preconditioner_is_symmetric_positive_definite_and_consistent(logistic_objective) -> None:
    p = logistic_objective.n_parameters
    preconditioner = KroneckerPreconditioner(logistic_objective, damping=0.0)
    inverse = dense(preconditioner.apply_inverse, p)
    forward = dense(preconditioner.apply, p)
    split = dense(preconditioner.apply_inverse_sqrt, p)
    np.testing.assert_allclose(inverse, inverse.T, atol=1e-12)
    np.testing.assert_allclose(forward @ inverse, torch.eye(p, dtype=torch.float64), atol=1e-9)
    np.testing.assert_allclose(split @ split, inverse, rtol=1e-9, atol=1e-12)
    eigenvalues = torch.linalg.eigvalsh(forward)
    assert eigenvalues.min() >= preconditioner.smallest_eigenvalue * (1 - 1e-9) > 0
    assert eigenvalues.max() == pytest.approx(preconditioner.largest_eigenvalue, rel=1e-9)
    assert preconditioner.covered_fraction == 1.0


def test_eigenvalues_are_the_exact_gauss_newton_diagonal_in_the_kronecker_basis(logistic_objective) -> None:
    """EK-FAC's defining property, checked against Gauss–Newton from autograd Jacobians."""
    objective = logistic_objective
    preconditioner = KroneckerPreconditioner(objective, damping=0.0)
    (block,) = preconditioner.blocks
    basis = torch.kron(block.output_basis, block.input_basis)  # columns u_k ⊗ v_l over [W | b]
    n_out, n_in = block.n_out, block.n_in
    # θ = [W (out × in, row-major), b]; the block works on [W | b] (out × (in + 1), row-major)
    order = [o * n_in + i if i < n_in else n_out * n_in + o for o in range(n_out) for i in range(n_in + 1)]
    curvature = gauss_newton(objective)[np.ix_(order, order)]
    exact_diagonal = torch.diagonal(basis.T @ curvature @ basis)
    claimed = 1.0 / block.inverse_eigenvalues.reshape(-1) - objective.weight_decay
    np.testing.assert_allclose(claimed, exact_diagonal, rtol=1e-8, atol=1e-12)
    # and for this linear model Gauss–Newton + λI is the Hessian itself
    hessian = explicit_damped_hessian(objective, 0.0)
    np.testing.assert_allclose(
        gauss_newton(objective) + objective.weight_decay * torch.eye(objective.n_parameters),
        hessian,
        atol=1e-10,
    )


def test_preconditioning_cuts_condition_number_and_iterations() -> None:
    model, X, y = small_trained_mlp()
    objective = TorchObjective(model, X, y, weight_decay=1e-2)
    damping = 0.05
    damped = explicit_damped_hessian(objective, damping)
    preconditioner = KroneckerPreconditioner(objective, damping)
    split = dense(preconditioner.apply_inverse_sqrt, objective.n_parameters)
    plain = torch.linalg.eigvalsh(damped)
    scaled = torch.linalg.eigvalsh(split @ damped @ split)
    assert scaled[-1] / scaled[0] < 0.5 * plain[-1] / plain[0]
    gradients = objective.per_example_gradients(np.arange(len(y)))
    reference = (gradients * torch.linalg.solve(damped, gradients.T).T).sum(1).numpy()
    iterations = {}
    for name in ("ekfac", "none"):
        solver = LissaSolver(objective, LissaConfig(preconditioner=name), damping=damping)
        scores = solver.self_influence()
        assert solver.diagnostics.converged
        relative_error = np.abs(scores - reference) / reference
        assert relative_error.max() <= solver.config.tolerance
        iterations[name] = solver.diagnostics.iterations
    assert iterations["ekfac"] < 0.5 * iterations["none"]


def test_variational_estimate_never_exceeds_the_true_score(logistic_objective) -> None:
    """q = 2gᵀx − xᵀAx ≤ gᵀA⁻¹g for any x when A ≻ 0; stopped early it is a lower estimate."""
    objective = logistic_objective
    damped = explicit_damped_hessian(objective, 0.0)
    gradients = objective.per_example_gradients(np.arange(objective.n_items))
    reference = (gradients * torch.linalg.solve(damped, gradients.T).T).sum(1).numpy()
    solver = LissaSolver(objective, LissaConfig(tolerance=0.3, hvp_dtype="float64"), convex=True)
    scores = solver.self_influence()
    assert (scores <= reference * (1 + 1e-10)).all()
    assert (np.abs(scores - reference) / reference).max() <= 0.3


def test_preconditioned_cg_stays_within_its_bound_in_fewer_iterations() -> None:
    from relabel.influence.cg import CgConfig, CgSolver

    model, X, y = small_trained_mlp()
    objective = TorchObjective(model, X, y, weight_decay=1e-2)
    damping = 0.05
    damped = explicit_damped_hessian(objective, damping)
    gradients = objective.per_example_gradients(np.arange(len(y)))
    reference = (gradients * torch.linalg.solve(damped, gradients.T).T).sum(1).numpy()
    iterations = {}
    for name in ("ekfac", "none"):
        solver = CgSolver(
            objective,
            CgConfig(preconditioner=name, tolerance=1e-4, hvp_dtype="float64"),
            damping=damping,
        )
        scores = solver.self_influence()
        assert (np.abs(scores - reference) / reference).max() <= 1e-4
        assert (scores <= reference * (1 + 1e-6)).all()  # Galerkin: never above the truth
        iterations[name] = np.mean(solver.diagnostics.iteration_counts)
    assert iterations["ekfac"] < 0.75 * iterations["none"]
