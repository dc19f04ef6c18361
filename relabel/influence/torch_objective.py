"""A PyTorch model's training objective as a function of a flat parameter vector (torch.func).

For a module f_θ, a per-example loss ℓ(f_θ(x), y) (default: cross-entropy) and weight decay λ
(docs/maths.md, § Deep models):

    J(θ) = (1/n) Σ_i ℓ(f_θ(x_i), y_i) + (λ/2) ‖θ‖²
    g_i  = ∇_θ ℓ(f_θ(x_i), y_i)                 (per-example, regulariser excluded)
    H_B v = ∇²_θ [(1/|B|) Σ_{i∈B} ℓ(f_θ(x_i), y_i)] v + λ v      (Hessian-vector product on batch B)

θ may be a subset of the module's parameters (e.g. only the last layer); the rest are held fixed and
the Hessian is then the block of H for that subset. Products are computed for a whole block of vectors
at once (``torch.func.vmap`` over forward-over-reverse ``jvp(grad(·))``), with no graph kept between
calls, so memory does not grow with the number of iterations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vjp, vmap

from relabel.errors import InputError

HVP_DTYPES = {"float32": torch.float32, "float64": torch.float64}  # hvp_dtype settings of the solvers
PerExampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_per_example(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ℓ_i = −log softmax(outputs_i)[targets_i], shape (m,) (nats)."""
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


def select_parameter_names(model: nn.Module, subset: Sequence[str] | None) -> list[str]:
    """Names of the trainable parameters to differentiate: all, or those equal to / starting with an entry."""
    names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    if subset is None:
        return names
    chosen = [
        name for name in names if any(name == s or name.startswith(s.rstrip(".") + ".") for s in subset)
    ]
    if not chosen:
        raise InputError(f"no model parameter matches {list(subset)}; the model's parameters are {names}")
    return chosen


def modules_with_parameters(model: nn.Module) -> Iterator[tuple[nn.Module, tuple[str, ...]]]:
    """(module, the ``named_parameters`` names of its own trainable parameters) for every module that owns
    any, in registration order (a root module's parameters have no prefix)."""
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        own = tuple(
            prefix + name
            for name, parameter in module.named_parameters(recurse=False)
            if parameter.requires_grad
        )
        if own:
            yield module, own


def owning_module(model: nn.Module, names: Sequence[str] | None) -> nn.Module | None:
    """The module whose own trainable parameters are exactly ``names``; None if no module's are."""
    if names is None:
        return None
    chosen = set(names)
    return next((module for module, own in modules_with_parameters(model) if set(own) == chosen), None)


