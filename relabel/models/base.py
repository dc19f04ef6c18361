"""The protocol every model kind follows, and what a fit hands back.

A model kind says what inputs it needs (``inputs``: feature rows or images), how to ``build`` its network,
how to ``fit`` it (to a stationary point of J(θ) = mean cross-entropy + (λ/2)‖θ‖², docs/maths.md), which
solver fits it (``exact``: a closed-form Hessian solver of its own, or the iterative torch solvers
direct / cg / lissa chosen by :mod:`relabel.influence.auto`), and whether J is convex in θ (then δ = 0 by
default). :class:`relabel.models.training.TorchModelKind` implements ``fit`` for any network a kind
builds; a new kind is a subclass with ``name``, ``description`` and ``build``, registered in
:mod:`relabel.models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from relabel.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from relabel.influence.scope import ParameterScope
    from relabel.influence.settings import InfluenceSettings
    from relabel.influence.torch_objective import PerExampleLoss, TorchObjective
    from relabel.logistic import LogisticFit


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


@dataclass
class ModelSettings:
    """Settings of the model and its fit (not of the influence solver: see
    :class:`~relabel.influence.settings.InfluenceSettings`).

    l2:                      λ, the L2 weight on all parameters (weight decay for torch models).
    seed:                    seeds the initialisation and the minibatch order of the training.
    device:                  torch device.
    loss_fn:                 per-example loss of a custom module (None: cross-entropy).
    hidden_units:            the MLP's hidden width.
    image_shape:             (C, H, W) of flat image rows, for the CNN.
    train_model:             False scores a given module as it is.
    gradient_tolerance:      stop training when ‖∇J‖₂ ≤ this (None: 1e-8 logistic, 1e-4 torch models).
    max_training_iterations: L-BFGS iteration limit of a torch model's fit.
    max_training_seconds:    wall-clock limit of a torch model's fit.
    progress:                show progress bars.
    """

    l2: float = 1e-3
    seed: int = 0
    device: Any = "cpu"
    loss_fn: PerExampleLoss | None = None
    hidden_units: int = 64
    image_shape: tuple[int, int, int] | None = None
    train_model: bool = True
    gradient_tolerance: float | None = None
    max_training_iterations: int = 5000
    max_training_seconds: float = 600.0
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.l2 > 0:
            raise InputError(f"l2 must be > 0; got {self.l2}")
        self.l2 = float(self.l2)
        self.seed = int(self.seed)

    def torch_device(self) -> torch.device:
        import torch

        return torch.device(self.device)

    def per_example_loss(self) -> PerExampleLoss:
        from relabel.influence.torch_objective import cross_entropy_per_example

        return self.loss_fn or cross_entropy_per_example


@dataclass
class FittedModel:
    """What :meth:`ModelKind.fit` returns; the scorer copies it onto its fitted attributes.

    probabilities: (n, K) class probabilities of the training items at θ̂. summary: the fit's
    :class:`FitSummary`. module: the torch network (None for the logistic model with its exact solver).
    objective: the :class:`TorchObjective` the iterative solvers work on (None likewise). logistic_fit:
    the closed-form logistic fit, else None. parameter_scope: θ influence is taken over (deep models).
    convex: whether J over that θ is known convex. exact_solver: builds the kind's own solver, else None.
    """

    probabilities: np.ndarray
    summary: FitSummary
    module: nn.Module | None = None
    objective: TorchObjective | None = None
    logistic_fit: LogisticFit | None = None
    parameter_scope: ParameterScope | None = None
    convex: bool = False
    exact_solver: Any = None  # Callable[[int, bool], InfluenceSolver] | None


class ModelKind:
    """One kind of model relabel fits (the protocol; see the module docstring).

    inputs: "features" ((n, d) rows; images are flattened) or "images" ((n, C, H, W) arrays).
    solvers: the solver names that fit it; ``default_solver`` is what ``solver="auto"`` means for it
    ("exact": its own closed-form solver; "auto": the cost-model choice among direct / cg / lissa).
    convex: J is convex in θ for every θ (else convexity is decided per fit, e.g. a last-layer θ).
    default_image_size: the side images are resized to for it (pixels).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs: ClassVar[str] = "features"
    solvers: ClassVar[tuple[str, ...]] = ("auto", "direct", "cg", "lissa")
    default_solver: ClassVar[str] = "auto"
    convex: ClassVar[bool] = False
    default_image_size: ClassVar[int] = 8

    def build(self, input_shape: tuple[int, ...], n_classes: int, settings: ModelSettings) -> nn.Module:
        """A freshly initialised network for inputs of ``input_shape`` (one item) and ``n_classes``."""
        raise NotImplementedError

    def prepare(self, X: np.ndarray, settings: ModelSettings) -> np.ndarray:
        """X as this kind takes it: flattened rows for "features", (n, C, H, W) for "images"."""
        if self.inputs == "features":
            return X.reshape(len(X), -1)
        if X.ndim == 2:
            if settings.image_shape is None:
                raise InputError(
                    f"model={self.name!r} needs images (n, C, H, W) or image_shape=(C, H, W) for flat rows"
                )
            return X.reshape(len(X), *settings.image_shape)
        return X[:, None] if X.ndim == 3 else X

    def predict_proba(self, fitted: FittedModel, X: np.ndarray, settings: ModelSettings) -> np.ndarray:
        """(n, K) class probabilities of new items ``X`` under ``fitted`` (e.g. held-out rows of a k-fold)."""
        raise NotImplementedError

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        settings: ModelSettings,
        influence: InfluenceSettings,
    ) -> FittedModel:
        raise NotImplementedError
