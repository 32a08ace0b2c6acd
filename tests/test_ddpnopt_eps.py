"""DDPNOpt's ε_Vxx placements (issue 12): Algorithm 3's V_xx ← V_xx + εI after each Bellman
update (propagated, terminal unregularized) against a dense reference of that modified Bellman
recursion; the defaults; the momentum base; errors."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from ddp_dense import dense_step
from test_ddpnopt import _dense_minv, cnn, mlp, train
from torch import nn

from dynopt.optim import DDPNOpt
from dynopt.systems.ddp_layers import Curvature
from dynopt.systems.ddp_trajectory import StagePolicy

VXX_CASES = [
    ("sgd", {"vxx_reg": 0.3}, "mlp"),
    ("sgd", {"vxx_reg": 0.1, "terminal_hessian": "cross-entropy"}, "mlp"),
    ("sgd", {"vxx_reg": 0.2, "costate": "backprop", "expansion": "second-order"}, "mlp"),
    ("adam", {"vxx_reg": 0.3, "feedback_curvature": "batch"}, "mlp"),
    ("adam", {"vxx_reg": 0.05, "terminal_hessian": "identity"}, "mlp"),
    ("sgd", {"vxx_reg": 0.3}, "cnn"),
]


def _one_step(model, x, loss_fn, lr, base, kw):
    opt = DDPNOpt(model, lr=lr, base=base, **kw)
    opt.zero_grad()
    loss_fn(model(x)).backward()
    opt.step()
    return [torch.cat([m.weight.detach().flatten(), m.bias.detach()])
            for m in model if isinstance(m, nn.Linear | nn.Conv2d)]


@pytest.mark.parametrize(("base", "kw", "net"), VXX_CASES)
def test_vxx_placement_equals_the_dense_modified_bellman_recursion(base, kw, net):
    """eps_placement="vxx" against tests/ddp_dense.py with V_xx ← V_xx + εI after every stage's
    Bellman update (dense per-sample matrices, float64, 1e-12): ε reaches Q_xx, Q_ux, V_x and
    V_xx of the earlier layers and not the terminal Hessian."""
    gen = torch.Generator().manual_seed(3)
    if net == "mlp":
        model, x = mlp(dtype=torch.float64), torch.randn(5, 5, dtype=torch.float64, generator=gen)
    else:
        model, x = cnn(), torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=gen)
    y = torch.randn(x.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 2, 1, 1, 0][: x.shape[0]])
    kw = {"terminal_hessian": "outer", "feedback_curvature": "base", "eps_placement": "vxx"} | kw
    ce = kw["terminal_hessian"] == "cross-entropy"

    def loss_fn(out):
        return F.cross_entropy(out, labels) if ce else 0.5 * ((out - y) ** 2).sum(1).mean()

    def terminal_grad(out):
        if ce:
            return torch.softmax(out, 1) - F.one_hot(labels, 3).double()
        return out - y

    lr = 0.3 if base == "sgd" else 0.05
    dense = functools.partial(
        dense_step, model, x, terminal_grad, lr=lr,
        minv=_dense_minv(base, kw["feedback_curvature"] == "batch"),
        minv_open=_dense_minv(base), vxx_reg=kw["vxx_reg"],
        second_order=kw.get("expansion") == "second-order",
        bellman=kw.get("costate", "bellman") == "bellman", terminal_z=kw["terminal_hessian"])
    ref = dense(eps_placement="vxx")
    tassa = dense(eps_placement="qux")
    ours = _one_step(copy.deepcopy(model), x, loss_fn, lr, base, kw)
    no_eps = _one_step(copy.deepcopy(model), x, loss_fn, lr, base, kw | {"vxx_reg": 0.0})
    n = len(ours)
    for t in range(n):
        assert torch.allclose(ours[t], ref["new"][t], rtol=0, atol=1e-12), t
    # the last layer's gain sees the unregularized terminal Hessian: ε changes nothing there
    # before the cascade; the layer below the last is moved by ε
    assert (ours[n - 2] - no_eps[n - 2]).abs().max() > 1e-7
    # and the two placements are different methods (ε propagated vs. local to Q_ux)
    assert max(float((a - b).abs().max()) for a, b in zip(ref["new"], tassa["new"],
                                                           strict=True)) > 1e-7


def test_last_layer_of_a_two_layer_net_ignores_eps_in_vxx_placement():
    """With eps_placement="vxx" the terminal Hessian is unregularized: in a 2-layer network
    the only feedback gain (layer 2) uses V_xx^T, so ε changes nothing, bit for bit; with
    "qux" it does."""
    def two(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))

    runs = {}
    for name, kw in [("vxx0", dict(vxx_reg=0.0)), ("vxx", dict(vxx_reg=0.5)),
                     ("qux", dict(vxx_reg=0.5, eps_placement="qux"))]:
        m = two()
        train(m, DDPNOpt(m, lr=0.3, **kw), 4)
        runs[name] = [p.detach().clone() for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(runs["vxx"], runs["vxx0"], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(runs["qux"], runs["vxx0"], strict=True))


def test_default_is_algorithm_3_placement_without_eps():
    """Defaults: eps_placement="vxx", vxx_reg=0 (no value removed the collapses in every seed:
    docs/reproductions.md); with ε = 0 both placements are the same method, bit for bit."""
    opt = DDPNOpt(mlp(), lr=0.1)
    assert opt.param_groups[0]["eps_placement"] == "vxx"
    assert opt.param_groups[0]["vxx_reg"] == 0.0
    runs = []
    for kw in ({}, {"eps_placement": "qux"}):
        m = mlp()
        train(m, DDPNOpt(m, lr=0.5, **kw), 4)
        runs.append([p.detach().clone() for p in m.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_momentum_base_with_feedback_off_is_torch_sgd_momentum_bit_for_bit():
    a, b = mlp(), mlp()
    ours = DDPNOpt(a, lr=0.1, base="sgd", momentum=0.9, feedback=False)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, foreach=False)
    train(a, ours, 10)
    train(b, ref, 10)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize(("kw", "match"), [
    (dict(eps_placement="q_uu"), r"eps_placement must be one of \['vxx', 'qux'\], got 'q_uu'"),
    (dict(vxx_reg=-0.5), "vxx_reg must be >= 0, got -0.5"),
    (dict(vxx_reg=float("nan")), "vxx_reg"),
    (dict(momentum=-0.9), "momentum must be >= 0, got -0.9"),
])
def test_bad_eps_options_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        DDPNOpt(mlp(), lr=0.1, **kw)


def test_stage_policy_rejects_an_unknown_placement():
    with pytest.raises(ValueError, match="eps_placement must be one of"):
        StagePolicy(Curvature(eta=0.1), torch.zeros(2, 2), eps_placement="Vxx")


@pytest.mark.parametrize("eps", [1e-12, 1e-9])
def test_float32_with_a_small_vxx_reg_steps_like_float64(eps):
    """q_xᵀ S q_x has rank ≤ r < n: formed in float32 its rounding-level negative eigenvalues
    defeated a small ε and the Cholesky factor failed (DivergenceError at step 1 for ε ≤ 1e-9).
    It is formed in float64 now; float32 follows the float64 run."""
    import torch.nn.functional as F
    from torch import nn

    from dynopt.optim import DDPNOpt

    runs, starts = [], []
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 10)).to(dtype)
        opt = DDPNOpt(m, lr=0.1, base="sgd", vxx_reg=eps)
        starts.append(torch.cat([p.detach().double().flatten() for p in m.parameters()]))
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            x = torch.randn(32, 64, generator=g, dtype=torch.float64).to(dtype)
            y = torch.randint(0, 10, (32,), generator=g)
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
        runs.append(torch.cat([p.detach().double().flatten() for p in m.parameters()]))
    moved = [r - s0 for r, s0 in zip(runs, starts, strict=True)]
    assert float(moved[1].norm()) > 1e-2
    assert float((moved[0] - moved[1]).norm()) < 1e-3 * float(moved[1].norm())
