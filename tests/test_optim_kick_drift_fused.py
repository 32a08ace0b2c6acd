"""HeavyBall's and BBI's fused path: one numba call per (group, dtype), the same bits as before.

The fused path called the kick–drift kernel once per tensor (on a 64-64-64-10 MLP most of the
update's cost); ``dynopt.optim.fused.kick_drift`` now runs every tensor of a bucket in one call.
What must not change: each element is ``fma(g, −k, a·p)`` then ``fma(p, d, θ)`` as torch's
``mul_``/``add_(alpha=)`` round it (so fused, foreach and single-tensor HeavyBall agree bit for
bit), and BBI's |Π|² is each tensor's sum of :data:`REDUCE_BLOCK`-element block sums (eight
running sums per block, combined pairwise), tensors added in parameter order; and nothing is
written when any tensor of the step does not fit the kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynopt.backends.numba.kick_drift_kernels import PARALLEL_MIN, REDUCE_BLOCK
from dynopt.optim import HeavyBall
from dynopt.optim.fused import kick_drift

F32, F64 = torch.float32, torch.float64


def _tensors(spec: list[tuple[tuple[int, ...], torch.dtype]], seed: int
             ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out: tuple[list[torch.Tensor], ...] = ([], [], [])
    for shape, dt in spec:
        for lst in out:
            lst.append(torch.randn(shape, generator=g, dtype=dt))
    return out


def _documented_sum_sq(m: torch.Tensor) -> float:
    """|m|² as the kernel documents it: per block of REDUCE_BLOCK elements, lane j of eight
    sums the float64 squares of elements j, j + 8, … of the block's multiple-of-8 part in order
    (lane 0 then the tail), lanes combined ((0+1)+(2+3))+((4+5)+(6+7)); blocks added in order."""
    sq = m.detach().reshape(-1).numpy().astype(np.float64) ** 2
    total = 0.0
    for lo in range(0, sq.size, REDUCE_BLOCK):
        block = sq[lo:lo + REDUCE_BLOCK]
        body = block.size - block.size % 8
        lanes = [float(np.cumsum(np.concatenate([[0.0], block[j:body:8]]))[-1])
                 for j in range(8)]
        for x in block[body:]:
            lanes[0] += float(x)
        s = lanes
        total += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
    return total


#: A group with both dtypes interleaved, empty tensors, a 0-dim one and ragged blocks.
MIXED = [((5, 3), F32), ((7,), F64), ((0,), F32), ((REDUCE_BLOCK + 13,), F64), ((), F32),
         ((3, 0), F64), ((2 * REDUCE_BLOCK + 5,), F32), ((9,), F64)]
#: Many tensors below PARALLEL_MIN each, above it together: the parallel kernel.
MANY = [((PARALLEL_MIN // 5 + 17,), F32) for _ in range(6)] + [((33,), F32)]


@pytest.mark.parametrize("spec", [MIXED, MANY], ids=["mixed", "parallel"])
@pytest.mark.parametrize("want_sums", [False, True])
def test_one_call_per_bucket_equals_torch_mul_then_add(spec, want_sums):
    """θ and p bit for bit equal to torch's mul_/add_(alpha=) per tensor in its own dtype, and
    |p|² (BBI) equal to the documented blocked sum, tensors added in parameter order."""
    ps, gs, ms = _tensors(spec, seed=1)
    a, k, d = 0.97, 0.03, 0.2
    ref_p, ref_m = [p.clone() for p in ps], [m.clone() for m in ms]
    for p, g, m in zip(ref_p, gs, ref_m, strict=True):
        m.mul_(a).add_(g, alpha=-k)
        p.add_(m, alpha=d)
    total = kick_drift(ps, gs, ms, a, k, d, want_sums=want_sums)
    for x, y in zip(ps + ms, ref_p + ref_m, strict=True):
        assert x.dtype == y.dtype and torch.equal(x, y)
    expected = 0.0
    for m in ref_m:  # tensor by tensor, in parameter order (not per dtype bucket)
        expected += _documented_sum_sq(m)
    assert total == (expected if want_sums else 0.0)


def test_nothing_is_written_when_a_later_tensor_does_not_fit():
    """Catches: checking (and running) tensor by tensor. A momentum of the wrong size in the
    third parameter left the first two updated before the ValueError (nonfinite='ignore' has
    no snapshot to undo it); now every tensor is checked before the kernel runs."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(3)]
    opt = HeavyBall(params, lr=0.1, gamma=0.5, nonfinite="ignore")
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    opt.state[params[2]]["momentum"] = torch.zeros(7)
    before = [p.detach().clone() for p in params] + [
        opt.state[p]["momentum"].clone() for p in params]
    with pytest.raises(ValueError, match="momentum of parameter 2 .*shape \\(7,\\)"):
        opt.step()
    after = [p.detach() for p in params] + [opt.state[p]["momentum"] for p in params]
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))


