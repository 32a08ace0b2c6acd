"""The fused kick–drift kernels round like torch's foreach ops, so the execution paths agree.

HeavyBall's and BBI's fused kernels (``dynopt/backends/numba/kick_drift_kernels.py``) computed
p ← c·p − h·g and θ ← θ + h·p with a rounding after every product; torch's ``mul_`` then
``add_(alpha=)`` rounds the product inside an fma. HeavyBall's fused path therefore drifted from
its foreach and single-tensor paths by one float32 ulp per step (1.5e-8 after three steps on a
4 × 3 tensor), against docs/optimizers.md's "bit for bit equal at τ = 0", and a parameter whose
gradient turned non-contiguous (which sends it to the foreach path) changed its trajectory. Found
by a line-coverage run: no test had given HeavyBall a non-contiguous gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynopt.backends.numba.kick_drift_kernels import PARALLEL_MIN, bbi_kick_drift, heavy_ball_step
from dynopt.optim import HeavyBall

DTYPES = [torch.float32, torch.float64]
SIZES = [13, PARALLEL_MIN + 9]  # the serial kernel, and the parallel one (with a tail)


def _arrays(n: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, generator=g, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_heavy_ball_kernel_equals_torch_mul_then_add(n, dtype):
    theta, mom, grad = _arrays(n, dtype)
    c, h = 0.9, 0.1
    t_ref, m_ref = theta.clone(), mom.clone()
    m_ref.mul_(c).add_(grad, alpha=-h)
    t_ref.add_(m_ref, alpha=h)
    cast = theta.numpy().dtype.type
    heavy_ball_step(theta.numpy(), mom.numpy(), grad.numpy(), cast(c), cast(h))
    assert torch.equal(mom, m_ref) and torch.equal(theta, t_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_bbi_kernel_equals_torch_mul_then_add(n, dtype):
    """Also its returned |Π|²: the float64 sum of the new momenta's squares (to the rounding of
    a blocked sum)."""
    theta, mom, grad = _arrays(n, dtype, seed=1)
    r, a, d = 0.97, 0.03, 0.2
    t_ref, m_ref = theta.clone(), mom.clone()
    m_ref.mul_(r).add_(grad, alpha=-a)
    t_ref.add_(m_ref, alpha=d)
    cast = theta.numpy().dtype.type
    ps2 = bbi_kick_drift(theta.numpy(), mom.numpy(), grad.numpy(), cast(r), cast(a), cast(d))
    assert torch.equal(mom, m_ref) and torch.equal(theta, t_ref)
    exact = float(np.sum(m_ref.numpy().astype(np.float64) ** 2))
    assert ps2 == pytest.approx(exact, rel=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_heavy_ball_paths_agree_bit_for_bit(n, dtype):
    """fused, foreach and single-tensor: the same θ and momentum after five steps."""
    w0, *grads = _arrays(n, dtype, seed=2) + _arrays(n, dtype, seed=3)
    results = []
    for kw in ({"fused": True}, {"foreach": True}, {"foreach": False}):
        p = torch.nn.Parameter(w0.clone())
        opt = HeavyBall([p], lr=0.1, gamma=0.7, **kw)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        results.append((p.detach().clone(), opt.state[p]["momentum"].clone()))
    assert not torch.equal(results[0][0], w0)
    for theta, mom in results[1:]:
        assert torch.equal(theta, results[0][0]) and torch.equal(mom, results[0][1])


def test_a_non_contiguous_gradient_does_not_change_heavy_ball_s_trajectory():
    """A transposed gradient is not fusable, so that step runs on the foreach path; the
    trajectory must be the one the contiguous gradient gives."""
    torch.manual_seed(0)
    w0 = torch.randn(4, 3)
    g = torch.randn(3, 4).t()
    assert not g.is_contiguous()
    runs = []
    for grad in (g, g.contiguous()):
        p = torch.nn.Parameter(w0.clone())
        opt = HeavyBall([p], lr=0.1)
        for _ in range(3):
            p.grad = grad.clone(memory_format=torch.preserve_format)
            assert p.grad.is_contiguous() == grad.is_contiguous()
            opt.step()
        runs.append(p.detach().clone())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], w0)
