"""Exact self-influence for the logistic model against brute force and leave-one-out retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import relabel
from relabel.errors import ConvergenceError, InputError
from relabel.influence.exact import ExactLogisticSolver, LogisticGradients, logistic_hessian
from relabel.logistic import fit_logistic
from tests.reference import brute_force_logistic_influence


def random_problem(n: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, n_classes, size=n)
    y[:n_classes] = np.arange(n_classes)
    return X, y


@pytest.mark.parametrize(("n_classes", "seed"), [(2, 0), (3, 1), (5, 2)])
def test_self_influence_equals_brute_force(n_classes: int, seed: int) -> None:
    X, y = random_problem(80, 5, n_classes, seed)
    fit = fit_logistic(X, y, n_classes, l2=1e-2)
    assert fit.gradient_norm <= 1e-8
    scores = ExactLogisticSolver(LogisticGradients(X, y, fit), chunk_size=13).self_influence()
    hessian, gradients = brute_force_logistic_influence(X, y, fit)
    reference = np.array([float(g @ torch.linalg.solve(hessian, g)) for g in gradients])
    assert np.all(scores > 0)
    np.testing.assert_allclose(scores, reference, rtol=1e-6)


def test_hessian_equals_autograd_hessian() -> None:
    X, y = random_problem(50, 4, 3, seed=3)
    fit = fit_logistic(X, y, 3, l2=0.1)
    gradients = LogisticGradients(X, y, fit)
    hessian = logistic_hessian(gradients.X_tilde, gradients.probabilities, fit.l2, row_chunk_size=7)
    reference, _ = brute_force_logistic_influence(X, y, fit)
    np.testing.assert_allclose(hessian, reference.numpy(), rtol=1e-10, atol=1e-12)


def test_results_do_not_depend_on_chunk_size() -> None:
    X, y = random_problem(200, 6, 4, seed=4)
    fit = fit_logistic(X, y, 4, l2=1e-3)
    gradients = LogisticGradients(X, y, fit)
    sizes = (1, 7, 64, 10_000)
    results = [ExactLogisticSolver(gradients, chunk_size=size).self_influence() for size in sizes]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-12)


def test_pairwise_influence_equals_brute_force() -> None:
    X, y = random_problem(60, 3, 3, seed=5)
    fit = fit_logistic(X, y, 3, l2=1e-2)
    solver = ExactLogisticSolver(LogisticGradients(X, y, fit), chunk_size=11)
    hessian, gradients = brute_force_logistic_influence(X, y, fit)
    item = 7
    solved = torch.linalg.solve(hessian, gradients[item])
    reference = np.array([float(g @ solved) for g in gradients])
    influence = solver.influence_on(solver.gradients.per_example_gradients(np.array([item]))[0])
    np.testing.assert_allclose(influence, reference, rtol=1e-6, atol=1e-12)


def _standardized(loader) -> tuple[np.ndarray, np.ndarray]:
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.mark.parametrize("loader", [load_breast_cancer, load_iris, load_wine])
def test_influence_predicts_leave_one_out_retraining(loader) -> None:
    """Predicted change of a test point's loss when removing training point j vs refitting without j.

    Removing z_j from J = (1/n)Σℓ_i + (λ/2)‖θ‖² is upweighting by ε = −1/n, so the predicted change is
    (1/n)·g_testᵀH⁻¹g_j. The refit keeps the regulariser's weight relative to the n-point objective
    (λ' = nλ/(n−1) for the mean over n−1 points), which is exactly that perturbation.
    """
    X, y = _standardized(loader)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    # λ = 0.05 on standardised features: strong enough that the quadratic model of J behind the
    # influence approximation holds for removing one of ~150 points (wine is nearly separable).
    n, n_classes, l2 = len(y_train), int(y.max()) + 1, 5e-2
    fit = fit_logistic(X_train, y_train, n_classes, l2=l2)
    solver = ExactLogisticSolver(LogisticGradients(X_train, y_train, fit))

    test_probabilities = fit.predict_proba(X_test)
    test_losses = -np.log(test_probabilities[np.arange(len(y_test)), y_test])
    test_index = int(np.argmax(test_losses))  # the most informative test point: the worst-fit one
    test_gradients = LogisticGradients(X_test, y_test, fit)
    test_gradient = test_gradients.per_example_gradients(np.array([test_index]))[0]
    predicted = solver.influence_on(test_gradient) / n

    checked = np.arange(n)  # every training point is removed and the model refitted
    actual = []
    for j in checked:
        keep = np.arange(n) != j
        refit = fit_logistic(
            X_train[keep],
            y_train[keep],
            n_classes,
            l2=l2 * n / (n - 1),
            initial_Theta=fit.Theta,
            gradient_tolerance=1e-10,
        )
        probability = refit.predict_proba(X_test[test_index : test_index + 1])[0, y_test[test_index]]
        actual.append(-np.log(probability) - test_losses[test_index])
    correlation = pearsonr(predicted[checked], np.array(actual)).statistic
    assert correlation >= 0.95, f"Pearson {correlation:.3f} between predicted and actual leave-one-out change"


def test_detects_flipped_labels_on_digits() -> None:
    """10% of digits labels flipped at random: the top 10% by self-influence holds ≥ 85% of the flips."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), size=len(y) // 10, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, size=len(flipped))) % 10
    ranking = relabel.rank(X, noisy, methods=("self_influence", "random"))
    checked = np.flatnonzero(ranking["rank_self_influence"] <= len(y) // 10)
    found = np.isin(flipped, checked).mean()
    found_by_random = np.isin(flipped, np.flatnonzero(ranking["rank_random"] <= len(y) // 10)).mean()
    assert found >= 0.85, f"self-influence top 10% holds {found:.1%} of the flips"
    assert found_by_random < 0.3


def test_unconverged_fit_refuses_to_score() -> None:
    X, y = random_problem(100, 5, 3, seed=6)
    with pytest.raises(ConvergenceError, match="gradient norm"):
        fit_logistic(X, y, 3, l2=1e-3, max_lbfgs_iterations=2, max_newton_steps=0)


# ------------------------------------------------------------------------------------- memory budget
def test_the_exact_solver_refuses_a_hessian_over_its_memory_budget_before_allocating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import relabel.influence.exact as exact

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Hessian was allocated")

    X, y = random_problem(60, 5, 3, 0)
    gradients = LogisticGradients(X, y, fit_logistic(X, y, 3, l2=1e-2))
    monkeypatch.setattr(exact, "logistic_hessian", must_not_run)
    with pytest.raises(InputError, match=r"over its 0\.0 GiB budget") as caught:
        ExactLogisticSolver(gradients, memory_budget_bytes=1000)
    message = str(caught.value)
    assert "\n" not in message and "fewer features" in message and "--model mlp" in message
    assert "RELABEL_EXACT_MEMORY_GIB" in message


def test_a_ten_class_text_sized_problem_is_refused_with_the_default_budget_and_allowed_by_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from relabel.influence.exact import DEFAULT_MEMORY_BUDGET_BYTES, check_memory_budget, exact_solver_bytes

    n_classes, n_terms = 10, 5000  # p = 10 · 5,001 = 50,010: H alone is 20 GB
    fit = SimpleNamespace(
        Theta=np.zeros((n_terms + 1, n_classes)), n_classes=n_classes, n_parameters=n_classes * (n_terms + 1)
    )
    gradients = LogisticGradients(np.zeros((12, n_terms)), np.arange(12) % n_classes, fit)  # type: ignore[arg-type]
    assert exact_solver_bytes(gradients.n_parameters, n_classes) > 8 * 50_010**2 > DEFAULT_MEMORY_BUDGET_BYTES
    monkeypatch.delenv("RELABEL_EXACT_MEMORY_GIB", raising=False)
    with pytest.raises(
        InputError, match=r"≈38\.3 GiB for its 50,010 × 50,010 Hessian.*over its 4\.0 GiB budget"
    ):
        check_memory_budget(gradients, chunk_size=1024)
    monkeypatch.setenv("RELABEL_EXACT_MEMORY_GIB", "64")
    check_memory_budget(gradients, chunk_size=1024)  # allowed: the user says the machine has the memory
    monkeypatch.setenv("RELABEL_EXACT_MEMORY_GIB", "lots")
    with pytest.raises(InputError, match="positive number of GiB"):
        check_memory_budget(gradients, chunk_size=1024)


def test_rank_on_too_many_features_is_an_input_error_not_an_out_of_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELABEL_EXACT_MEMORY_GIB", "0.01")  # ≈ 10 MiB: p = 3 · 601 needs ≈ 58 MiB
    X, y = random_problem(40, 600, 3, 0)
    with pytest.raises(InputError, match="use fewer features"):
        relabel.rank(X, y, methods=("self_influence",))


# ----------------------------------------------------------------------------------- mixed precision
FLOAT32_UNIT_ROUNDOFF = 2.0**-24  # ≈ 6e-8: the relative rounding of one float32 number


def _mixed_problem() -> tuple[LogisticGradients, np.ndarray]:
    X, y = random_problem(600, 30, 4, seed=7)
    gradients = LogisticGradients(X, y, fit_logistic(X, y, 4, l2=1e-2))
    return gradients, ExactLogisticSolver(gradients).self_influence()


def test_exact_hessian_vector_products_equal_the_explicit_hessian() -> None:
    from relabel.influence.exact import logistic_hessian_vector_products

    X, y = random_problem(90, 5, 3, seed=8)
    gradients = LogisticGradients(X, y, fit_logistic(X, y, 3, l2=1e-2))
    hessian = logistic_hessian(gradients.X_tilde, gradients.probabilities, 1e-2)
    vectors = np.random.default_rng(0).normal(size=(gradients.n_parameters, 4))
    products = logistic_hessian_vector_products(
        gradients.X_tilde, gradients.probabilities, 1e-2, vectors, row_chunk_size=17
    )
    np.testing.assert_allclose(products, hessian @ vectors, rtol=1e-11, atol=1e-13)


def test_mixed_precision_scores_match_float64_within_the_error_it_estimated_and_printed() -> None:
    """Mixed: float32 products and solves. Its error is of the order of float32 rounding (so it did run in
    float32: far above the float64 path's), every item is within the printed estimate and the default
    1e-5 tolerance; 1e-8 cannot hold: rounding to float32 alone moves a number by up to 6e-8."""
    gradients, float64_scores = _mixed_problem()
    solver = ExactLogisticSolver(gradients, precision="mixed")
    scores = solver.self_influence()
    assert solver.precision_used == "mixed"
    estimate = solver.estimated_relative_error
    assert estimate is not None and FLOAT32_UNIT_ROUNDOFF < estimate <= 1e-5
    relative_error = np.abs(scores - float64_scores) / float64_scores
    assert 1e-10 < relative_error.max() <= estimate
    assert f"estimated max relative error {estimate:.1e}" in solver.describe()
    assert "mixed: float32 products" in solver.describe()
    # pairwise influence: one refinement step against exact float64 Hessian-vector products
    item_gradient = gradients.per_example_gradients(np.array([3]))[0]
    reference = ExactLogisticSolver(gradients).influence_on(item_gradient)
    np.testing.assert_allclose(solver.influence_on(item_gradient), reference, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loader", [load_breast_cancer, load_iris, load_wine, load_digits])
def test_the_mixed_precision_estimate_bounds_every_items_error_on_real_data(loader) -> None:
    X, y = _standardized(loader)
    gradients = LogisticGradients(X, y, fit_logistic(X, y, int(y.max()) + 1, l2=1e-3))
    float64_scores = ExactLogisticSolver(gradients).self_influence()
    solver = ExactLogisticSolver(gradients, precision="mixed", mixed_tolerance=1.0)
    relative_error = np.abs(solver.self_influence() - float64_scores) / float64_scores
    assert solver.estimated_relative_error is not None
    assert relative_error.max() <= solver.estimated_relative_error <= 1e-5


def test_mixed_precision_falls_back_to_float64_when_the_measured_error_is_over_the_tolerance() -> None:
    gradients, float64_scores = _mixed_problem()
    solver = ExactLogisticSolver(gradients, precision="mixed", mixed_tolerance=1e-12)
    assert solver.precision_used == "float64"
    assert solver.estimated_relative_error is not None and solver.estimated_relative_error > 1e-12
    assert "mixed precision refused" in solver.describe()
    np.testing.assert_allclose(solver.self_influence(), float64_scores, rtol=1e-12)
