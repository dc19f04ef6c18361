"""Eigenvalue-corrected Kronecker-factored curvature (EK-FAC) as a preconditioner P ≈ H + δI.

For a linear layer s = W a (bias folded in as a constant input 1, so W is out × (in + 1)), the
Gauss–Newton block of the mean cross-entropy loss is exactly (docs/maths.md, § Preconditioned LiSSA)

    G_W = (1/n) Σ_i (B_i B_iᵀ) ⊗ (a_i a_iᵀ),      B_i = J_{s,i}ᵀ F_i,   F_i F_iᵀ = diag(p_i) − p_i p_iᵀ,

with J_{s,i} the Jacobian of the logits with respect to the layer's outputs and F_i = [√p_c (e_c − p_i)]_c
(a square root of the softmax Hessian that needs no eigendecomposition). K-FAC replaces the mean of the
Kronecker products by the product of the means, S = (1/n) Σ B_i B_iᵀ and A = (1/n) Σ a_i a_iᵀ, with
eigenvectors U (of S) and V (of A); EK-FAC (George et al. 2018) keeps that eigenbasis but replaces the
eigenvalues by the exact diagonal of G_W in it:

    d_kl = (1/n) Σ_i ‖B_iᵀ u_k‖² (v_lᵀ a_i)²,      P_W = (U ⊗ V) diag(d + λ + δ) (U ⊗ V)ᵀ.

P is block-diagonal over layers (cross-layer curvature is dropped) and symmetric positive definite
(d ≥ 0, λ + δ > 0), so P⁻¹ and P^{-1/2} cost two small matrix products per layer and vector. Chosen
parameters that are not the weight (and bias) of an ``nn.Linear`` get the scalar block
(mean of the linear blocks' d + λ + δ)·I. P only changes how fast an iteration converges, never what it
converges to: the solvers still apply the true H + δI.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from relabel.influence.torch_objective import TorchObjective


@dataclass
class _LinearBlock:
    """One nn.Linear's slice of θ: weight at [weight_start, +out·in), optional bias at bias_start."""

    weight_start: int
    bias_start: int | None
    n_out: int
    n_in: int
    output_basis: torch.Tensor  # U, (out, out)
    input_basis: torch.Tensor  # V, (in + 1 or in, same)
    inverse_eigenvalues: torch.Tensor  # 1 / (d + λ + δ), (out, in')


class KroneckerPreconditioner:
    """P ≈ H + δI from EK-FAC blocks of the model's ``nn.Linear`` layers (see the module docstring).

    ``apply_inverse(V)`` returns P⁻¹vᵢ and ``apply_inverse_sqrt(V)`` P^{-1/2}vᵢ for each row of V (m, p).
    """

    def __init__(self, objective: TorchObjective, damping: float) -> None:
        self.n_parameters = objective.n_parameters
        self.shift = objective.weight_decay + float(damping)
        self.blocks = _linear_blocks(objective, self.shift)
        covered = sum(block.inverse_eigenvalues.numel() for block in self.blocks)
        self.covered_fraction = covered / max(self.n_parameters, 1)
        if self.blocks:
            mean = torch.cat([1.0 / block.inverse_eigenvalues.reshape(-1) for block in self.blocks]).mean()
            self.rest_eigenvalue = float(mean)
        else:
            self.rest_eigenvalue = self.shift + 1.0
        self.smallest_eigenvalue = float(
            min([self.rest_eigenvalue, *[1.0 / b.inverse_eigenvalues.max() for b in self.blocks]])
        )
        self.largest_eigenvalue = float(
            max([self.rest_eigenvalue, *[1.0 / b.inverse_eigenvalues.min() for b in self.blocks]])
        )
        mask = torch.ones(self.n_parameters, dtype=torch.bool, device=objective.device)
        for block in self.blocks:
            mask[block.weight_start : block.weight_start + block.n_out * block.n_in] = False
            if block.bias_start is not None:
                mask[block.bias_start : block.bias_start + block.n_out] = False
        self.rest = mask

    def _apply(self, vectors: torch.Tensor, power: float) -> torch.Tensor:
        result = vectors * (self.rest.to(vectors.dtype) * self.rest_eigenvalue**-power)
        m = vectors.shape[0]
        for block in self.blocks:
            weight_end = block.weight_start + block.n_out * block.n_in
            weight = vectors[:, block.weight_start : weight_end].reshape(m, block.n_out, block.n_in)
            if block.bias_start is not None:
                bias = vectors[:, block.bias_start : block.bias_start + block.n_out, None]
                weight = torch.cat([weight, bias], dim=2)
            output_basis = block.output_basis.to(vectors.dtype)
            input_basis = block.input_basis.to(vectors.dtype)
            rotated = output_basis.T @ weight @ input_basis
            rotated = rotated * block.inverse_eigenvalues.to(vectors.dtype) ** power
            back = output_basis @ rotated @ input_basis.T
            result[:, block.weight_start : weight_end] = back[:, :, : block.n_in].reshape(m, -1)
            if block.bias_start is not None:
                result[:, block.bias_start : block.bias_start + block.n_out] = back[:, :, block.n_in]
        return result

    def apply(self, vectors: torch.Tensor) -> torch.Tensor:
        """P vᵢ for each row of ``vectors`` (m, p)."""
        return self._apply(vectors, -1.0)

    def apply_inverse(self, vectors: torch.Tensor) -> torch.Tensor:
        """P⁻¹ vᵢ for each row of ``vectors`` (m, p)."""
        return self._apply(vectors, 1.0)

    def apply_inverse_sqrt(self, vectors: torch.Tensor) -> torch.Tensor:
        """P^{-1/2} vᵢ for each row (the symmetric split used for the preconditioned spectrum)."""
        return self._apply(vectors, 0.5)

    def describe(self) -> str:
        return f"EK-FAC on {len(self.blocks)} linear layer(s), {self.covered_fraction:.0%} of θ"


