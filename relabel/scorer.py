"""The entry point: fit a model to (X, y), score every training item, rank by suspicion.

``rank(X, y, ...)`` returns one row per item, in input order, with one column per method
(higher = more suspicious; see :mod:`relabel.methods` and :mod:`relabel.influence.base` for the maths),
a ``rank_<method>`` column (1 = most suspicious), and the model's predicted class and probability.
``SuspicionScorer`` is the same pipeline as an object, kept so that ``explain`` can reuse the fitted
model and the Hessian factorisation without refitting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from relabel.errors import InputError, shown
from relabel.influence.auto import SolverChoice, build_solver
from relabel.influence.base import InfluenceSolver
from relabel.influence.cg import CgConfig
from relabel.influence.direct import DEFAULT_HESSIAN_MEMORY_BUDGET
from relabel.influence.exact import PRECISIONS, ExactLogisticSolver, LogisticGradients
from relabel.influence.lissa import LissaConfig
from relabel.influence.scope import DEFAULT_SCOPE_BUDGET_SECONDS, SCOPES, ParameterScope, choose_scope
from relabel.influence.torch_objective import (
    PerExampleLoss,
    TorchObjective,
    cross_entropy_per_example,
    select_parameter_names,
)
from relabel.logistic import LogisticFit, fit_logistic
from relabel.methods import (
    MODEL_NAMES,
    SCORE_METHODS,
    cross_entropy_loss,
    probability_margin,
    random_scores,
)
from relabel.selection import add_rank_columns
from relabel.torch_models import (
    build_cnn,
    build_logistic,
    build_mlp,
    is_final_linear,
    train_for_influence,
)

SOLVER_NAMES = ("auto", "exact", "direct", "cg", "lissa")


@dataclass
class FitSummary:
    """How the model fit ended: ‖∇J(θ̂)‖₂ (with respect to ``gradient_over``: all parameters, or the last
    layer's when influence is taken over it), J(θ̂) in nats, and the optimiser's iteration count."""

    model: str
    gradient_norm: float
    objective: float
    iterations: int
    n_parameters: int
    gradient_over: str = "all parameters"


def encode_labels(y: Sequence[Any], classes: Sequence[Any] | None) -> tuple[np.ndarray, list[Any]]:
    """Integer class indices for ``y`` and the class list (given, or the sorted distinct labels).

    Integer labels without ``classes`` are taken as indices into 0..max(y).
    """
    y_array = np.asarray(y)
    if y_array.ndim != 1:
        raise InputError(f"y must be one label per item (1-D); got shape {y_array.shape}")
    if classes is None:
        if np.issubdtype(y_array.dtype, np.integer):
            if y_array.size and y_array.min() < 0:
                raise InputError("integer labels must be class indices ≥ 0; pass classes= to name them")
            return y_array.astype(np.int64), list(range(int(y_array.max()) + 1 if y_array.size else 0))
        classes = sorted(pd.unique(y_array).tolist(), key=str)
    lookup = {label: index for index, label in enumerate(classes)}
    indices = np.empty(len(y_array), dtype=np.int64)
    for row, label in enumerate(y_array.tolist()):
        if label not in lookup:
            raise InputError(
                f"label {shown(label)} at row {row} is not one of the classes {shown(list(classes), 200)}"
            )
        indices[row] = lookup[label]
    return indices, list(classes)


def check_class_counts(y: np.ndarray, classes: Sequence[Any], item_ids: Sequence[Any] | None = None) -> None:
    """At least two classes present, and none present with a single item (named by id, else row)."""
    counts = np.bincount(y, minlength=len(classes))
    present = np.flatnonzero(counts)
    if len(present) < 2:
        only = classes[present[0]] if len(present) else None
        raise InputError(
            f"all {len(y)} items have the same label {shown(only)}: ranking needs at least two classes"
        )
    for index in present:
        if counts[index] == 1:
            row = int(np.flatnonzero(y == index)[0])
            item = f"id {shown(item_ids[row])}" if item_ids is not None else f"row {row}"
            raise InputError(
                f"class {shown(classes[index])} has a single item ({item}); a class needs at least 2 items "
                "to be learned: check that item's label or drop the class"
            )


class SuspicionScorer:
    """Fit a model, then score every training item by each requested method.

    Parameters mirror :func:`rank`. :meth:`fit` sets every fitted attribute, whatever the model: ``X``,
    ``y`` (class indices), ``classes``, ``fit_summary``, ``probabilities`` (n, K), ``logistic_fit`` (the
    logistic model's fit, else None), ``module`` (the torch model, else None), ``objective`` (the torch
    objective LiSSA works on, else None), ``parameter_scope`` (the θ influence is taken over, deep models);
    ``solver`` (the :class:`InfluenceSolver`) is built on first use.
    Querying before :meth:`fit` raises InputError.
    """

    def __init__(
        self,
        *,
        model: str | nn.Module = "logistic",
        solver: str = "auto",
        l2: float = 1e-3,
        seed: int = 0,
        device: str | torch.device = "cpu",
        loss_fn: PerExampleLoss | None = None,
        hidden_units: int = 64,
        image_shape: tuple[int, int, int] | None = None,
        train_model: bool = True,
        lissa: LissaConfig | None = None,
        chunk_size: int = 1024,
        gradient_tolerance: float | None = None,
        max_training_iterations: int = 5000,
        progress: bool = False,
        cg: CgConfig | None = None,
        hessian_memory_budget: int = DEFAULT_HESSIAN_MEMORY_BUDGET,
        max_training_seconds: float = 600.0,
        influence_parameters: str = "auto",
        scope_budget_seconds: float = DEFAULT_SCOPE_BUDGET_SECONDS,
        exact_precision: str = "float64",
    ) -> None:
        if isinstance(model, str) and model not in MODEL_NAMES:
            raise InputError(
                f"unknown model {model!r}: choose one of {', '.join(MODEL_NAMES)} or pass an nn.Module"
            )
        if solver not in SOLVER_NAMES:
            raise InputError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVER_NAMES)}")
        if solver == "exact" and model != "logistic":
            raise InputError("solver='exact' is only available for model='logistic'; use solver='auto'")
        if l2 <= 0:
            raise InputError(f"l2 must be > 0; got {l2}")
        if influence_parameters not in SCOPES:
            raise InputError(
                f"unknown influence_parameters {influence_parameters!r}: choose one of {', '.join(SCOPES)}"
            )
        self.influence_parameters = influence_parameters
        self.scope_budget_seconds = float(scope_budget_seconds)
        self.parameter_scope: ParameterScope | None = None
        self.model = model
        # auto: exact Cholesky for logistic; for torch models direct / cg / lissa by the cost model
        # (relabel.influence.auto), resolved when the solver is built (then solver_name says which ran)
        self.solver_name = "exact" if solver == "auto" and model == "logistic" else solver
        self.requested_solver = self.solver_name
        self.cg_config = cg or CgConfig(seed=seed)
        self.hessian_memory_budget = int(hessian_memory_budget)
        if exact_precision not in PRECISIONS:
            raise InputError(
                f"exact_precision must be one of {', '.join(PRECISIONS)}; got {exact_precision!r}"
            )
        self.exact_precision = exact_precision
        self.max_training_seconds = float(max_training_seconds)
        self.solver_choice: SolverChoice | None = None
        self.l2 = float(l2)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.loss_fn = loss_fn or cross_entropy_per_example
        self.hidden_units = hidden_units
        self.image_shape = image_shape
        self.train_model = train_model
        self.lissa_config = lissa or LissaConfig(seed=seed)
        self.chunk_size = chunk_size
        self.gradient_tolerance = gradient_tolerance
        self.max_training_iterations = max_training_iterations
        self.progress = progress
        self._solver: InfluenceSolver | None = None
        self._fitted = False

    def _require_fit(self) -> None:
        if not self._fitted:
            raise InputError("the scorer is not fitted yet: call fit(X, y) before asking for scores")

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: Any,
        y: Sequence[Any],
        classes: Sequence[Any] | None = None,
        item_ids: Sequence[Any] | None = None,
    ) -> SuspicionScorer:
        """Validate (X, y), fit the model to its optimum; returns self.

        ``item_ids`` (optional, one per row) only name items in error messages.
        """
        X = np.asarray(X, dtype=np.float64) if not isinstance(X, torch.Tensor) else X.double().cpu().numpy()
        if X.ndim < 2 or X.shape[0] != len(y):
            raise InputError(f"X must have one row per label: X has shape {X.shape}, y has {len(y)} labels")
        bad = np.argwhere(~np.isfinite(X.reshape(X.shape[0], -1)))
        if bad.size:
            row = bad[0][0]
            item = f"id {shown(item_ids[row])}" if item_ids is not None else f"row {row}"
            raise InputError(
                f"X has a non-finite value (NaN or inf) at {item}, feature {int(bad[0][1])}: "
                "clean or impute it first"
            )
        self.y, self.classes = encode_labels(y, classes)
        check_class_counts(self.y, self.classes, item_ids)
        self.X = X
        n_classes = len(self.classes)
        self.logistic_fit: LogisticFit | None = None
        self.module: nn.Module | None = None
        self.objective: TorchObjective | None = None
        if self.model == "logistic":
            self.logistic_fit = self._fit_logistic(X.reshape(len(X), -1), n_classes)
            self.probabilities = self.logistic_fit.predict_proba(X.reshape(len(X), -1))
            if self.solver_name != "exact":
                self.module = self._logistic_module(self.logistic_fit)
        else:
            self.module = self._fit_torch_model(X, n_classes)
        if self.solver_name != "exact":
            self.objective = self._torch_objective()
            self.probabilities = self.objective.probabilities()
        self._solver = None
        self._fitted = True
        return self

    def _fit_logistic(self, X: np.ndarray, n_classes: int) -> LogisticFit:
        with tqdm(total=1, desc="fit logistic", disable=not self.progress, leave=False) as bar:
            fit = fit_logistic(
                X, self.y, n_classes, l2=self.l2, gradient_tolerance=self.gradient_tolerance or 1e-8
            )
            bar.update(1)
        self.fit_summary = FitSummary(
            "logistic",
            fit.gradient_norm,
            fit.objective,
            fit.lbfgs_iterations + fit.newton_steps,
            fit.n_parameters,
        )
        return fit

    def _logistic_module(self, fit: LogisticFit) -> nn.Module:
        module = build_logistic(fit.Theta.shape[0] - 1, fit.n_classes).to(self.device, torch.float64)
        with torch.no_grad():
            module.weight.copy_(torch.as_tensor(fit.Theta[:-1].T))
            module.bias.copy_(torch.as_tensor(fit.Theta[-1]))
        return module

    def _torch_inputs(self) -> torch.Tensor:
        X = self.X
        if self.model == "cnn":
            if X.ndim == 2:
                if self.image_shape is None:
                    raise InputError(
                        "model='cnn' needs images (n, C, H, W) or image_shape=(C, H, W) for flat rows"
                    )
                X = X.reshape(len(X), *self.image_shape)
            elif X.ndim == 3:
                X = X[:, None]
        elif X.ndim > 2:
            X = X.reshape(len(X), -1)
        return torch.as_tensor(X, dtype=torch.float64, device=self.device)

    def _fit_torch_model(self, X: np.ndarray, n_classes: int) -> nn.Module:
        inputs = self._torch_inputs()
        torch.manual_seed(self.seed)
        if isinstance(self.model, nn.Module):
            module = self.model
            name = type(module).__name__
        elif self.model == "mlp":
            module = build_mlp(inputs.shape[1], n_classes, self.hidden_units)
            name = "mlp"
        else:
            module = build_cnn(tuple(inputs.shape[1:]), n_classes)
            name = "cnn"
        module = module.to(self.device, torch.float64)
        targets = torch.as_tensor(self.y, device=self.device)
        tolerance = self.gradient_tolerance or 1e-4
        self.parameter_scope = self._choose_scope(module, inputs, targets)
        if self.train_model:
            with tqdm(
                total=self.max_training_iterations,
                desc=f"train {name}",
                disable=not self.progress,
                leave=False,
            ) as bar:

                def advance(iterations: int, gradient_norm: float) -> None:
                    bar.n = min(iterations, bar.total)
                    bar.set_postfix(grad_norm=f"{gradient_norm:.2e}")
                    bar.refresh()

                report = train_for_influence(
                    module,
                    inputs,
                    targets,
                    weight_decay=self.l2,
                    loss_fn=self.loss_fn,
                    gradient_tolerance=tolerance,
                    max_iterations=self.max_training_iterations,
                    max_seconds=self.max_training_seconds,
                    seed=self.seed,
                    progress=advance,
                    polish_parameters=self.parameter_scope.names,
                )
            self.fit_summary = FitSummary(
                name,
                report.gradient_norm,
                report.objective,
                report.iterations,
                sum(p.numel() for p in module.parameters()),
                self.parameter_scope.gradient_label(),
            )
        else:
            self.fit_summary = FitSummary(
                name, float("nan"), float("nan"), 0, sum(p.numel() for p in module.parameters())
            )
        return module

    def _choose_scope(self, module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ParameterScope:
        """θ for influence: ``LissaConfig.parameters`` when given, else :func:`choose_scope`."""
        given = self.lissa_config.parameters
        if given is not None:
            names = tuple(select_parameter_names(module, given))
            size = sum(p.numel() for name, p in module.named_parameters() if name in names)
            total = sum(p.numel() for p in module.parameters() if p.requires_grad)
            return ParameterScope(names, "given", size, total, "LissaConfig.parameters")
        with tqdm(total=1, desc="influence scope", disable=not self.progress, leave=False) as bar:
            scope = choose_scope(
                module,
                inputs,
                targets,
                self.influence_parameters,
                weight_decay=self.l2,
                loss_fn=self.loss_fn,
                budget_seconds=self.scope_budget_seconds,
                memory_budget_bytes=self.hessian_memory_budget,
            )
            bar.update(1)
        return scope

    def convex_objective(self) -> bool:
        """Whether J over the influence θ is known convex (then δ = 0 by default, docs/maths.md § Damping):
        the logistic model, or cross-entropy over a final linear layer with the body held fixed."""
        if self.model == "logistic":
            return True
        scope = self.parameter_scope
        return (
            scope is not None
            and scope.kind in ("last", "given")
            and self.loss_fn is cross_entropy_per_example
            and is_final_linear(self.module, scope.names, self.objective.X)
        )

    def _torch_objective(self) -> TorchObjective:
        objective = TorchObjective(
            self.module,
            self._torch_inputs()
            if self.model != "logistic"
            else torch.as_tensor(self.X.reshape(len(self.X), -1), dtype=torch.float64, device=self.device),
            torch.as_tensor(self.y, device=self.device),
            weight_decay=self.l2,
            loss_fn=self.loss_fn,
            parameter_names=self.parameter_scope.names if self.parameter_scope is not None else None,
        )
        if not self.train_model:
            self.fit_summary.gradient_norm = objective.objective_gradient_norm()
        return objective

    # ------------------------------------------------------------------ scoring
    @property
    def solver(self) -> InfluenceSolver:
        """The influence solver (Hessian factorised / spectrum estimated on first use)."""
        self._require_fit()
        if self._solver is None:
            if self.solver_name == "exact":
                gradients = LogisticGradients(self.X.reshape(len(self.X), -1), self.y, self.logistic_fit)
                with tqdm(
                    total=gradients.n_items, desc="Hessian", disable=not self.progress, leave=False
                ) as bar:
                    self._solver = ExactLogisticSolver(
                        gradients,
                        self.chunk_size,
                        hessian_progress=bar.update,
                        precision=self.exact_precision,
                    )
            else:
                self._solver, self.solver_choice = build_solver(
                    self.objective,
                    self.requested_solver,
                    convex=self.convex_objective(),
                    lissa=self.lissa_config,
                    cg=self.cg_config,
                    memory_budget_bytes=self.hessian_memory_budget,
                    chunk_size=self.chunk_size,
                )
                self.solver_name = self.solver_choice.name
        return self._solver

    def scores(self, methods: Sequence[str] = ("self_influence", "loss")) -> pd.DataFrame:
        """One column per method (higher = more suspicious), ``rank_<method>``, prediction columns."""
        self._require_fit()
        methods = tuple(methods)
        unknown = [method for method in methods if method not in SCORE_METHODS]
        if unknown or not methods:
            raise InputError(f"unknown method(s) {unknown}: choose from {', '.join(SCORE_METHODS)}")
        frame = pd.DataFrame(index=pd.RangeIndex(len(self.y)))
        for method in methods:
            if method == "self_influence":
                frame[method] = self.self_influence()
            elif method == "loss":
                frame[method] = cross_entropy_loss(self.probabilities, self.y)
            elif method == "margin":
                frame[method] = probability_margin(self.probabilities, self.y)
            else:
                frame[method] = random_scores(len(self.y), self.seed)
        add_rank_columns(frame, methods)
        predicted = self.probabilities.argmax(axis=1)
        frame["predicted_class"] = [self.classes[index] for index in predicted]
        frame["predicted_probability"] = self.probabilities[np.arange(len(predicted)), predicted]
        return frame

    def self_influence(self) -> np.ndarray:
        """g_iᵀ H⁻¹ g_i for every training item (docs/maths.md, § Self-influence), shape (n,)."""
        solver = self.solver
        with tqdm(total=len(self.y), desc="self-influence", disable=not self.progress, leave=False) as bar:
            return solver.self_influence(progress=bar.update)

    def explain(self, index: int, top: int = 5) -> pd.DataFrame:
        """Training items that most support / oppose item ``index``'s current label.

        influence_j = g_jᵀ H⁻¹ g_i (see relabel.influence.base): > 0 supports (removing j would raise
        item i's loss), < 0 opposes. Returns the ``top`` of each, with ``role`` "supports"/"opposes",
        ``row`` (training index), ``influence`` and ``label``; the item itself is excluded.
        """
        self._require_fit()
        if not 0 <= index < len(self.y):
            raise InputError(f"item index {index} is outside 0..{len(self.y) - 1}")
        gradients = self.solver.gradients
        item_gradient = gradients.per_example_gradients(np.array([index]))[0]
        influence = self.solver.influence_on(item_gradient)
        rows = strongest_influences(influence, index, top)
        return pd.DataFrame(
            {
                "role": [role for role, _ in rows],
                "row": [int(j) for _, j in rows],
                "influence": [float(influence[j]) for _, j in rows],
                "label": [self.classes[self.y[j]] for _, j in rows],
            }
        )


def strongest_influences(influence: np.ndarray, index: int, top: int) -> list[tuple[str, int]]:
    """("supports", j) for the ``top`` largest positive influences on item ``index``, then ("opposes", j)
    for the ``top`` most negative; the item itself is excluded. ``influence`` is not modified."""
    influence = np.asarray(influence, dtype=np.float64).copy()
    influence[index] = np.nan
    order = np.argsort(-np.nan_to_num(influence, nan=-np.inf), kind="stable")
    supports = [int(j) for j in order[:top] if influence[j] > 0]
    opposes = [int(j) for j in order[::-1][: top + 1] if np.isfinite(influence[j]) and influence[j] < 0][:top]
    return [("supports", j) for j in supports] + [("opposes", j) for j in opposes]


def rank(
    X: Any,
    y: Sequence[Any],
    *,
    model: str | nn.Module = "logistic",
    solver: str = "auto",
    methods: Sequence[str] = ("self_influence", "loss"),
    l2: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    classes: Sequence[Any] | None = None,
    item_ids: Sequence[Any] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Rank training items by how suspicious their label is; one row per item, in input order.

    X: (n, d) features, or (n, C, H, W) images for ``model="cnn"``. y: labels (integers 0..K-1, or any
    hashable labels; ``classes`` fixes their order). ``model``: "logistic" (exact Hessian), "mlp",
    "cnn", or an ``nn.Module`` (pass ``loss_fn`` returning per-example losses if not cross-entropy;
    ``train_model=False`` scores it as given). ``solver``: "auto" (exact for logistic, LiSSA otherwise),
    "exact" or "lissa" (``lissa=LissaConfig(...)`` tunes it). ``l2``: λ, the L2 weight on all
    parameters (weight decay for torch models). Columns: each of ``methods`` among self_influence, loss,
    margin, random (higher = more suspicious), ``rank_<method>`` (1 = most suspicious),
    ``predicted_class`` and ``predicted_probability``. ``item_ids`` name items in error messages.
    ``influence_parameters`` (deep models): "auto" (all parameters when that is estimated within
    ``scope_budget_seconds``, default 120 s, else the last layer), "all" or "last"; see
    :mod:`relabel.influence.scope`. ``exact_precision`` (logistic, exact solver): "float64" (default) or
    "mixed" (float32 products and solves, float64 Cholesky factor, accuracy measured on probe items and
    float64 used when the estimate exceeds 1e-5 relative; see
    :class:`relabel.influence.exact.ExactLogisticSolver`). Other options: see :class:`SuspicionScorer`.
    """
    scorer = SuspicionScorer(model=model, solver=solver, l2=l2, seed=seed, device=device, **options)
    return scorer.fit(X, y, classes, item_ids).scores(methods)
