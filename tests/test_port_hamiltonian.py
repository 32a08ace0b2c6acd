"""Port-Hamiltonian heavy ball: ≡ SGD with momentum, goal-triggered braking, dissipation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt.events import LossBelow, SetFriction
from dynopt.optim import HeavyBall
from dynopt.systems import PortHamiltonian

PATHS = [{"fused": True}, {"foreach": True}, {"foreach": False, "fused": False}]


def _model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1)).to(dtype)


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g, dtype=dtype)
    return x, torch.sin(x.sum(1, keepdim=True))


def _loss(model, x, y):
    return ((model(x) - y) ** 2).mean()


@pytest.mark.parametrize("path", PATHS, ids=str)
def test_heavy_ball_is_sgd_with_momentum(path):
    h, gamma = 0.4, 0.6
    a, b = _model(), _model()
    x, y = _data()
    hb = HeavyBall(a.parameters(), lr=h, gamma=gamma, **path)
    sgd = torch.optim.SGD(b.parameters(), lr=h * h, momentum=1 - gamma * h)
    for _ in range(60):
        for m, o in ((a, hb), (b, sgd)):
            o.zero_grad()
            _loss(m, x, y).backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)
        # SGD's buffer is −p/h
        torch.testing.assert_close(hb.state[pa]["momentum"],
                                   -h * sgd.state[pb]["momentum_buffer"], rtol=1e-10,
                                   atol=1e-12)


def test_float32_fused_matches_foreach():
    x, y = _data(torch.float32)
    runs = []
    for path in PATHS[:2]:
        m = _model(dtype=torch.float32)
        opt = HeavyBall(m.parameters(), lr=0.3, gamma=0.5, **path)
        for _ in range(30):
            opt.zero_grad()
            _loss(m, x, y).backward()
            opt.step()
        runs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", PATHS, ids=str)
def test_braking_fires_at_the_goal_and_switches_friction_exactly_then(path):
    h, g0, g1, frac = 0.3, 0.1, 2.0, 0.4
    a, b = _model(), _model()
    x, y = _data()
    hb = HeavyBall(a.parameters(), lr=h, gamma=g0,
                   events=[LossBelow(frac, then=SetFriction(g1))], **path)
    sgd = torch.optim.SGD(b.parameters(), lr=h * h, momentum=1 - g0 * h)
    L0, fired_at, losses = None, None, []
    for k in range(80):
        hb.zero_grad()
        la = _loss(a, x, y)
        la.backward()
        hb.step(loss=la)
        sgd.zero_grad()
        lb = _loss(b, x, y)
        lb.backward()
        L0 = float(lb.detach()) if L0 is None else L0
        if fired_at is None and float(lb.detach()) <= frac * L0:  # goal: brake from this update
            fired_at = k
            sgd.param_groups[0]["momentum"] = 1 - g1 * h
        sgd.step()
        losses.append(float(lb.detach()))
    assert fired_at is not None and 5 < fired_at < 70
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)
    (f,) = hb.event_log
    assert f.step == fired_at and f.value == pytest.approx(losses[fired_at], rel=1e-12)
    assert hb.friction(hb.param_groups[0]) == g1


def test_loss_events_need_the_loss():
    m = _model()
    opt = HeavyBall(m.parameters(), lr=0.1, events=[LossBelow(0.5, then=SetFriction(1.0))])
    x, y = _data()
    _loss(m, x, y).backward()
    with pytest.raises(ValueError, match="needs the loss value"):
        opt.step()


def test_dissipation_along_the_continuous_flow():
    sys = PortHamiltonian(P.DoubleWell(3), gamma=0.7)
    rng = np.random.default_rng(0)
    q = torch.as_tensor(rng.normal(size=(30, 3))).requires_grad_(True)
    p = torch.as_tensor(rng.normal(size=(30, 3))).requires_grad_(True)
    x = torch.full((30, 1), 0.7, dtype=torch.float64)
    H = sys.energy(q, p)
    gq, gp = torch.autograd.grad(H.sum(), (q, p))
    dq, dp, _ = sys.vector_field(q.detach(), p.detach(), x)
    dHdt = (gq * dq + gp * dp).sum(-1)
    torch.testing.assert_close(dHdt, sys.power(q.detach(), p.detach(), x))  # = −γ|p|²
    assert bool((dHdt <= 0).all())


@pytest.mark.parametrize("gamma", [0.0, 0.8])
def test_one_step_jacobian_is_conformally_symplectic(gamma):
    """det ∂(θ', p')/∂(θ, p) = (1 − γh)^d for the heavy-ball step (central differences
    through the numba kernel's own FBA step, on a non-quadratic potential)."""
    d, h, eps = 3, 0.2, 1e-6
    sys = PortHamiltonian(P.Rosenbrock(d), gamma=gamma)
    integ = dynopt.integrators.resolve("FBA")
    z0 = np.array([0.3, -0.5, 0.8, 0.1, 0.4, -0.2])
    dz = eps * np.eye(2 * d)
    zs = np.concatenate([z0 + dz, z0 - dz])  # all perturbations as chains of one run
    st = integ.init(sys, zs[:, :d], p0=zs[:, d:], seed=0)
    st = integ.step(sys, st, h=h)
    out = np.concatenate([st.q, st.p], axis=1)
    J = (out[:2 * d] - out[2 * d:]).T / (2 * eps)
    assert np.linalg.det(J) == pytest.approx((1 - gamma * h) ** d, rel=1e-6)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_integrate_with_braking_events_matches_the_optimizer(backend):
    pot = P.DoubleWell(2)
    h, g0, g1, frac = 0.05, 0.0, 3.0, 0.2
    sys = PortHamiltonian(pot, gamma=g0)
    q0 = np.array([[1.6, -1.4], [0.2, 1.5]])
    tr = dynopt.integrate(sys, None, q0, h=h, n_steps=300, seed=0, backend=backend,
                          events=[LossBelow(frac, then=SetFriction(g1))])
    steps = {f.chain: f.step for f in tr.events}
    assert set(steps) == {0, 1}
    for c in range(2):
        th = torch.tensor(q0[c], requires_grad=False)
        opt = HeavyBall([th], lr=h, gamma=g0, events=[LossBelow(frac, then=SetFriction(g1))])
        for _ in range(300):
            th.grad = pot.grad(th)
            opt.step(loss=pot.value(th))
        assert opt.event_log[0].step == steps[c]
        np.testing.assert_allclose(th.numpy(), tr.q[c, -1], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(tr.extras["gamma"][c, :steps[c] + 1], g0)
        np.testing.assert_array_equal(tr.extras["gamma"][c, steps[c] + 1:], g1)


def test_bad_parameters():
    m = _model()
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        HeavyBall(m.parameters(), lr=0.1, gamma=-1.0)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        HeavyBall(m.parameters(), lr=-0.1)
    with pytest.raises(ValueError, match="mutually exclusive"):
        HeavyBall(m.parameters(), lr=0.1, fused=True, foreach=True)
    with pytest.raises(ValueError, match="does not support the action"):
        from dynopt.events import Bounce

        HeavyBall(m.parameters(), lr=0.1, events=[LossBelow(0.5, then=Bounce())])
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        PortHamiltonian(P.Harmonic(), gamma=-0.1)


def test_an_amplifying_friction_is_refused_before_any_write():
    """γ·lr > 2 makes the friction step multiply p by 1 − γ·lr < −1 every step: the energy grew
    until a 'lower lr' divergence a thousand steps later. Now refused naming γ and lr, on every
    path and also when an event sets the friction."""
    m = _model()
    for kw in ({}, {"foreach": True}, {"fused": False}):
        opt = HeavyBall(m.parameters(), lr=0.1, gamma=30.0, **kw)
        x = torch.randn(8, 4, dtype=torch.float64)
        before = [p.detach().clone() for p in m.parameters()]
        opt.zero_grad()
        loss = m(x).pow(2).mean()
        loss.backward()
        with pytest.raises(ValueError, match=r"gamma \* lr = 30.0 \* 0.1 = 3 > 2"):
            opt.step(loss=loss)
        assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    HeavyBall(m.parameters(), lr=0.1, gamma=20.0)  # γ·lr = 2: c = −1, not amplifying
