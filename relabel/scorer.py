"""The entry point: fit a model to (X, y), score every training item, rank by suspicion.

``rank(X, y, ...)`` returns one row per item, in input order, with one column per method
(higher = more suspicious; see :mod:`relabel.methods` and :mod:`relabel.influence.base` for the maths),
a ``rank_<method>`` column (1 = most suspicious), and the model's predicted class and probability.
``SuspicionScorer`` is the same pipeline as an object, kept so that ``explain`` can reuse the fitted
model and the Hessian factorisation without refitting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from relabel.errors import InputError, shown
from relabel.influence.auto import SolverChoice, build_solver
from relabel.influence.base import InfluenceSolver
from relabel.influence.scope import ParameterScope
from relabel.influence.settings import SOLVER_NAMES, InfluenceSettings
from relabel.influence.torch_objective import TorchObjective
from relabel.logistic import LogisticFit
from relabel.methods import METHODS, SCORE_METHODS
from relabel.models import FitSummary, FittedModel, ModelKind, ModelSettings, model_kind
from relabel.selection import add_rank_columns

__all__ = ["SOLVER_NAMES", "FitSummary", "SuspicionScorer", "encode_labels", "rank", "split_options"]

_MODEL_FIELDS = {f.name for f in fields(ModelSettings)}
_INFLUENCE_FIELDS = {f.name for f in fields(InfluenceSettings)}


def split_options(options: dict[str, Any]) -> tuple[ModelSettings, InfluenceSettings]:
    """Flat keyword options → (model settings, solver settings), each field by its name; ``seed`` goes to
    both (one seed for the fit and the solver), ``lissa``/``cg`` are the iterative solvers' configs.
    An unknown name is an InputError listing the known ones."""
    unknown = sorted(set(options) - _MODEL_FIELDS - _INFLUENCE_FIELDS)
    if unknown:
        known = ", ".join(sorted(_MODEL_FIELDS | _INFLUENCE_FIELDS))
        raise InputError(f"unknown scorer option(s) {unknown}; known: {known}")
    model = ModelSettings(**{key: value for key, value in options.items() if key in _MODEL_FIELDS})
    influence = InfluenceSettings(
        **{key: value for key, value in options.items() if key in _INFLUENCE_FIELDS and value is not None}
    )
    return model, influence


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
    """Validate → fit → score: fit a model kind (:mod:`relabel.models`) to (X, y), then score every
    training item by each requested method (:data:`relabel.methods.METHODS`).

    ``model``: a registered name or an ``nn.Module``. ``model_settings`` (:class:`ModelSettings`) and
    ``influence`` (:class:`InfluenceSettings`) hold the model's and the solver's settings; flat keyword
    ``options`` (``l2=``, ``solver=``, ``hidden_units=``, ``lissa=``, …) fill them by field name instead.
    :meth:`fit` sets every fitted attribute, whatever the model: ``X``, ``y`` (class indices), ``classes``,
    ``fit_summary``, ``probabilities`` (n, K), ``logistic_fit`` (the logistic model's fit, else None),
    ``module`` (the torch model, else None), ``objective`` (the torch objective the iterative solvers work
    on, else None), ``parameter_scope`` (the θ influence is taken over, deep models), ``solver_name``;
    ``solver`` (the :class:`InfluenceSolver`) is built on first use. Querying before :meth:`fit` raises
    InputError.
    """

    def __init__(
        self,
        model: str | nn.Module = "logistic",
        *,
        model_settings: ModelSettings | None = None,
        influence: InfluenceSettings | None = None,
        **options: Any,
    ) -> None:
        if options:
            given_model, given_influence = split_options(options)
            model_settings = model_settings or given_model
            influence = influence or given_influence
        self.kind: ModelKind = model_kind(model)
        self.model = model
        self.settings = model_settings or ModelSettings()
        self.influence = influence or InfluenceSettings(seed=self.settings.seed)
        if self.influence.solver not in self.kind.solvers:
            raise InputError(
                f"solver={self.influence.solver!r} is not available for model={self.kind.name!r}; "
                f"choose one of {', '.join(self.kind.solvers)}"
            )
        self._fitted = False

    @property
    def l2(self) -> float:
        """λ, the L2 weight of the fit."""
        return self.settings.l2

    @property
    def seed(self) -> int:
        return self.settings.seed

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
        X, y_indices, class_list = validate(X, y, classes, item_ids)
        fitted = self.kind.fit(X, y_indices, len(class_list), self.settings, self.influence)
        self.X, self.y, self.classes = X, y_indices, class_list
        self._set_fitted(fitted)
        return self

    def _set_fitted(self, fitted: FittedModel) -> None:
        self.fitted = fitted
        self.probabilities: np.ndarray = fitted.probabilities
        self.fit_summary: FitSummary = fitted.summary
        self.logistic_fit: LogisticFit | None = fitted.logistic_fit
        self.module: nn.Module | None = fitted.module
        self.objective: TorchObjective | None = fitted.objective
        self.parameter_scope: ParameterScope | None = fitted.parameter_scope
        requested = self.influence.solver
        exact = fitted.exact_solver is not None and requested in ("auto", "exact")
        # auto: the kind's exact solver when it has one; for torch models direct / cg / lissa by the cost
        # model (relabel.influence.auto), resolved when the solver is built (then solver_name says which ran)
        self.solver_name = "exact" if exact else requested
        self.solver_choice: SolverChoice | None = None
        self._solver: InfluenceSolver | None = None
        self._fitted = True

    def convex_objective(self) -> bool:
        """Whether J over the influence θ is known convex (then δ = 0 by default, docs/maths.md § Damping):
        the logistic model, or cross-entropy over a final linear layer with the body held fixed."""
        self._require_fit()
        return self.fitted.convex

    # ------------------------------------------------------------------ scoring
    @property
    def solver(self) -> InfluenceSolver:
        """The influence solver (Hessian factorised / spectrum estimated on first use)."""
        self._require_fit()
        if self._solver is None:
            influence = self.influence
            if self.solver_name == "exact":
                self._solver = self.fitted.exact_solver(
                    influence.chunk_size, self.settings.progress, influence.exact_precision
                )
            else:
                self._solver, self.solver_choice = build_solver(
                    self.objective,
                    influence.solver,
                    convex=self.fitted.convex,
                    damping=influence.damping,
                    seed=influence.seed,
                    lissa=influence.lissa,
                    cg=influence.cg,
                    memory_budget_bytes=influence.hessian_memory_budget,
                    chunk_size=influence.chunk_size,
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
            frame[method] = METHODS[method].score(self)
        add_rank_columns(frame, methods)
        predicted = self.probabilities.argmax(axis=1)
        frame["predicted_class"] = [self.classes[index] for index in predicted]
        frame["predicted_probability"] = self.probabilities[np.arange(len(predicted)), predicted]
        return frame

    def self_influence(self) -> np.ndarray:
        """g_iᵀ H⁻¹ g_i for every training item (docs/maths.md, § Self-influence), shape (n,)."""
        solver = self.solver
        with tqdm(
            total=len(self.y), desc="self-influence", disable=not self.settings.progress, leave=False
        ) as bar:
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


def validate(
    X: Any, y: Sequence[Any], classes: Sequence[Any] | None, item_ids: Sequence[Any] | None
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(X as float64, y as class indices, the class list); InputError for a shape mismatch, a non-finite
    value or a class that cannot be learned (named by ``item_ids`` when given, else by row)."""
    if hasattr(X, "detach"):  # a torch tensor
        X = X.detach().double().cpu().numpy()
    X = np.asarray(X, dtype=np.float64)
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
    indices, class_list = encode_labels(y, classes)
    check_class_counts(indices, class_list, item_ids)
    return X, indices, class_list


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
    methods: Sequence[str] = ("self_influence", "loss"),
    classes: Sequence[Any] | None = None,
    item_ids: Sequence[Any] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Rank training items by how suspicious their label is; one row per item, in input order.

    X: (n, d) features, or (n, C, H, W) images for ``model="cnn"``. y: labels (integers 0..K-1, or any
    hashable labels; ``classes`` fixes their order). ``model``: a name of :mod:`relabel.models`
    ("logistic": exact Hessian, "mlp", "cnn"), or an ``nn.Module`` (pass ``loss_fn`` returning per-example
    losses if not cross-entropy; ``train_model=False`` scores it as given). Columns: each of ``methods``
    among self_influence, loss, margin, random (higher = more suspicious), ``rank_<method>`` (1 = most
    suspicious), ``predicted_class`` and ``predicted_probability``. ``item_ids`` name items in error
    messages. ``options`` fill :class:`~relabel.models.base.ModelSettings` (``l2``: λ, the L2 weight on all
    parameters; ``seed``; ``device``; …) and :class:`~relabel.influence.settings.InfluenceSettings`
    (``solver``: "auto" = exact for logistic, else direct / cg / lissa by cost; ``damping``;
    ``influence_parameters``: "auto", "all" or "last" for deep models; ``exact_precision``: "float64" or
    "mixed" for the exact solver; ``lissa=LissaConfig(...)``, …) by field name.
    """
    scorer = SuspicionScorer(model, **options)
    return scorer.fit(X, y, classes, item_ids).scores(methods)
