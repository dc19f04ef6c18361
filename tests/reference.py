"""Brute-force references the fast code is tested against (autograd Hessians, one solve per point)."""

from __future__ import annotations

import numpy as np
import torch

from relabel.logistic import LogisticFit


def logistic_objective_torch(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float):
    """J(θ) of relabel.logistic as a torch function of the class-major flat θ (float64)."""
    X_tilde = torch.tensor(np.hstack([X, np.ones((len(X), 1))]), dtype=torch.float64)
    targets = torch.tensor(y)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        Theta = theta.reshape(n_classes, -1).T
        loss = torch.nn.functional.cross_entropy(X_tilde @ Theta, targets)
        return loss + 0.5 * l2 * (theta * theta).sum()

    def example_gradient(theta: torch.Tensor, i: int) -> torch.Tensor:
        theta = theta.detach().clone().requires_grad_(True)
        Theta = theta.reshape(n_classes, -1).T
        loss = torch.nn.functional.cross_entropy(X_tilde[i : i + 1] @ Theta, targets[i : i + 1])
        (gradient,) = torch.autograd.grad(loss, theta)
        return gradient

    return objective, example_gradient


def brute_force_logistic_influence(X: np.ndarray, y: np.ndarray, fit: LogisticFit):
    """(explicit autograd Hessian H, list of per-example gradients g_i) at the fitted optimum."""
    objective, example_gradient = logistic_objective_torch(X, y, fit.n_classes, fit.l2)
    theta = torch.tensor(np.ascontiguousarray(fit.Theta.T).ravel())
    hessian = torch.autograd.functional.hessian(objective, theta)
    gradients = [example_gradient(theta, i) for i in range(len(X))]
    return hessian, gradients


def _same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow "SAME" zero padding: output side ceil(side/stride); the odd pixel goes right/bottom."""
    height, width = x.shape[-2:]
    pad_h = max((-(-height // stride) - 1) * stride + kernel - height, 0)
    pad_w = max((-(-width // stride) - 1) * stride + kernel - width, 0)
    return torch.nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def efficientnet_lite0_features(state: dict, x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0's pooled 1,280-d features written out with torch.nn.functional from a state dict
    (the lukemelas key names), independently of any model library: stem 3×3/2 → 16 MBConv blocks (1×1
    expand unless ratio 1, k×k depthwise, 1×1 project, batch norm ε = 1e-3 after each conv, ReLU6 after all
    but the projection, identity skip when stride 1 and channels in = out) → 1×1 head to 1,280 → ReLU6 →
    spatial mean. ``x``: (n, 3, H, W) float32 in [−1, 1]."""
    F = torch.nn.functional

    def bn(t: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(
            t, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
            state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-3,
        )

    stages = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
              (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]  # repeats, kernel, stride, expand, out
    h = F.relu6(bn(F.conv2d(_same_padding(x, 3, 2), state["_conv_stem.weight"], stride=2), "_bn0"))
    block = 0
    for repeats, kernel, first_stride, expand, out_channels in stages:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            prefix = f"_blocks.{block}"
            inputs = h
            if expand != 1:
                h = F.relu6(bn(F.conv2d(h, state[f"{prefix}._expand_conv.weight"]), f"{prefix}._bn0"))
            depthwise = state[f"{prefix}._depthwise_conv.weight"]
            padded = _same_padding(h, kernel, stride)
            h = F.conv2d(padded, depthwise, stride=stride, groups=depthwise.shape[0])
            h = F.relu6(bn(h, f"{prefix}._bn1"))
            h = bn(F.conv2d(h, state[f"{prefix}._project_conv.weight"]), f"{prefix}._bn2")
            if stride == 1 and inputs.shape[1] == out_channels:
                h = h + inputs
            block += 1
    h = F.relu6(bn(F.conv2d(h, state["_conv_head.weight"]), "_bn1"))
    return h.mean(dim=(2, 3))