@pytest.mark.parametrize("which", ["gradient", "momentum", "parameter"])
def test_a_tensor_the_kernel_cannot_address_is_refused_naming_it(which):
    ps, gs, ms = _tensors([((4, 4), F32), ((6,), F64)], seed=2)
    lists = {"parameter": ps, "gradient": gs, "momentum": ms}
    lists[which][0] = torch.randn(4, 4).t()  # not contiguous
    snapshot = [t.clone() for t in ps + ms]
    with pytest.raises(ValueError, match=f"the {which} of parameter 0 .*not contiguous"):
        kick_drift(ps, gs, ms, 0.9, 0.1, 0.1)
    lists[which][0] = torch.randn(4, 4, dtype=F64)  # another dtype than the others of its row
    with pytest.raises(ValueError, match="of parameter 0 .*float64"):
        kick_drift(ps, gs, ms, 0.9, 0.1, 0.1)
    assert all(torch.equal(x, y) for x, y in zip(snapshot[1:2] + snapshot[3:], ps[1:] + ms[1:],
                                                   strict=True))


def _heavy_ball_run(kw: dict[str, object], nonfinite: str) -> list[torch.Tensor]:
    """Three groups (mixed dtypes with empty and 0-dim tensors; a group paused by lr = 0 for
    steps 2–3; a float64 group), five steps; every parameter and momentum at the end."""
    ps, _, _ = _tensors(MIXED, seed=3)
    ps = [torch.nn.Parameter(p.clone()) for p in ps]
    groups = [{"params": ps[:5]}, {"params": ps[5:7], "lr": 0.05}, {"params": ps[7:]}]
    opt = HeavyBall(groups, lr=0.1, gamma=0.7, nonfinite=nonfinite, **kw)
    gen = torch.Generator().manual_seed(4)
    for step in range(5):
        groups[1]["lr"] = 0.0 if step in (2, 3) else 0.05
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()
    return [p.detach().clone() for p in ps] + [opt.state[p]["momentum"].clone() for p in ps]


@pytest.mark.parametrize("nonfinite", ["raise", "ignore"])
def test_heavy_ball_fused_foreach_and_single_agree_bit_for_bit(nonfinite):
    """Mixed dtypes in a group, empty tensors, a paused group: the fused path (one call per
    group and dtype) gives the foreach and the single-tensor paths' bits."""
    fused = _heavy_ball_run({"fused": True}, nonfinite)
    ps0, _, _ = _tensors(MIXED, seed=3)
    assert not torch.equal(fused[0], ps0[0])
    for kw in ({"foreach": True}, {"foreach": False, "fused": False}):
        other = _heavy_ball_run(kw, nonfinite)
        for x, y in zip(fused, other, strict=True):
            assert x.dtype == y.dtype and torch.equal(x, y), kw


def test_sum_sq_of_a_mixed_dtype_group_adds_the_tensors_in_parameter_order():
    """Catches: |Π|² summed per dtype bucket. With p = g (a = 0, k = −1) the three tensors'
    |p|² are 2⁻⁵³ (float32), 1 (float64), 2⁻⁵³ (float32): in parameter order (2⁻⁵³ + 1) + 2⁻⁵³
    rounds to 1 twice (ties to even), bucket by bucket (2⁻⁵³ + 2⁻⁵³) + 1 = 1 + 2⁻⁵²."""
    tiny = 2.0 ** -27  # two elements of tiny² = 2⁻⁵⁴ each: 2⁻⁵³ per tensor
    gs = [torch.full((2,), tiny), torch.ones(1, dtype=F64), torch.full((2,), tiny)]
    ps = [torch.zeros_like(g) for g in gs]
    ms = [torch.zeros_like(g) for g in gs]
    assert kick_drift(ps, gs, ms, 0.0, -1.0, 1.0, want_sums=True) == 1.0
    assert all(torch.equal(m, g) and torch.equal(p, g) for p, g, m in zip(ps, gs, ms,
                                                                           strict=True))
