"""Models and methods are registry entries: a new model kind is one class plus one register line."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.preprocessing import StandardScaler

import relabel
from relabel.errors import InputError
from relabel.methods import METHODS, SCORE_METHODS, cross_entropy_loss
from relabel.models import MODEL_KINDS, ModelSettings, TorchModelKind, describe_models, register
from relabel.settings import AuditSettings


class TinyLinear(TorchModelKind):
    """A test-only kind: Linear(d, K), i.e. logistic regression trained by the torch trainer."""

    name = "tiny_linear"
    description = "test-only linear model"
    inputs = "features"
    convex = True

    def build(self, input_shape: tuple[int, ...], n_classes: int, settings: ModelSettings) -> torch.nn.Module:
        return torch.nn.Linear(int(np.prod(input_shape)), n_classes)


@pytest.fixture
def tiny_kind() -> Iterator[TinyLinear]:
    kind = register(TinyLinear())  # the one registry line
    yield kind
    MODEL_KINDS.pop(kind.name)


def wine() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_wine(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_a_registered_kind_is_fitted_and_scored_like_the_built_in_logistic(tiny_kind: TinyLinear) -> None:
    X, y = wine()
    assert "tiny_linear" in describe_models()
    exact = relabel.rank(X, y, methods=("self_influence", "loss"), l2=1e-2)
    scorer = relabel.SuspicionScorer(
        "tiny_linear", l2=1e-2, solver="direct", gradient_tolerance=1e-7, max_training_seconds=20.0
    )
    tiny = scorer.fit(X, y).scores(("self_influence", "loss"))
    # the same strictly convex J (λ = 1e-2), so δ = 0 and the same optimum up to ‖θ − θ*‖ ≤ ‖∇J‖/λ ≤ 1e-5:
    # the direct solver's float64 Hessian against the closed-form one agree to ~1e-5 relative
    assert scorer.convex_objective() and scorer.solver.diagnostics.damping == 0.0
    assert scorer.fit_summary.model == "tiny_linear" and scorer.fit_summary.gradient_norm <= 1e-7
    np.testing.assert_allclose(tiny["self_influence"], exact["self_influence"], rtol=1e-4)
    np.testing.assert_allclose(tiny["loss"], exact["loss"], rtol=1e-4, atol=1e-6)


def test_unregistered_names_and_unsupported_solvers_are_clear_errors() -> None:
    with pytest.raises(InputError, match="unknown model 'tiny_linear'"):
        relabel.SuspicionScorer("tiny_linear")
    with pytest.raises(InputError, match="model must be one of"):
        AuditSettings(model="tiny_linear")
    with pytest.raises(InputError, match="solver='exact' is not available for model='mlp'"):
        relabel.SuspicionScorer("mlp", solver="exact")
    with pytest.raises(InputError, match="unknown scorer option"):
        relabel.SuspicionScorer(l3=1.0)


def test_method_entries_score_the_fitted_scorer() -> None:
    X, y = wine()
    scorer = relabel.SuspicionScorer(l2=1e-2).fit(X, y)
    frame = scorer.scores(SCORE_METHODS)
    for name in SCORE_METHODS:
        np.testing.assert_array_equal(frame[name].to_numpy(), METHODS[name].score(scorer))
    np.testing.assert_allclose(frame["loss"], cross_entropy_loss(scorer.probabilities, scorer.y), rtol=1e-12)
    assert not METHODS["confident_learning"].in_scorer and "confident_learning" not in SCORE_METHODS


def test_solver_settings_are_apart_from_the_model_settings() -> None:
    X, y = wine()
    model, influence = (
        relabel.ModelSettings(l2=1e-2, seed=3),
        relabel.InfluenceSettings(solver="cg", damping=0.5),
    )
    scorer = relabel.SuspicionScorer("logistic", model_settings=model, influence=influence).fit(X, y)
    scorer.self_influence()
    assert scorer.solver_name == "cg" and scorer.solver.diagnostics.damping == 0.5
    assert not hasattr(relabel.LissaConfig(), "damping") and not hasattr(relabel.CgConfig(), "seed")
