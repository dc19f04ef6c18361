"""A user's own ``nn.Module`` as a model kind: trained (or scored as given) like the built-in networks.

Its inputs are flattened feature rows; ``loss_fn`` (:class:`~relabel.models.base.ModelSettings`) gives its
per-example loss when it is not cross-entropy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relabel.models.base import ModelSettings
from relabel.models.training import TorchModelKind

if TYPE_CHECKING:
    from torch import nn


class GivenModule(TorchModelKind):
    """Wraps one module instance; ``build`` returns it (its current weights are the starting point)."""

    description = "a PyTorch module passed in: damped self-influence, iterative solver"
    inputs = "features"

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    @property
    def name(self) -> str:  # type: ignore[override]
        return type(self.module).__name__

    def build(self, input_shape: tuple[int, ...], n_classes: int, settings: ModelSettings) -> nn.Module:
        return self.module
