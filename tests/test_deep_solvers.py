"""Direct, CG and LiSSA solvers and solver='auto' against exact references (issue 11).

References are explicit: (H + δI) from torch.autograd.functional.hessian and a dense solve, or the
logistic model's Cholesky solution. No timing assertions here (timings live in scripts/).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits, load_wine
from sklearn.preprocessing import StandardScaler

import relabel
from relabel.errors import ConvergenceError, InputError
from relabel.influence.auto import SolverChoice, build_solver, choose_solver
from relabel.influence.cg import CgConfig, CgSolver
from relabel.influence.direct import DirectSolver
from relabel.influence.lissa import LissaConfig, LissaSolver
from relabel.influence.torch_objective import TorchObjective
from relabel.torch_models import build_mlp, train_for_influence
from tests.test_lissa import explicit_damped_hessian, small_trained_mlp


@pytest.fixture(scope="module")
def mlp_problem():
    """A trained 64-12-10 tanh MLP on 150 digits (p = 922), its objective and explicit references."""
    model, X, y = small_trained_mlp()
    objective = TorchObjective(model, X, y, weight_decay=1e-2)
    damping = 0.05
    damped = explicit_damped_hessian(objective, damping)
    gradients = objective.per_example_gradients(np.arange(len(y)))
    solved = torch.linalg.solve(damped, gradients.T).T
    reference = (gradients * solved).sum(1).numpy()
    return objective, damping, gradients, solved, reference


def test_direct_solver_matches_explicit_inverse(mlp_problem) -> None:
    objective, damping, gradients, solved, reference = mlp_problem
    solver = DirectSolver(objective, damping=damping)
    np.testing.assert_allclose(solver.self_influence(), reference, rtol=1e-8)
    np.testing.assert_allclose(
        solver.inverse_hvp(gradients[:7]).numpy(), solved[:7].numpy(), rtol=1e-8, atol=1e-12
    )
    assert solver.diagnostics.damping == damping
    assert solver.diagnostics.asymmetry < 1e-10
    assert "direct" in solver.describe()


def test_direct_solver_default_damping_and_refusals(mlp_problem) -> None:
    objective, *_ = mlp_problem
    solver = DirectSolver(objective)
    top = float(torch.linalg.eigvalsh(explicit_damped_hessian(objective, 0.0)).max())
    assert solver.diagnostics.largest_eigenvalue == pytest.approx(top, rel=1e-6)
    assert solver.diagnostics.damping == pytest.approx(0.01 * top, rel=1e-6)
    with pytest.raises(InputError, match="memory budget"):
        DirectSolver(objective, memory_budget_bytes=1000)
    with pytest.raises(ConvergenceError, match="damping"):
        DirectSolver(objective, damping=-1e3)


def test_cg_matches_explicit_inverse_within_its_bound(mlp_problem) -> None:
    objective, damping, _, _, reference = mlp_problem
    solver = CgSolver(objective, CgConfig(block_size=64), damping=damping)
    scores = solver.self_influence()
    relative_error = np.abs(scores - reference) / reference
    tolerance = solver.config.tolerance
    assert tolerance == 1e-2 and solver.diagnostics.max_error_bound <= tolerance
    # the bound is rigorous for H ⪰ 0: every item, not only the median, is within it
    assert np.median(relative_error) <= tolerance and relative_error.max() <= tolerance
    assert np.all(scores <= reference * (1 + 1e-6))  # CG's gᵀx_k approaches gᵀx* from below
    assert spearmanr(scores, reference).statistic >= 0.999
    tight = CgSolver(objective, CgConfig(tolerance=1e-8, hvp_dtype="float64"), damping=damping)
    np.testing.assert_allclose(tight.self_influence(), reference, rtol=1e-7)


def test_new_lissa_matches_explicit_inverse_within_its_bound(mlp_problem) -> None:
    objective, damping, _, _, reference = mlp_problem
    solver = LissaSolver(objective, LissaConfig(block_size=64), damping=damping)
    scores = solver.self_influence()
    relative_error = np.abs(scores - reference) / reference
    assert solver.config.hvp_dtype == "float32" and solver.diagnostics.converged
    assert solver.diagnostics.max_error_bound <= solver.config.tolerance == 1e-2
    assert np.median(relative_error) <= 1e-2
    assert spearmanr(scores, reference).statistic >= 0.999


@pytest.mark.parametrize("solver", ["cg", "lissa", "direct"])
def test_torch_solvers_match_exact_logistic(solver: str) -> None:
    X, y = load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    exact = relabel.rank(X, y, methods=("self_influence",), l2=1e-2)["self_influence"].to_numpy()
    scorer = relabel.SuspicionScorer(l2=1e-2, solver=solver).fit(X, y)
    scores = scorer.scores(("self_influence",))["self_influence"].to_numpy()
    relative_error = np.abs(scores - exact) / exact
    bound = 1e-6 if solver == "direct" else 1e-2  # direct: float64 rounding; iterative: stated bound
    assert scorer.solver_name == solver and scorer.solver_choice.name == solver
    assert np.median(relative_error) <= bound
    assert spearmanr(scores, exact).statistic >= 0.999


def test_auto_picks_direct_for_small_p_and_iterative_above_the_budget(mlp_problem) -> None:
    objective, *_ = mlp_problem
    choice, spectrum = choose_solver(objective)
    assert choice.name == "direct" and choice.estimated_bytes == 8 * objective.n_parameters**2
    line = choice.describe()
    assert "\n" not in line and "direct" in line and "cg" in line
    lowered, _ = choose_solver(objective, memory_budget_bytes=10**6, spectrum=spectrum)
    assert lowered.name == "cg" and "budget" in lowered.reason
    solver, forced = build_solver(objective, "lissa", damping=0.05)
    assert isinstance(solver, LissaSolver) and forced.name == "lissa" and forced.reason == "requested"
    solver, small_budget = build_solver(objective, memory_budget_bytes=10**6)
    assert isinstance(solver, CgSolver) and isinstance(small_budget, SolverChoice)


def test_training_reaches_the_reported_gradient_norm() -> None:
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X[:300] / 16.0), torch.tensor(y[:300])
    torch.manual_seed(0)
    model = build_mlp(64, 10, 16).double()
    report = train_for_influence(model, X, y, weight_decay=1e-2, gradient_tolerance=1e-6, adam_steps=200)
    assert report.adam_steps == 200 and report.lbfgs_iterations > 0
    measured = TorchObjective(model, X, y, weight_decay=1e-2).objective_gradient_norm()
    assert measured == pytest.approx(report.gradient_norm, rel=1e-6)
    assert measured <= 1e-6 < report.adam_gradient_norm
    torch.manual_seed(0)
    with pytest.raises(ConvergenceError, match="max_training_iterations"):
        train_for_influence(
            build_mlp(64, 10, 16).double(),
            X,
            y,
            weight_decay=1e-2,
            adam_steps=5,
            max_iterations=20,
            gradient_tolerance=1e-12,
        )


def test_default_deep_path_on_digits_mlp_finishes_with_direct_solver() -> None:
    X, y = load_digits(return_X_y=True)
    scorer = relabel.SuspicionScorer(model="mlp", hidden_units=32, l2=1e-3).fit(X / 16.0, y)
    ranking = scorer.scores(("self_influence", "loss"))
    assert scorer.fit_summary.n_parameters == 64 * 32 + 32 + 32 * 10 + 10
    assert scorer.fit_summary.gradient_norm <= 1e-4
    assert scorer.solver_name == "direct" and scorer.solver_choice.name == "direct"
    assert (ranking["self_influence"] > 0).all() and len(ranking) == len(y)
    assert "direct" in scorer.solver.describe() and "\n" not in scorer.solver_choice.describe()


def test_auto_direct_uses_float32_columns_only_when_accurate(mlp_problem) -> None:
    objective, damping, _, _, reference = mlp_problem
    solver, choice = build_solver(objective, damping=damping)
    assert choice.name == "direct" and solver.diagnostics.hvp_dtype == "float32"
    assert solver.diagnostics.relative_error_bound <= 1e-3
    relative_error = np.abs(solver.self_influence() - reference) / reference
    assert relative_error.max() <= solver.diagnostics.relative_error_bound
    explicit, _ = build_solver(objective, "direct", damping=damping)
    assert explicit.diagnostics.hvp_dtype == "float64"
