"""``mlp``: Linear(d, h) → tanh → Linear(h, K) on feature rows; damped self-influence, iterative solver.

tanh keeps J twice differentiable everywhere; J is not convex, so δ = 0.01·λ̂_max(H) by default
(docs/maths.md § Damping) unless θ is the last layer alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from relabel.models.base import ModelSettings
from relabel.models.training import TorchModelKind

if TYPE_CHECKING:
    from torch import nn


class MlpModel(TorchModelKind):
    name = "mlp"
    description = "one-hidden-layer tanh network: damped self-influence, iterative solver"
    inputs = "features"

    def build(self, input_shape: tuple[int, ...], n_classes: int, settings: ModelSettings) -> nn.Module:
        from relabel.torch_models import build_mlp

        return build_mlp(int(np.prod(input_shape)), n_classes, settings.hidden_units)