class TorchObjective:
    """Per-example gradients and batched Hessian-vector products of a module's objective at θ̂.

    ``X``/``y`` are the training inputs and integer targets (moved to ``device``); ``weight_decay`` is λ;
    ``parameter_names`` restricts θ to a subset (see :func:`select_parameter_names`). ``data_chunk_size``
    bounds how many training rows one vmapped call touches (memory ∝ rows × vectors).
    """

    def __init__(
        self,
        model: nn.Module,
        X: torch.Tensor,
        y: torch.Tensor,
        *,
        weight_decay: float,
        loss_fn: PerExampleLoss = cross_entropy_per_example,
        parameter_names: Sequence[str] | None = None,
        data_chunk_size: int = 4096,
    ) -> None:
        self.model = model.eval()
        self.X = X
        self.y = y
        self.weight_decay = float(weight_decay)
        self.loss_fn = loss_fn
        self.data_chunk_size = int(data_chunk_size)
        self.parameter_names = select_parameter_names(model, parameter_names)
        named = dict(model.named_parameters())
        chosen = [named[name].detach() for name in self.parameter_names]
        self.shapes = [tensor.shape for tensor in chosen]
        self.sizes = [tensor.numel() for tensor in chosen]
        self.theta = torch.cat([tensor.reshape(-1) for tensor in chosen])
        self.fixed = {
            name: tensor.detach() for name, tensor in named.items() if name not in set(self.parameter_names)
        }
        self.fixed.update(dict(model.named_buffers()))
        self.n_items = int(X.shape[0])
        self.n_parameters = int(self.theta.numel())

    @property
    def device(self) -> torch.device:
        return self.theta.device

    @property
    def dtype(self) -> torch.dtype:
        return self.theta.dtype

    def for_hvps(self, dtype_name: str) -> TorchObjective:
        """:meth:`with_dtype` by name (``"float32"`` or ``"float64"``, a solver's ``hvp_dtype`` setting)."""
        if dtype_name not in HVP_DTYPES:
            raise ValueError(f"hvp_dtype must be one of {sorted(HVP_DTYPES)}; got {dtype_name!r}")
        return self.with_dtype(HVP_DTYPES[dtype_name])

    def with_dtype(self, dtype: torch.dtype) -> TorchObjective:
        """The same objective at the same θ̂ evaluated in ``dtype`` (e.g. float32 Hessian-vector products).

        A copy of the module, the inputs and the chosen parameters is made in ``dtype``; targets are shared.
        Returns ``self`` when the dtype already matches.
        """
        if dtype == self.dtype:
            return self
        import copy

        model = copy.deepcopy(self.model).to(dtype)
        inputs = self.X.to(dtype) if torch.is_floating_point(self.X) else self.X
        twin = TorchObjective(
            model,
            inputs,
            self.y,
            weight_decay=self.weight_decay,
            loss_fn=self.loss_fn,
            parameter_names=self.parameter_names,
            data_chunk_size=self.data_chunk_size,
        )
        twin.theta = self.theta.to(dtype)
        twin.fixed = {
            name: tensor.to(dtype) if torch.is_floating_point(tensor) else tensor
            for name, tensor in self.fixed.items()
        }
        return twin

    def _parameters_from(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(theta, self.sizes)
        params = {
            name: piece.view(shape)
            for name, piece, shape in zip(self.parameter_names, pieces, self.shapes, strict=True)
        }
        params.update(self.fixed)
        return params

    def outputs(self, theta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """f_θ(inputs) through the module, with θ substituted for the chosen parameters."""
        return functional_call(self.model, self._parameters_from(theta), (inputs,))

    def mean_loss(self, theta: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(1/m) Σ ℓ(f_θ(x_i), y_i) over the given rows (no regulariser)."""
        return self.loss_fn(self.outputs(theta, inputs), targets).mean()

    def _example_loss(self, theta: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.outputs(theta, x.unsqueeze(0)), target.unsqueeze(0)).squeeze(0)

    def per_example_gradients(self, indices: np.ndarray) -> torch.Tensor:
        """Rows g_i = ∇_θ ℓ(f_θ̂(x_i), y_i), shape (m, p), on ``device``."""
        index = torch.as_tensor(indices, device=self.X.device)
        per_example = vmap(grad(self._example_loss), in_dims=(None, 0, 0))
        return per_example(self.theta, self.X[index], self.y[index])

    def hessian_operator(self, rows: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The map V ↦ H_B V + λ V for blocks of vectors V (m, p); B = ``rows`` (indices) or all rows.

        The mean-loss gradient on each data chunk is linearised once (``torch.func.vjp`` of ``grad``,
        reverse-over-reverse; H is symmetric so the vector-Jacobian product is H v); the returned
        function only replays that linearisation, vmapped over the block, so calling it repeatedly
        (every LiSSA iteration) neither recomputes the gradient graph nor grows memory.
        Chunks are weighted by their share of B.
        """
        if rows is None:
            rows = torch.arange(self.n_items, device=self.X.device)
        pieces = []
        for start in range(0, len(rows), self.data_chunk_size):
            chunk = rows[start : start + self.data_chunk_size]
            inputs, targets = self.X[chunk], self.y[chunk]

            def loss_gradient(theta: torch.Tensor, inputs=inputs, targets=targets) -> torch.Tensor:
                return grad(self.mean_loss)(theta, inputs, targets)

            _, pullback = vjp(loss_gradient, self.theta)
            pieces.append((len(chunk) / len(rows), vmap(pullback)))
        weight_decay = self.weight_decay

        def apply(vectors: torch.Tensor) -> torch.Tensor:
            total = weight_decay * vectors
            for weight, batched_pullback in pieces:
                total = total + weight * batched_pullback(vectors)[0]
            return total

        return apply

    def hessian_vector_products(
        self, vectors: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """H_B v + λ v for each row v of ``vectors`` (m, p); see :meth:`hessian_operator`."""
        return self.hessian_operator(rows)(vectors)

    def objective_gradient_norm(self) -> float:
        """‖∇J(θ̂)‖₂ with respect to the chosen parameters (full data, regulariser included)."""
        total = torch.zeros_like(self.theta)
        for start in range(0, self.n_items, self.data_chunk_size):
            inputs = self.X[start : start + self.data_chunk_size]
            targets = self.y[start : start + self.data_chunk_size]
            total += (len(inputs) / self.n_items) * grad(self.mean_loss)(self.theta, inputs, targets)
        return float(torch.linalg.vector_norm(total + self.weight_decay * self.theta))

    def probabilities(self) -> np.ndarray:
        """softmax(f_θ̂(x_i)) for every training row, shape (n, K), float64 numpy."""
        with torch.no_grad():
            parts = [
                torch.softmax(self.outputs(self.theta, self.X[start : start + self.data_chunk_size]), dim=1)
                for start in range(0, self.n_items, self.data_chunk_size)
            ]
        return torch.cat(parts).detach().cpu().double().numpy()
