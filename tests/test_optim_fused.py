"""The fused CPU path: counter-based noise (thread-count independence, moments), and agreement
with the torch paths in distribution."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch

from dynopt.backends.numba import segment_kernel as k
from dynopt.optim import Langevin, OverdampedLangevin
from dynopt.program import OpCode


def _kernel_noise(n: int, dtype: type, kind: int, stream: int = 0, step: int = 0, serial=False
                  ) -> np.ndarray:
    """p ← 0·p + 1·R on a zero buffer: the kernel's raw noise for one tensor."""
    p = torch.zeros(n, dtype=torch.float32 if dtype is np.float32 else torch.float64)
    th = torch.zeros_like(p)
    like = np.zeros(1, dtype=dtype)
    coef = np.array([[[0.0, 1.0]]], dtype=dtype)
    work = np.array([(0, b) for b in range(0, n, k.BLOCK)], dtype=np.int64)
    zbuf = np.zeros((numba.config.NUMBA_NUM_THREADS, k.WORKSPACE), dtype=dtype)
    fn = k.run_segment_serial if serial else k.run_segment
    ptr = np.array([th.data_ptr()], dtype=np.int64)
    fn(like, np.array([int(OpCode.OU)]), np.zeros(1, dtype=np.int64), coef, ptr,
       np.array([p.data_ptr()]), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64),
       np.array([n]), np.array([stream]), work, np.uint64(7), np.uint64(0), step, kind, False,
       np.zeros(1), zbuf)
    return p.numpy().astype(np.float64)


def test_noise_is_independent_of_threads_and_schedule():
    n = 3 * k.BLOCK * 17 + 5  # several blocks, a ragged last one
    ref = _kernel_noise(n, np.float64, 0)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _kernel_noise(n, np.float64, 0)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(ref, one)
    assert np.array_equal(ref, _kernel_noise(n, np.float64, 0, serial=True))
    # different stream or step: different numbers
    assert not np.allclose(ref, _kernel_noise(n, np.float64, 0, stream=1))
    assert not np.allclose(ref, _kernel_noise(n, np.float64, 0, step=1))


def test_gaussian_noise_moments_and_float32_transform():
    n = 400_000
    z = _kernel_noise(n, np.float64, 0)
    z32 = _kernel_noise(n, np.float32, 0)
    assert np.abs(z - z32).max() < 3e-5  # same Philox words, float32 Box–Muller
    for power, exact in ((1, 0.0), (2, 1.0), (3, 0.0), (4, 3.0)):
        v = z**power
        se = v.std() / math.sqrt(n)
        assert abs(v.mean() - exact) < 4 * se, (power, v.mean(), se)
        # and the SE is the exact one, √(Var zᵏ / n) (Var z, z², z³, z⁴ = 1, 2, 15, 96)
        assert se < 1.1 * math.sqrt({1: 1.0, 2: 2.0, 3: 15.0, 4: 96.0}[power] / n), (power, se)
    # neighbouring elements are uncorrelated (the layout interleaves Philox words)
    r = np.corrcoef(z[:-1], z[1:])[0, 1]
    assert abs(r) < 4 / math.sqrt(n)


def test_discrete_noise_values_and_moments():
    n = 400_000
    z = _kernel_noise(n, np.float64, 1)
    a = k.DISCRETE_VALUE
    assert set(np.unique(z)) == {-a, 0.0, a}
    p_plus, p_minus = (z == a).mean(), (z == -a).mean()
    se = math.sqrt((1 / 6) * (5 / 6) / n)
    p = 10923 / 65536
    assert abs(p_plus - p) < 4 * se and abs(p_minus - p) < 4 * se
    assert a * a * 2 * p == pytest.approx(1.0, abs=1e-15)  # E z² = 1 exactly
    assert a**4 * 2 * p == pytest.approx(3.0, abs=1e-4)  # E z⁴ = 2.99991


@pytest.mark.parametrize(("path", "noise"), [({"fused": True}, "gaussian"),
                                             ({"fused": True}, "discrete"),
                                             ({"foreach": True}, "gaussian")])
