r"""A lean batched path for the commonest network: ``nn.Sequential`` of ``Linear`` layers and
elementwise activations, evaluated for all chains without ``torch.func`` transforms.

For chains c = 1..C with weights W_c (out × in) and biases b_c, a ``Linear`` maps activations
h of shape (C, n, in) to ``baddbmm(b_c, h, W_cᵀ)``; an elementwise activation acts on the
(C, n, ·) tensor as it is. The per-chain losses come from the loss under ``vmap`` (one vmapped
call, cheap next to the network) and the gradients of all chains from one ordinary
``torch.autograd.grad`` of their sum (chains do not interact, so ∂(Σ_c L_c)/∂θ_c = ∇L_c). This
computes the same function as the generic ``functional_call`` + ``vmap`` path of
:class:`~dynopt.potentials.NetworkLoss` (tested to 1e-13) with a fraction of its per-call
overhead, which dominates for small models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import vmap

__all__ = ["ELEMENTWISE", "BatchedMLP"]

#: Parameter-free modules that act elementwise (shape-agnostic), allowed between Linear layers.
ELEMENTWISE = (nn.Identity, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU,
               nn.LeakyReLU, nn.Softplus, nn.Mish, nn.Hardtanh, nn.Softsign)


class BatchedMLP:
    """Loss and gradient of an MLP for a batch of flat parameter vectors.

    Args:
        model: The ``nn.Sequential`` (checked with :meth:`supports`).
        loss_fn: ``loss_fn(output, targets)`` mean loss.
        layers: Parameter name -> slice of θ (``NetworkLoss.layers``).
    """

    def __init__(self, model: nn.Sequential, loss_fn: Callable[..., torch.Tensor],
                 layers: dict[str, slice]) -> None:
        self.steps: list[tuple[Any, ...]] = []
        for name, mod in model.named_children():
            if isinstance(mod, nn.Linear):
                w = layers[f"{name}.weight"]
                b = layers.get(f"{name}.bias")
                self.steps.append(("linear", w, b, mod.out_features, mod.in_features))
            else:
                self.steps.append(("act", mod))
        self._loss = vmap(loss_fn, in_dims=(0, None))

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is a Sequential of Linear layers and elementwise activations with no
        buffers, no hooks and no sharing (so that the batched evaluation is the same function):
        a module used at two positions, or a weight tied between two layers, is left to the
        general path (``children()`` lists a repeated module once, and θ holds a shared
        parameter once)."""
        if type(model) is not nn.Sequential or any(True for _ in model.buffers()):
            return False
        entries = [m for m in model._modules.values() if m is not None]
        if len({id(m) for m in entries}) != len(entries):
            return False
        params = [p for m in entries for p in m.parameters(recurse=False)]
        if len({id(p) for p in params}) != len(params):
            return False
        for mod in model.children():
            if type(mod) is nn.Linear:
                continue
            if type(mod) not in ELEMENTWISE or any(True for _ in mod.parameters()):
                return False
        return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())

    def losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-chain mean losses, shape ``(C,)``, for θ of shape ``(C, dim)``."""
        c = theta.shape[0]
        h = x.unsqueeze(0).expand(c, *x.shape)
        for step in self.steps:
            if step[0] == "linear":
                _, ws, bs, out, inp = step
                w = theta[:, ws].view(c, out, inp).transpose(1, 2)
                if bs is None:
                    h = torch.matmul(h, w)
                else:
                    h = torch.baddbmm(theta[:, bs].unsqueeze(1), h, w)
            else:
                h = step[1](h)
        return self._loss(h, y)

    def grad_and_value(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇L_c, L_c) for all chains: ``(C, dim)`` and ``(C,)``."""
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            val = self.losses(t, x, y)
            (g,) = torch.autograd.grad(val.sum(), t)
        return g, val.detach()

    def grad_and_hvp(self, theta: torch.Tensor, z: torch.Tensor, x: torch.Tensor,
                     y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇L_c, ∇²L_c z) for probes ``z`` of shape ``(C, k, dim)``: reverse over reverse, one
        backward per probe through the graph of one gradient, which is returned too. Chains do
        not interact (L_c reads only θ_c), so the gradient of Σ_c ∇L_c·z_c with respect to θ_c
        is chain c's product."""
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.losses(t, x, y).sum(), t, create_graph=True)
            k = z.shape[1]
            out = [torch.autograd.grad((g * z[:, j]).sum(), t, retain_graph=j + 1 < k)[0]
                   for j in range(k)]
        return g.detach(), torch.stack(out, dim=1)
