"""Surfing: one snapshot is plain gradient descent, the work bookkeeping closes the energy
balance (exactly without dynamics, to O(h²) for Hamiltonian dynamics), batching, the snapshot
recorder, and clear errors."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from dynopt.errors import DivergenceError
from dynopt.surfing import SnapshotRecorder, surf


def generator(seed: int, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 12), act(), nn.Linear(12, 20)).double()


def path(n: int, act: type[nn.Module] = nn.Tanh) -> list[nn.Module]:
    """Snapshots on the straight line between two random networks."""
    a, b = generator(0, act), generator(1, act)
    out = []
    for s in np.linspace(0.0, 1.0, n):
        g = copy.deepcopy(a)
        with torch.no_grad():
            for p, pa, pb in zip(g.parameters(), a.parameters(), b.parameters(), strict=True):
                p.copy_((1 - s) * pa + s * pb)
        out.append(g)
    return out


def targets(g: nn.Module, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    return x, g(x).detach()


def test_one_snapshot_is_plain_gradient_descent_exactly():
    g = generator(0)
    _, y = targets(g)
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    res = surf([g], y, x0=x0, steps_per_snapshot=60, lr=0.02)
    x = x0.clone()
    for _ in range(60):
        xx = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(0.5 * ((g(xx) - y) ** 2).sum(), xx)
        x.add_(grad, alpha=-0.02)
    assert torch.equal(res.x, x)
    assert res.steps.tolist() == [60] and res.state.step == 60
    assert np.allclose(res.loss[0], 0.5 * ((g(x) - y) ** 2).sum(1).detach().numpy(), rtol=0,
                       atol=1e-14)
    assert np.array_equal(res.work, np.zeros(4))


def test_batched_targets_equal_separate_runs():
    snaps = path(4)
    _, y = targets(snaps[-1], n=3)
    x0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    both = surf(snaps, y, x0=x0, steps_per_snapshot=20, lr=0.05)
    for i in range(3):
        one = surf(snaps, y[i], x0=x0[i], steps_per_snapshot=20, lr=0.05)
        assert torch.allclose(both.x[i], one.x[0], rtol=0, atol=1e-13)
        assert np.allclose(both.work[i], one.work[0], rtol=0, atol=1e-13)


def test_work_closes_the_energy_balance_exactly_without_dynamics():
    snaps = path(6)
    _, y = targets(snaps[-1])
    res = surf(snaps, y, steps_per_snapshot=0, lr=0.1, seed=0, latent_dim=3)
    assert np.abs(res.work).min() > 1e-3                    # the switches do work
    assert np.allclose(res.dynamics_energy_change, 0.0, rtol=0, atol=1e-12)


def test_hamiltonian_surfing_balance_is_second_order_in_h():
    """Langevin at γ = τ = 0 with BAOAB is leapfrog on a piecewise-constant potential: within
    each snapshot H is conserved to O(h²), so H(end) − H(start) − W = O(h²)."""
    snaps = path(5)
    _, y = targets(snaps[-1])
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    resid = []
    works = []
    for h, n in [(0.04, 25), (0.02, 50), (0.01, 100)]:
        r = surf(snaps, y, x0=x0, steps_per_snapshot=n, lr=h, dynamics="langevin", gamma=0.0)
        resid.append(np.abs(r.dynamics_energy_change).max())
        works.append(r.work)
    assert np.abs(works[-1]).min() > 1e-2
    assert np.allclose(works[-1], works[-2], rtol=0.05)      # the path converges in h
    for coarse, fine in itertools.pairwise(resid):
        assert 3.0 < coarse / fine < 5.0                     # ratio 4 for order 2


def test_gradient_flow_dissipates():
    snaps = path(5)
    _, y = targets(snaps[-1])
    r = surf(snaps, y, steps_per_snapshot=40, lr=0.02, seed=3, latent_dim=3)
    assert (r.dynamics_energy_change < 0).all()
    assert r.loss.shape == (5, 4) and r.norm.shape == (5, 4)
    assert [e["steps"] for e in r.log] == [40] * 5


def test_langevin_temperature_schedule_is_seeded():
    snaps = path(3)
    _, y = targets(snaps[-1])
    kw = dict(steps_per_snapshot=30, lr=0.01, dynamics="overdamped-langevin", latent_dim=3,
              temperature=lambda s: 0.1 * (1 - s))
    a, b = surf(snaps, y, seed=4, **kw), surf(snaps, y, seed=4, **kw)
    cold = surf(snaps, y, seed=4, **(kw | {"temperature": 0.0}))
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, cold.x)
    assert torch.equal(cold.x, surf(snaps, y, seed=4, **(kw | {"temperature": None,
                                                               "dynamics": "gradient-flow"})).x)


def test_recorder_snapshots_are_copies_and_state_dicts_surf_like_modules():
    g = generator(0, nn.Tanh)
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    rec = SnapshotRecorder(g, every=2)
    rec.attach(opt)
    x = torch.randn(8, 3, dtype=torch.float64)
    modules = [copy.deepcopy(g)]
    for k in range(6):
        opt.zero_grad()
        (g(x) ** 2).mean().backward()
        opt.step()
        if (k + 1) % 2 == 0:
            modules.append(copy.deepcopy(g))
    assert len(rec) == 4 and rec.steps == [0, 2, 4, 6]
    for sd, m in zip(rec.snapshots, modules, strict=True):
        for k, v in m.state_dict().items():
            assert torch.equal(sd[k], v)
    _, y = targets(g)
    a = surf(rec.snapshots, y, model=g, steps_per_snapshot=10, lr=0.05, seed=0, latent_dim=3)
    b = surf(modules, y, steps_per_snapshot=10, lr=0.05, seed=0)
    assert torch.equal(a.x, b.x)
    logspaced = SnapshotRecorder(g, at=[1, 3])
    for _ in range(4):
        logspaced.step()
    assert logspaced.steps == [0, 1, 3]


def test_compressed_measurements():
    snaps = path(3)
    xs, y_full = targets(snaps[-1])
    a = torch.randn(7, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r = surf(snaps, y_full @ a.T, A=a, x0=xs + 0.01, steps_per_snapshot=0, lr=0.1)
    expect = 0.5 * (((snaps[-1](xs + 0.01) - y_full) @ a.T) ** 2).sum(1)
    assert np.allclose(r.loss[-1], expect.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize(("kw", "exc", "match"), [
    (dict(snapshots=[]), ValueError, "snapshots is empty"),
    (dict(y=torch.zeros(4, 19)), ValueError, "y has 19 entries per target but A·G"),
    (dict(y=torch.zeros(5, 20)), ValueError, "y has 5 rows .* x0 has 4 rows"),
    (dict(A=torch.zeros(5, 19)), ValueError, r"A must have shape \(m, 20\)"),
    (dict(A=torch.zeros(5, 20)), ValueError, "y has 20 entries per target but A·G"),
    (dict(x0=torch.zeros(4, 2)), ValueError, "cannot be evaluated on x0 with 2 latent"),
    (dict(lr=0.0), ValueError, "lr must be > 0"),
    (dict(dynamics="annealing"), ValueError, "dynamics must be one of"),
    (dict(temperature=0.5), ValueError, "temperature must be None for dynamics='gradient-flow'"),
    (dict(steps_per_snapshot=[1, 2, 3]), ValueError, "steps_per_snapshot has 3 entries"),
    (dict(snapshots="sd"), ValueError, "state-dict snapshots need model="),
    (dict(y=torch.full((4, 20), float("nan"))), ValueError, "y must be finite"),
])
def test_bad_input_is_named(kw, exc, match):
    g = generator(0)
    base = dict(snapshots=[g, g], y=torch.zeros(4, 20), x0=torch.zeros(4, 3),
                steps_per_snapshot=2, lr=0.1)
    if kw.get("snapshots") == "sd":
        kw = dict(snapshots=[g.state_dict()])
    base.update(kw)
    with pytest.raises(exc, match=match):
        surf(base.pop("snapshots"), base.pop("y"), **base)


def test_divergence_names_snapshot_and_exact_step():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(3, 20)).double()      # quadratic U: GD with a large step blows up
    y = torch.randn(2, 20, dtype=torch.float64)
    kw = dict(lr=50.0, latent_dim=3, seed=0)
    with pytest.raises(DivergenceError, match="snapshot 1 at step") as info:
        surf([g, g], y, steps_per_snapshot=[0, 300], **kw)
    step = info.value.step
    ok = surf([g, g], y, steps_per_snapshot=[0, step - 1], **kw)
    assert bool(torch.isfinite(ok.x).all())
    with pytest.raises(DivergenceError, match=f"at step {step} "):
        surf([g, g], y, steps_per_snapshot=[0, step], **kw)


def test_state_dict_snapshots_must_match_the_model_and_dtypes_are_one():
    """functional_call is lenient: a snapshot missing '2.weight' (or with '2.weights') ran on
    the model's own tensor, and a 'module.'-prefixed one gave a raw AttributeError."""
    snaps = path(2)
    model = copy.deepcopy(snaps[0])
    _, y = targets(snaps[1])
    sds = [copy.deepcopy(s.state_dict()) for s in snaps]
    x0 = torch.zeros(4, 3, dtype=torch.float64)
    ref = surf(snaps, y, x0=x0, steps_per_snapshot=5, lr=0.02)
    got = surf(sds, y, x0=x0, steps_per_snapshot=5, lr=0.02, model=model)
    assert torch.equal(got.x, ref.x)
    missing = copy.deepcopy(sds)
    del missing[1]["2.weight"]
    typo = copy.deepcopy(sds)
    typo[0]["2.weights"] = typo[0].pop("2.weight")
    prefixed = [{f"module.{k}": v for k, v in sd.items()} for sd in sds]
    for bad, match in ((missing, r"snapshot 1 does not fit model: missing keys \['2.weight'\]"),
                       (typo, r"snapshot 0 .* unexpected keys \['2.weights'\]"),
                       (prefixed, r"unexpected keys \['module.0.bias'")):
        with pytest.raises(ValueError, match=match):
            surf(bad, y, x0=x0, steps_per_snapshot=5, lr=0.02, model=model)
    mixed = [snaps[0], copy.deepcopy(snaps[1]).float()]
    with pytest.raises(ValueError, match="the snapshots mix dtypes"):
        surf(mixed, y, x0=x0, steps_per_snapshot=5, lr=0.02)


