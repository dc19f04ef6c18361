"""LiSSA against exact answers: the logistic model's Cholesky solution and explicit (H + δI)⁻¹."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.preprocessing import StandardScaler

import relabel
from relabel.errors import ConvergenceError
from relabel.influence.lissa import LissaConfig, LissaSolver
from relabel.influence.torch_objective import TorchObjective
from relabel.torch_models import build_mlp, train_to_stationary_point


@pytest.mark.parametrize("loader", [load_wine, load_breast_cancer])
def test_lissa_matches_exact_on_logistic_model(loader) -> None:
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:300]
    y = y[:300]
    exact = relabel.rank(X, y, methods=("self_influence",), l2=1e-2)["self_influence"].to_numpy()
    lissa = relabel.rank(X, y, methods=("self_influence",), l2=1e-2, solver="lissa")[
        "self_influence"
    ].to_numpy()
    relative_error = np.abs(lissa - exact) / exact
    assert spearmanr(lissa, exact).statistic >= 0.99
    assert np.median(relative_error) <= 0.05


def small_trained_mlp(n_items: int = 150, hidden_units: int = 12, weight_decay: float = 1e-2):
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[:n_items] / 16.0)
    y = torch.tensor(y[:n_items])
    torch.manual_seed(0)
    model = build_mlp(X.shape[1], 10, hidden_units).double()
    train_to_stationary_point(model, X, y, weight_decay=weight_decay, gradient_tolerance=1e-7)
    return model, X, y


def explicit_damped_hessian(objective: TorchObjective, damping: float) -> torch.Tensor:
    """∇²J(θ̂) + δI from torch.autograd.functional.hessian on the flat parameter vector."""

    def objective_value(theta: torch.Tensor) -> torch.Tensor:
        penalty = 0.5 * objective.weight_decay * (theta * theta).sum()
        return objective.mean_loss(theta, objective.X, objective.y) + penalty

    hessian = torch.autograd.functional.hessian(objective_value, objective.theta)
    return hessian + damping * torch.eye(len(objective.theta), dtype=hessian.dtype)


def test_lissa_matches_explicit_inverse_on_mlp() -> None:
    model, X, y = small_trained_mlp()
    objective = TorchObjective(model, X, y, weight_decay=1e-2)
    assert objective.n_parameters > 900  # 64·12 + 12 + 12·10 + 10
    solver = LissaSolver(objective, LissaConfig(block_size=64))
    damped = explicit_damped_hessian(objective, solver.diagnostics.damping)
    gradients = objective.per_example_gradients(np.arange(len(y)))
    reference = (gradients * torch.linalg.solve(damped, gradients.T).T).sum(1).numpy()
    scores = solver.self_influence()
    assert solver.diagnostics.converged
    assert solver.diagnostics.largest_eigenvalue == pytest.approx(
        float(torch.linalg.eigvalsh(damped - solver.diagnostics.damping * torch.eye(len(damped))).max()),
        rel=1e-2,
    )
    relative_error = np.abs(scores - reference) / reference
    # the default tolerance is a 1e-2 relative error bound (it was a 1e-6 relative change before issue 11)
    assert solver.diagnostics.max_error_bound <= solver.config.tolerance == 1e-2
    assert np.median(relative_error) <= 1e-2
    assert relative_error.max() <= 1e-2
    assert spearmanr(scores, reference).statistic >= 0.999


def test_lissa_last_layer_subset_matches_explicit_block() -> None:
    model, X, y = small_trained_mlp(n_items=100, hidden_units=8)
    objective = TorchObjective(model, X, y, weight_decay=1e-2, parameter_names=("2",))
    assert objective.parameter_names == ["2.weight", "2.bias"]
    # elementwise 1e-3 agreement needs a tighter error bound than the 1e-2 default (changed in issue 11)
    solver = LissaSolver(objective, LissaConfig(tolerance=1e-5), damping=1e-3)
    damped = explicit_damped_hessian(objective, 1e-3)
    vectors = objective.per_example_gradients(np.arange(5))
    np.testing.assert_allclose(
        solver.inverse_hvp(vectors).numpy(),
        torch.linalg.solve(damped, vectors.T).T.numpy(),
        rtol=1e-3,
        atol=1e-6,
    )


@pytest.mark.parametrize(("hvp_dtype", "rtol"), [("float64", 1e-9), ("float32", 1e-5)])
def test_results_do_not_depend_on_block_size(hvp_dtype: str, rtol: float) -> None:
    """Block size changes only the order of sums, so results agree to the rounding of the products:
    float64 products to 1e-9 (κ·2⁻⁵² ≪ 1e-9), float32 products to 1e-5 (their sums move by ~1e-7
    relative with block size, thread count and CPU kernel; 1e-5 leaves a 100× margin and still fails
    on any real dependence on the block, which would show at the 1e-2 solver tolerance)."""
    model, X, y = small_trained_mlp(n_items=40, hidden_units=6)
    objective = TorchObjective(model, X, y, weight_decay=1e-2)
    configs = [LissaConfig(block_size=size, hvp_dtype=hvp_dtype) for size in (1, 16, 200)]
    results = [LissaSolver(objective, config, damping=0.5).self_influence() for config in configs]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=rtol)


def test_minibatch_lissa_with_repeats_is_close_to_exact() -> None:
    X, y = load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    exact = relabel.rank(X, y, methods=("self_influence",), l2=0.2)["self_influence"].to_numpy()
    config = LissaConfig(
        batch_size=64, repeats=2, tolerance=1e-3, max_iterations=150, on_max_iterations="warn"
    )
    with pytest.warns(RuntimeWarning, match="max_iterations"):
        stochastic = relabel.rank(X, y, methods=("self_influence",), l2=0.2, solver="lissa", lissa=config)
    assert spearmanr(stochastic["self_influence"], exact).statistic >= 0.95


def test_bad_settings_raise_with_the_setting_to_change() -> None:
    model, X, y = small_trained_mlp(n_items=60, hidden_units=4)
    objective = TorchObjective(model, X, y, weight_decay=1e-2)
    with pytest.raises(ConvergenceError, match="scale"):
        LissaSolver(objective, LissaConfig(scale=1e-6))
    with pytest.raises(ConvergenceError, match="damping"):
        LissaSolver(objective, damping=-1e3)
    solver = LissaSolver(objective, LissaConfig(max_iterations=3, tolerance=1e-12))
    with pytest.raises(ConvergenceError, match="max_iterations"):
        solver.self_influence()


def test_cnn_and_user_module_rank_every_item() -> None:
    X, y = load_digits(return_X_y=True)
    images = (X[:60] / 16.0).reshape(-1, 1, 8, 8)
    fast = 0.3  # δ
    ranking = relabel.rank(
        images, y[:60], model="cnn", methods=("self_influence", "loss"), l2=5e-2, damping=fast
    )
    assert len(ranking) == 60 and (ranking["self_influence"] > 0).all()
    assert sorted(ranking["rank_self_influence"]) == list(range(1, 61))
    module = torch.nn.Sequential(torch.nn.Linear(64, 5), torch.nn.Tanh(), torch.nn.Linear(5, 10))
    custom = relabel.rank(
        X[:60] / 16.0, y[:60], model=module, methods=("self_influence",), l2=5e-2, damping=fast
    )
    assert (custom["self_influence"] > 0).all()
