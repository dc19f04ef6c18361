"""The model registry: every model kind relabel can fit, by name.

A kind (:class:`~relabel.models.base.ModelKind`) says what inputs it needs, builds and fits its model,
which solver fits it and whether it is convex. Adding one is one module here and one line below; the
CLI's ``--model`` choices and help, :class:`~relabel.settings.AuditSettings` and the scorer read this table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relabel.errors import InputError
from relabel.models.base import FitSummary, FittedModel, ModelKind, ModelSettings
from relabel.models.cnn import CnnModel
from relabel.models.logistic import LogisticModel
from relabel.models.mlp import MlpModel
from relabel.models.training import TorchModelKind

MODEL_KINDS: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    """Add ``kind`` to the registry under ``kind.name`` (replacing one of the same name); returns it."""
    if not kind.name:
        raise InputError("a model kind needs a name")
    MODEL_KINDS[kind.name] = kind
    return kind


register(LogisticModel())
register(MlpModel())
register(CnnModel())


def model_names() -> tuple[str, ...]:
    """The registered model names, in registration order."""
    return tuple(MODEL_KINDS)


def model_kind(model: Any) -> ModelKind:
    """The kind registered as ``model``, or a :class:`~relabel.models.module.GivenModule` for a module."""
    if isinstance(model, str):
        if model not in MODEL_KINDS:
            raise InputError(
                f"unknown model {model!r}: choose one of {', '.join(MODEL_KINDS)} or pass an nn.Module"
            )
        return MODEL_KINDS[model]
    from torch import nn

    if isinstance(model, nn.Module):
        from relabel.models.module import GivenModule

        return GivenModule(model)
    raise InputError(
        f"model must be a name ({', '.join(MODEL_KINDS)}) or an nn.Module; got {type(model).__name__}"
    )


def describe_models(names: Sequence[str] | None = None) -> str:
    """``name: description`` of each registered kind (or ``names``), for ``--help`` texts."""
    return "; ".join(f"{name}: {MODEL_KINDS[name].description}" for name in (names or MODEL_KINDS))


__all__ = [
    "MODEL_KINDS",
    "FitSummary",
    "FittedModel",
    "ModelKind",
    "ModelSettings",
    "TorchModelKind",
    "describe_models",
    "model_kind",
    "model_names",
    "register",
]
