"""Influence over the last layer (issue 11): the scope choice, the head-only polish, and the scores
against two independent references — the exact logistic solver on the body's features, and the autograd
Hessian block of the head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import relabel
from relabel.errors import InputError
from relabel.influence.scope import choose_scope, last_layer_names
from relabel.torch_models import build_cnn, build_mlp, is_final_linear, train_for_influence


def small_images(n: int = 120):
    X, y = load_digits(return_X_y=True)
    return (X[:n] / 16.0).reshape(-1, 1, 8, 8), y[:n]


def test_last_layer_names_and_final_linear_detection() -> None:
    cnn = build_cnn((1, 8, 8), 10).double()
    assert last_layer_names(cnn) == ("7.weight", "7.bias")
    images = torch.zeros((4, 1, 8, 8), dtype=torch.float64)
    assert is_final_linear(cnn, ("7.weight", "7.bias"), images)
    assert not is_final_linear(cnn, ("7.weight",), images)  # not all of the module's parameters
    # a head followed by another step is not "final": its cached inputs would not give the outputs
    followed = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).double()
    assert not is_final_linear(followed, ("0.weight", "0.bias"), torch.ones((2, 4), dtype=torch.float64))


def test_choose_scope_follows_the_budget_and_the_request() -> None:
    images, y = small_images(40)
    X = torch.tensor(images)
    targets = torch.tensor(y)
    model = build_cnn((1, 8, 8), 10).double()
    total = sum(p.numel() for p in model.parameters())
    tight = choose_scope(model, X, targets, weight_decay=1e-2, budget_seconds=0.0)
    assert tight.kind == "last" and tight.names == ("7.weight", "7.bias")
    assert tight.n_parameters == 16 * 2 * 2 * 10 + 10 and tight.total_parameters == total
    assert tight.full_estimate_seconds > 0 and "budget" in tight.describe()
    loose = choose_scope(model, X, targets, weight_decay=1e-2, budget_seconds=1e9)
    assert loose.kind == "all" and loose.names is None and loose.n_parameters == total
    assert choose_scope(model, X, targets, "all", weight_decay=1e-2, budget_seconds=0.0).kind == "all"
    assert choose_scope(model, X, targets, "last", weight_decay=1e-2, budget_seconds=1e9).kind == "last"
    single = torch.nn.Linear(64, 10).double()
    assert (
        choose_scope(single, X.reshape(40, -1), targets, weight_decay=1e-2, budget_seconds=0.0).kind == "all"
    )
    with pytest.raises(InputError, match="influence_parameters"):
        choose_scope(model, X, targets, "first", weight_decay=1e-2)
    with pytest.raises(InputError, match="influence_parameters"):
        relabel.SuspicionScorer(model="cnn", influence_parameters="middle")


def test_head_polish_reaches_a_stationary_point_of_the_head_only() -> None:
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[:200] / 16.0)
    y = torch.tensor(y[:200])
    torch.manual_seed(0)
    model = build_mlp(64, 10, 16).double()
    head = ("2.weight", "2.bias")
    report = train_for_influence(
        model, X, y, weight_decay=1e-2, gradient_tolerance=1e-8, adam_steps=100, polish_parameters=head
    )
    penalty = sum((p * p).sum() for p in model.parameters())
    objective = torch.nn.functional.cross_entropy(model(X), y) + 0.5 * 1e-2 * penalty
    head_gradient = torch.autograd.grad(objective, [model[2].weight, model[2].bias], retain_graph=True)
    body_gradient = torch.autograd.grad(objective, [model[0].weight, model[0].bias])
    head_norm = float(torch.sqrt(sum((g * g).sum() for g in head_gradient)))
    body_norm = float(torch.sqrt(sum((g * g).sum() for g in body_gradient)))
    assert head_norm <= 1e-8 and report.gradient_norm == pytest.approx(head_norm, abs=1e-9)
    assert body_norm > 100 * head_norm  # only the head was polished: the body stays at the Adam point
    assert all(p.requires_grad for p in model.parameters())  # freezing is undone


def test_last_layer_self_influence_equals_exact_logistic_on_the_body_features() -> None:
    """With the body fixed, the head is a multinomial logistic regression on the body's features: its
    self-influence must equal relabel's exact (Cholesky) logistic solver on those features."""
    images, y = small_images()
    scorer = relabel.SuspicionScorer(
        model="cnn", l2=5e-2, influence_parameters="last", gradient_tolerance=1e-7
    ).fit(images, y)
    assert scorer.parameter_scope.kind == "last" and scorer.convex_objective()
    assert scorer.fit_summary.gradient_over == "the last layer"
    scores = scorer.scores(("self_influence",))["self_influence"].to_numpy()
    body = torch.nn.Sequential(*list(scorer.module)[:-1])
    with torch.no_grad():
        features = body(torch.tensor(images)).numpy()
    exact = relabel.rank(features, y, methods=("self_influence",), l2=5e-2, gradient_tolerance=1e-10)
    np.testing.assert_allclose(scores, exact["self_influence"].to_numpy(), rtol=1e-4)
    assert scorer.solver.diagnostics.damping == 0.0  # convex head: no damping needed


def test_last_layer_self_influence_matches_the_autograd_hessian_block() -> None:
    """A non-final scope (the MLP's first layer, via InfluenceSettings.parameters) against autograd."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:80] / 16.0, y[:80]
    scorer = relabel.SuspicionScorer(
        model="mlp",
        hidden_units=6,
        l2=5e-2,
        parameters=("2",),
        damping=0.0,
        solver="direct",
    ).fit(X, y)
    objective = scorer.objective
    assert objective.parameter_names == ["2.weight", "2.bias"]

    def head_objective(theta: torch.Tensor) -> torch.Tensor:
        return objective.mean_loss(theta, objective.X, objective.y) + 0.025 * (theta * theta).sum()

    hessian = torch.autograd.functional.hessian(head_objective, objective.theta)
    gradients = objective.per_example_gradients(np.arange(len(y)))
    reference = (gradients * torch.linalg.solve(hessian, gradients.T).T).sum(1).numpy()
    np.testing.assert_allclose(scorer.self_influence(), reference, rtol=1e-8)
