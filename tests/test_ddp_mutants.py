"""DDP-NOpt building blocks that one-line bugs would break (found by mutation testing: each test
here failed on a realistic mutant that the rest of the suite let through)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynopt.ddp.layers import post_derivatives


@pytest.mark.parametrize("chain", [
    [nn.Tanh()], [nn.Sigmoid()], [nn.ELU(alpha=0.7)], [nn.Softplus(beta=2.5)],
    [nn.Softplus(beta=0.5), nn.Tanh()], [nn.LeakyReLU(0.1), nn.Sigmoid()],
], ids=lambda c: "-".join(type(m).__name__ for m in c))
def test_activation_derivatives_equal_autograd(chain):
    # post_derivatives returns σ' and σ'' of the elementwise chain at the pre-activation h:
    # compare with autograd's first and second derivatives, for non-default β, α and slopes
    # (points chosen away from the kinks of ELU/LeakyReLU and below Softplus's threshold).
    h = torch.linspace(-2.0, 2.0, 12, dtype=torch.float64).reshape(3, 4) + 0.013
    inputs, outputs, x = [], [], h
    for m in chain:
        inputs.append(x)
        x = m(x)
        outputs.append(x)
    d1, d2 = post_derivatives(chain, inputs, outputs, h.shape, second=True)

    def sigma(t):
        for m in chain:
            t = m(t)
        return t

    t = h.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(sigma(t).sum(), t, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), t)
    torch.testing.assert_close(d1, g1.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d2, g2, rtol=1e-12, atol=1e-14)
