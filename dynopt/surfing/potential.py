r"""The latent-recovery loss of one network snapshot as a dynopt potential.

.. math:: U_k(x) = \tfrac12 \lVert A\,G_{\theta_k}(x) - y \rVert^2

evaluated for a batch of chains ``x`` of shape ``(n, d)`` against targets ``y`` of shape
``(n, m)`` (chain i recovers target i), with the value in torch and the gradient by autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..potentials import Custom

__all__ = ["generator_fn", "reconstruction_potential"]


def generator_fn(snapshot: nn.Module | Mapping[str, Tensor], model: nn.Module | None
                 ) -> Callable[[Tensor], Tensor]:
    """``z -> G_θ(z)`` flattened to ``(n, n_out)`` for a module or a state dict (loaded into
    ``model`` functionally, without touching the model's own parameters)."""
    if isinstance(snapshot, nn.Module):
        def g(z: Tensor) -> Tensor:
            return snapshot(z).reshape(z.shape[0], -1)
        return g
    assert model is not None
    params = dict(snapshot)

    def g_sd(z: Tensor) -> Tensor:
        return functional_call(model, params, (z,)).reshape(z.shape[0], -1)
    return g_sd


def reconstruction_potential(gen: Callable[[Tensor], Tensor], y: Tensor, a: Tensor | None,
                             dim: int, name: str, net_dtype: torch.dtype | None = None
                             ) -> Custom:
    """``U(x) = ½‖A G(x) − y‖²`` per chain as a :class:`~dynopt.potentials.Custom` potential.

    Args:
        gen: ``z (n, d) -> (n, n_out)``.
        y: Targets ``(n, m)``.
        a: Measurement matrix ``(m, n_out)`` or None (A = I).
        dim: Latent dimension d.
        name: Label.
        net_dtype: The network's dtype (the codes are cast to it and its outputs back to the
            targets' dtype; default: the targets' dtype).
    """

    def value(q: Tensor) -> Tensor:
        lead = q.shape[:-1]
        out = gen(q.reshape(-1, dim).to(net_dtype or y.dtype)).to(y.dtype)
        if a is not None:
            out = out @ a.T
        r = out.reshape(*lead, -1) - y
        return 0.5 * (r * r).sum(-1).to(q.dtype)

    def grad(q: Tensor) -> Tensor:
        with torch.enable_grad():
            x = q.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(value(x).sum(), x)
        return g

    return Custom(dim, value=value, grad=grad, name=name)