class IdentityPreconditioner:
    """P = I (textbook LiSSA, plain CG). Every product returns a copy: the solvers update residuals in
    place and must not alias them."""

    smallest_eigenvalue = largest_eigenvalue = 1.0

    def apply(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors.clone()

    apply_inverse = apply_inverse_sqrt = apply

    def describe(self) -> str:
        return "none"


PRECONDITIONERS = ("ekfac", "none")


def check_preconditioner(name: str) -> None:
    """Refuse an unknown ``preconditioner`` setting (solvers call it before any expensive work)."""
    if name not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}; got {name!r}")


def build_preconditioner(
    name: str, objective: TorchObjective, damping: float
) -> KroneckerPreconditioner | IdentityPreconditioner:
    """The ``preconditioner`` setting of the LiSSA and CG solvers: "ekfac" or "none"."""
    check_preconditioner(name)
    return KroneckerPreconditioner(objective, damping) if name == "ekfac" else IdentityPreconditioner()


def _linear_blocks(objective: TorchObjective, shift: float) -> list[_LinearBlock]:
    """EK-FAC factors of every nn.Linear whose weight is in θ (bias too when chosen)."""
    offsets, start = {}, 0
    for name, size in zip(objective.parameter_names, objective.sizes, strict=True):
        offsets[name] = start
        start += size
    linears = {
        name: module
        for name, module in objective.model.named_modules()
        if isinstance(module, nn.Linear) and _qualified(name, "weight") in offsets
    }
    if not linears:
        return []
    inputs, output_factors = _layer_statistics(objective, linears)
    blocks = []
    for name, module in linears.items():
        has_bias = module.bias is not None and _qualified(name, "bias") in offsets
        a = inputs[name]
        if has_bias:
            a = torch.cat([a, torch.ones_like(a[:, :1])], dim=1)
        b = output_factors[name]  # (n, out, C)
        n = a.shape[0]
        input_covariance = a.T @ a / n
        output_covariance = torch.einsum("ioc,ipc->op", b, b) / n
        input_basis = torch.linalg.eigh(input_covariance).eigenvectors
        output_basis = torch.linalg.eigh(output_covariance).eigenvectors
        projected_outputs = (torch.einsum("ioc,ok->ikc", b, output_basis) ** 2).sum(2)  # (n, out)
        projected_inputs = (a @ input_basis) ** 2  # (n, in')
        diagonal = projected_outputs.T @ projected_inputs / n
        blocks.append(
            _LinearBlock(
                weight_start=offsets[_qualified(name, "weight")],
                bias_start=offsets[_qualified(name, "bias")] if has_bias else None,
                n_out=module.out_features,
                n_in=module.in_features,
                output_basis=output_basis,
                input_basis=input_basis,
                inverse_eigenvalues=1.0 / (diagonal.clamp_min(0.0) + shift),
            )
        )
    return blocks


def _qualified(module_name: str, parameter: str) -> str:
    """The parameter's name in ``named_parameters`` (a root module has the empty name)."""
    return f"{module_name}.{parameter}" if module_name else parameter


def _layer_statistics(
    objective: TorchObjective, linears: dict[str, nn.Module]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per item: each layer's input a_i and B_i = J_{s,i}ᵀ F_i (n, out, C), by one forward pass and C
    backward passes per data chunk (hooks record the layer inputs and outputs)."""
    records: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []

    def hook_for(name: str):
        def record(_module, module_inputs, output) -> None:
            records[name] = (module_inputs[0].detach(), output)

        return record

    for name, module in linears.items():
        handles.append(module.register_forward_hook(hook_for(name)))
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    factors: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    theta = objective.theta.detach().requires_grad_(True)
    try:
        for start in range(0, objective.n_items, objective.data_chunk_size):
            chunk = slice(start, start + objective.data_chunk_size)
            logits = objective.outputs(theta, objective.X[chunk])
            probabilities = torch.softmax(logits.detach(), dim=1)
            n_classes = probabilities.shape[1]
            eye = torch.eye(n_classes, dtype=logits.dtype, device=logits.device)
            # F_i[:, c] = √p_c (e_c − p_i)
            square_root = (eye[None, :, :] - probabilities[:, :, None]) * probabilities.sqrt()[:, None, :]
            outputs = [records[name][1] for name in linears]
            per_class = []
            for c in range(n_classes):
                grads = torch.autograd.grad(logits, outputs, square_root[:, :, c], retain_graph=True)
                per_class.append(grads)
            for index, name in enumerate(linears):
                inputs[name].append(records[name][0].reshape(logits.shape[0], -1))
                factors[name].append(torch.stack([g[index] for g in per_class], dim=2).detach())
    finally:
        for handle in handles:
            handle.remove()
    return (
        {name: torch.cat(parts) for name, parts in inputs.items()},
        {name: torch.cat(parts) for name, parts in factors.items()},
    )
