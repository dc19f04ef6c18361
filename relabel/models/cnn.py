"""``cnn``: a small convolutional network on (C, H, W) images (28×28 by default, MNIST's size).

[Conv3×3(8) → tanh → AvgPool2] → [Conv3×3(16) → tanh → AvgPool2] → Linear(16·⌊H/4⌋·⌊W/4⌋, K)
(:func:`relabel.torch_models.build_cnn`); damped self-influence by an iterative solver, over the last
layer when all parameters would take too long (:mod:`relabel.influence.scope`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relabel.errors import InputError
from relabel.models.base import ModelSettings
from relabel.models.training import TorchModelKind

if TYPE_CHECKING:
    from torch import nn

CNN_IMAGE_SIZE = 28  # default side in pixels of the CNN's input (8 px pixel features lose too much for it)


class CnnModel(TorchModelKind):
    name = "cnn"
    description = "small convolutional network for images: damped self-influence, iterative solver"
    inputs = "images"
    default_image_size = CNN_IMAGE_SIZE

    def build(self, input_shape: tuple[int, ...], n_classes: int, settings: ModelSettings) -> nn.Module:
        from relabel.torch_models import build_cnn

        if len(input_shape) != 3:
            raise InputError(f"model 'cnn' needs images (C, H, W); got items of shape {input_shape}")
        return build_cnn((int(input_shape[0]), int(input_shape[1]), int(input_shape[2])), n_classes)