def test_fused_and_foreach_sample_the_same_invariant_measure(path, noise):
    """BAOAB's configurational variance on a quadratic is exactly τ/ω² for any noise with unit
    variance: each path's ⟨ω²θ²⟩ must equal τ within 4 SE (over independent replicas)."""
    tau, h, gamma = 0.3, 0.2, 1.0
    omega = torch.linspace(0.5, 2.0, 20, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(256, 20, generator=g, dtype=torch.float64) * (math.sqrt(tau) / omega)
    opt = Langevin([theta], lr=h, gamma=gamma, temperature=tau, noise=noise, seed=4, **path)
    acc = torch.zeros(256, dtype=torch.float64)
    n, burn = 1000, 200
    for step in range(n):
        theta.grad = omega**2 * theta
        opt.step()
        if step >= burn:
            acc += (omega**2 * theta**2).mean(1)
    est = acc / (n - burn)
    mean, se = float(est.mean()), float(est.std() / math.sqrt(est.numel()))
    assert abs(mean - tau) < 4 * se, (mean, se)
    # SE against independent draws (Var of a mean of 20 χ²-modes: 2τ²/20) times 2× the
    # measured correlation factor (3.2–3.3 on every path)
    assert se < 6.5 * math.sqrt(2 * tau**2 / 20 / (256 * 800)), se


def test_fused_lm_equals_foreach_at_zero_temperature():
    """The overdamped Leimkuhler–Matthews path (GRAD_STEP, LM_NOISE with its memory) matches."""
    torch.manual_seed(0)
    x0 = torch.randn(5000)
    out = []
    for path in ({"fused": True}, {"foreach": True}):
        x = x0.clone()
        opt = OverdampedLangevin([x], lr=0.1, temperature=0.0, scheme="lm", **path)
        for _ in range(20):
            x.grad = x**3 - x
            opt.step()
        out.append(x)
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_finite_check_on_large_models(bad, dtype):
    """Large CPU models are checked by the numba integer scan (dynopt.optim.finite): a single
    NaN/inf still raises DivergenceError before anything changes, and the scan agrees with
    torch.isfinite on every element position class (first, last, block boundary)."""
    from dynopt.errors import DivergenceError
    from dynopt.optim import finite

    ps = [torch.zeros(700_000, dtype=dtype) for _ in range(2)]
    for p in ps:
        p.grad = torch.ones_like(p)
    assert sum(p.numel() for p in ps) >= finite.FAST_ABOVE
    opt = Langevin(ps, lr=0.1, temperature=0.0)
    opt.step()
    for where in (0, 2047, 2048, 654_321, 699_999):
        ps[1].grad[where] = bad
        assert not finite.all_finite([p.grad for p in ps])
        ps[1].grad[where] = 1.0
    assert finite.all_finite([p.grad for p in ps])
    before = [p.clone() for p in ps] + [opt.state[p]["momentum_buffer"].clone() for p in ps]
    ps[1].grad[654_321] = bad
    with pytest.raises(DivergenceError, match="parameter 1"):
        opt.step()
    after = list(ps) + [opt.state[p]["momentum_buffer"] for p in ps]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    ps[1].grad[654_321] = 1.0
    opt.step()
    assert opt.step_count == 2


@pytest.mark.parametrize("which, bad, message", [
    ("mom", lambda p: torch.zeros(p.numel() + 1), "momentum_buffer tensor"),
    ("mom", lambda p: torch.zeros(p.numel(), dtype=torch.float64), "momentum_buffer tensor"),
    ("mom", lambda p: torch.zeros(p.numel(), 2)[:, 0], "not contiguous"),
    ("mom", lambda p: torch.zeros(p.numel(), device="meta"), "momentum_buffer tensor"),
    ("grad", lambda p: torch.zeros(2 * p.numel())[::2], "not contiguous"),
    ("prev", lambda p: torch.zeros(p.numel() - 1), "noise_prev tensor"),
])
def test_fused_runner_refuses_a_buffer_the_kernel_cannot_address(which, bad, message):
    """The last check before raw-pointer access (fused._check_buffers): every buffer the kernel
    addresses has its parameter's element count, the bucket's dtype, contiguous CPU memory."""
    from dynopt.optim.executor import Bucket
    from dynopt.optim.fused import _check_buffers

    ps = [torch.zeros(5), torch.zeros(7)]
    b = Bucket(device=torch.device("cpu"), dtype=torch.float32, path="fused", idx=[0, 1],
               streams=[0, 1], theta=list(ps), mom=[torch.zeros(5), torch.zeros(7)],
               grad=[torch.zeros(5), torch.zeros(7)], prev=[torch.zeros(5), torch.zeros(7)])
    codes = np.array([int(OpCode.KICK), int(OpCode.LM_NOISE)], dtype=np.int64)
    _check_buffers(b, codes, False, b.numels)  # all fit
    getattr(b, which)[1] = bad(ps[1])
    with pytest.raises(ValueError, match=message):
        _check_buffers(b, codes, False, b.numels)
    getattr(b, which).pop()
    with pytest.raises(ValueError, match="a state entry is missing"):
        _check_buffers(b, codes, False, b.numels)
