"""The snapshot-free result check (dynopt.optim.bound): taken for ordinary steps, identical to
the snapshot path, refused (and the snapshot path rolls back exactly) whenever it cannot prove
the step finite."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from dynopt.errors import DivergenceError
from dynopt.optim import HeavyBall, Langevin, OverdampedLangevin
from dynopt.optim.bound import NORMAL_BOUND, TORCH_NORMAL_BOUND, _linear_ops_bound
from dynopt.optim.finite import FAST_ABOVE, abs_max
from dynopt.program import Op, OpCode

CASES = [(Langevin, {}), (Langevin, {"noise": "discrete"}), (OverdampedLangevin, {}),
         (HeavyBall, {}), (HeavyBall, {"foreach": True}),
         # torch's normals (TORCH_NORMAL_BOUND): the foreach path (CUDA's default) and the
         # single-tensor path, Gaussian and discrete, and the LM scheme's noise memory
         (Langevin, {"foreach": True}), (Langevin, {"foreach": False, "noise": "discrete"}),
         (OverdampedLangevin, {"foreach": True, "scheme": "lm"})]


def _run(cls, kw, n, steps, bounded=True, seed=0):
    torch.manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(n))
    opt = cls([p], lr=0.01, seed=5, **kw)
    if not bounded:
        opt._result_bounded = lambda *_: False
    for _ in range(steps):
        p.grad = p.detach() * 2.0 + 0.1
        opt.step()
    return p, opt


@pytest.mark.parametrize("cls,kw", CASES)
@pytest.mark.parametrize("n", [100, FAST_ABOVE + 3])
def test_ordinary_steps_take_the_bound_and_match_the_snapshot_path(cls, kw, n):
    """After the first step (which creates the state: snapshot), every step is proven finite
    without a snapshot, and the result is bit-identical to the snapshot path. Catches: the fast
    path never taken (a bound that is always inf), or a fast path that changes the update."""
    p, opt = _run(cls, kw, n, 5)
    assert opt.result_checks == {"bound": 4, "snapshot": 1}
    q, ref = _run(cls, kw, n, 5, bounded=False)
    assert ref.result_checks == {"bound": 0, "snapshot": 5}
    assert torch.equal(p.detach(), q.detach())


@pytest.mark.parametrize("cls,kw", CASES)
@pytest.mark.parametrize("n", [100, FAST_ABOVE + 3])
def test_nan_placed_in_a_buffer_between_steps_is_caught_and_undone(cls, kw, n):
    """A NaN written into the momentum between steps (outside the optimizer): the max-scan sees
    it (the write bumped the buffer's version, so the carried bound is not used), the bound
    fails, the snapshot path runs and the step is undone exactly. Catches: a bound carried from
    the previous step although the buffer was written since."""
    p, opt = _run(cls, kw, n, 3)
    key = "momentum" if cls is HeavyBall else "momentum_buffer"
    st = opt.state[p]
    if key not in st:  # overdamped: no momentum, poison θ itself
        with torch.no_grad():
            p[n // 2] = math.nan
    else:
        st[key][n // 2] = math.nan
    before = copy.deepcopy(opt.state_dict())
    theta = p.detach().clone()
    with pytest.raises(DivergenceError,
                       match=r"already held a non-finite value \(NaN/inf\) before step 4"):
        opt.step()
    assert opt.result_checks == {"bound": 2, "snapshot": 2}
    assert _nan_equal(p.detach(), theta)
    after = opt.state_dict()["state"][0]
    for k, v in before["state"][0].items():
        assert _nan_equal(after[k], v) if isinstance(v, torch.Tensor) else after[k] == v


def _nan_equal(a, b):
    return torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))


@pytest.mark.parametrize("cls", [Langevin, HeavyBall])
def test_a_failed_bound_runs_the_snapshot_path_and_the_step_still_happens(cls):
    """θ near the float32 limit (3e38 / 4 < |θ|) but an update that does not overflow: the bound
    cannot prove it, the snapshot path runs, finds the result finite and keeps it (same bits as
    a run with the bound disabled). Catches: a failing bound that skips or undoes a good step."""
    outs = []
    for bounded in (True, False):
        torch.manual_seed(1)
        p = torch.nn.Parameter(torch.randn(64))
        opt = cls([p], lr=1e-3, seed=2, nonfinite="raise")
        if not bounded:
            opt._result_bounded = lambda *_: False
        p.grad = torch.ones(64)
        opt.step()
        with torch.no_grad():
            p[3] = 1e38
        p.grad = torch.ones(64)
        opt.step()
        outs.append((p.detach().clone(), dict(opt.result_checks)))
    assert outs[0][1] == {"bound": 0, "snapshot": 2}
    assert torch.equal(outs[0][0], outs[1][0]) and torch.isfinite(outs[0][0]).all()
    assert float(outs[0][0][3]) != 0.0


def test_bound_of_each_op_and_refusal_of_others():
    """Exact bound arithmetic for a BAOAB-like list, and inf for an op outside the table (a
    thermostat). Catches: a dropped term (e.g. the noise of OU) or accepting unknown ops."""
    ops = [Op(OpCode.KICK, (0.5,)), Op(OpCode.DRIFT, (2.0,)), Op(OpCode.OU, (0.9, 0.3))]
    # Bp: 1 + 0.5·4 = 3; Bθ: 10 + (2/2)·3 = 13; Bp: 0.9·3 + 0.3·√2·7 = 5.6698...
    top, out = _linear_ops_bound(ops, 2.0, 10.0, 1.0, 0.0, 4.0, 7.0)
    assert top == pytest.approx(13.0, rel=1e-15)
    assert out == pytest.approx((13.0, 0.9 * 3 + 0.3 * math.sqrt(2) * 7, 0.0), rel=1e-15)
    top, _ = _linear_ops_bound(ops, 2.0, 1.0, 1.0, 0.0, 4.0, 70.0)
    assert top == pytest.approx(0.9 * 3 + 0.3 * math.sqrt(2) * 70, rel=1e-15)
    assert _linear_ops_bound([Op(OpCode.THERMOSTAT, (0.1,))], 1.0, 1, 1, 0, 1, 7)[0] == math.inf


def test_normal_bound_holds_and_is_tight():
    """|ξ| ≤ NORMAL_BOUND for the smallest uniform (word 0) at every angle, in float64 and
    float32, and the bound is within 0.2% of the largest normal. Catches: a generator change
    that makes larger normals than the bound used by the overflow proof."""
    from dynopt.backends.numba.philox import box_muller, box_muller_f32

    angles = np.concatenate([np.arange(0, 2**32, 2**22, dtype=np.uint64),
                             np.array([2**30 - 1, 2**30, 2**31 - 1, 2**32 - 1], dtype=np.uint64)])
    tops = []
    for fn in (box_muller, box_muller_f32):
        for a in (np.uint64(0), np.uint64(1)):
            for b in angles:
                z0, z1 = fn(a, b)
                tops.append(max(abs(float(z0)), abs(float(z1))))
    assert max(tops) <= NORMAL_BOUND
    assert max(tops) > 0.998 * NORMAL_BOUND
    assert 8 * math.sqrt(math.log(2)) < NORMAL_BOUND


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_normal_bound_covers_torch_normals(dtype):
    """The premise of TORCH_NORMAL_BOUND on this torch: its normals (vectorized fill and the
    short scalar path) stay below the Box–Muller bound of 53-bit uniforms, √(2·53·ln 2), which
    the constant covers with room to spare. Catches: a bound below what torch can draw."""
    g = torch.Generator().manual_seed(0)
    big = torch.randn(2**23, generator=g, dtype=dtype).abs().max().item()
    small = max(torch.randn(7, generator=g, dtype=dtype).abs().max().item() for _ in range(2000))
    box_muller_53 = math.sqrt(2 * 53 * math.log(2))
    assert max(big, small) < box_muller_53 < TORCH_NORMAL_BOUND / 2
    assert big > 4.5  # 2²³ draws reach beyond 4.5 σ (about 57 are expected to): real tails


@pytest.mark.parametrize("n", [10, FAST_ABOVE + 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_abs_max_is_exact_and_flags_nonfinite(n, dtype):
    """max |x| exactly (the negative extreme included), inf for NaN or inf anywhere, on the
    torch path (small) and the numba bit-scan (large). Catches: a signed max, a missed NaN."""
    torch.manual_seed(0)
    ts = [torch.randn(n, dtype=dtype), torch.randn(n // 2 + 1, dtype=dtype)]
    ts[1][-1] = -123.5
    assert abs_max(ts) == 123.5
    assert abs_max([]) == 0.0
    for bad in (math.nan, -math.inf):
        ts[0][n // 2] = bad
        assert abs_max(ts) == math.inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_abs_max_scan_sees_every_element_of_a_full_block(dtype):
    """The numba scan reads full blocks in chunks (prefetching the next block between them):
    an extreme value at each chunk edge, in the first and last full block and in the ragged
    tail, is found. Catches a chunk bound that skips an element."""
    from dynopt.backends.numba.block_memory import _SCAN_CHUNK, BLOCK

    n = max(FAST_ABOVE, 3 * BLOCK) + 11
    positions = [0, _SCAN_CHUNK - 1, _SCAN_CHUNK, BLOCK - 1, BLOCK, n - BLOCK - 12, n - 1]
    for pos in positions:
        ts = [torch.full((n,), 0.5, dtype=dtype), torch.full((5,), 0.25, dtype=dtype)]
        ts[0][pos] = -7.0
        assert abs_max(ts) == 7.0, pos


def test_an_empty_parameter_does_not_send_every_step_to_the_snapshot():
    """The update skips empty tensors (no degrees of freedom), so they never take a first step;
    the bound skips them too. Catches: one empty parameter with a gradient making every step
    snapshot (it had no "step" in its state)."""
    p = torch.nn.Parameter(torch.randn(50))
    empty = torch.nn.Parameter(torch.zeros(0))
    opt = Langevin([p, empty], lr=0.01, seed=5)
    for _ in range(5):
        p.grad, empty.grad = p.detach() * 2.0, torch.zeros(0)
        opt.step()
    assert opt.result_checks == {"bound": 4, "snapshot": 1}