def test_chains_in_another_dtype_than_the_network_and_numpy_step_counts():
    """dtype= was documented as the chains' dtype but every value other than the network's
    failed ("mat1 and mat2 must have the same dtype"); np.int64 step counts gave a raw
    TypeError."""
    snaps = path(3)
    _, y = targets(snaps[-1])
    x0 = torch.zeros(4, 3, dtype=torch.float64)
    ref = surf(snaps, y, x0=x0, steps_per_snapshot=5, lr=0.02)
    f32 = surf(snaps, y, x0=x0, steps_per_snapshot=np.int64(5), lr=0.02, dtype=torch.float32)
    assert f32.x.dtype == torch.float32
    torch.testing.assert_close(f32.x.double(), ref.x, rtol=1e-4, atol=1e-5)
    assert not torch.equal(ref.x, x0)


def test_temperature_schedule_runs_from_s_0_to_s_1():
    # surf's docstring: τ(s) with s = k/(K−1) ∈ [0, 1], so the first snapshot is at τ(0) and
    # the last at τ(1) (an annealing schedule that ends at 0 really ends cold).
    snaps = path(5)
    _, y = targets(snaps[-1])
    seen: list[float] = []

    def schedule(s: float) -> float:
        seen.append(s)
        return 0.1 * (1.0 - s)

    surf(snaps, y, steps_per_snapshot=1, lr=0.01, dynamics="overdamped-langevin", latent_dim=3,
         temperature=schedule, seed=0)
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]
