"""One definition, both ways: dynopt.optim on a model == integrate() on its NetworkLoss.

The deterministic dynamics (temperature 0, NVE leapfrog, heavy ball, BBI without bounces) agree
to 1e-12 in float64 (the optimizer runs the scheme's *optimizer form*, which merges the two half
kicks of consecutive steps into one, so the momenta round differently: equal θ sequences up to
rounding, not bit for bit). With noise the streams coincide exactly when

* the run has ONE chain and no ``chain_ids`` (the torch backend then draws one ``(1, dim)`` normal
  tensor per noise op per step from ``torch.Generator().manual_seed(seed)``),
* the optimizer uses the single-tensor or foreach path (``fused=False``), which draws one flat
  ``randn(numel)`` per noise op per step for all its tensors of one dtype/device, in parameter
  order, from a generator seeded the same way: the layout of ``parameters_to_vector``,
* the dtypes agree (float64 model and ``dtype=float64``), p0 = 0 (the optimizer's momentum
  starts at zero; otherwise integrate draws initial momenta first) and the same seed is used.

Otherwise (several chains, per-chain streams, the fused Philox path) the two agree in
distribution, which the Bayesian-linear-regression test checks against the closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import dynopt
from dynopt.diagnostics import estimate_mean
from dynopt.optim import BBI, HeavyBall, Langevin
from dynopt.potentials import NetworkLoss

S = dynopt.systems
LAM = 0.05
N_STEPS = 40


# tiny models: one intra-op thread (see the fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).double()


def _data(n=24):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, torch.sin(2 * x[:, :1]) + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)


def _train(make_opt, batches=None, n=N_STEPS, pass_loss=False):
    """θ after each optimizer step on L = mse + λ|θ|²/2 (batch k at step k if given)."""
    net = _net()
    x, y = _data()
    opt = make_opt(net.parameters())
    out = []
    for k in range(n):
        xb, yb = (x, y) if batches is None else (x[batches(k)], y[batches(k)])
        opt.zero_grad()
        theta = torch.nn.utils.parameters_to_vector(net.parameters())
        loss = F.mse_loss(net(xb), yb) + 0.5 * LAM * (theta * theta).sum()
        loss.backward()
        opt.step(loss=loss.detach()) if pass_loss else opt.step()
        out.append(torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone())
    return torch.stack(out).numpy()


def _integrate(system, scheme, n=N_STEPS, **kw):
    net = _net()
    theta0 = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    traj = dynopt.integrate(system, scheme, theta0, h=kw.pop("h"), n_steps=n,
                            p0=torch.zeros_like(theta0), **kw)
    return traj.q[0, 1:]


def _loss(**kw):
    return NetworkLoss(_net(), F.mse_loss, _data(), weight_decay=LAM, **kw)


PATHS = {"single": {"foreach": False, "fused": False}, "foreach": {"foreach": True},
         "fused": {"fused": True}}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_langevin_at_temperature_zero_equals_integrate(path):
    h, gamma = 0.1, 0.5
    ref = _integrate(S.Langevin(_loss(), gamma=gamma, temperature=0.0), "BAOAB", h=h, seed=0)
    got = _train(lambda p: Langevin(p, lr=h, gamma=gamma, temperature=0.0, seed=0,
                                    **PATHS[path]))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert np.abs(ref[-1] - ref[0]).max() > 1e-2      # it moved


def test_leapfrog_nve_equals_the_optimizer_without_friction():
    h = 0.1
    ref = _integrate(S.Hamiltonian(_loss()), "BAB", h=h, seed=0)
    got = _train(lambda p: Langevin(p, lr=h, gamma=0.0, temperature=0.0, scheme="BAB",
                                    foreach=False, fused=False))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("path", ["single", "fused"])
def test_heavy_ball_equals_integrate_port_hamiltonian(path):
    h, gamma = 0.2, 0.8
    ref = _integrate(S.PortHamiltonian(_loss(), gamma=gamma), "FBA", h=h, seed=0)
    got = _train(lambda p: HeavyBall(p, lr=h, gamma=gamma, **PATHS[path]))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_bbi_without_bounces_equals_integrate():
    h, kw = 0.05, {"delta_energy": 0.2, "t0": None, "t1": None}
    ref = _integrate(S.BornInfeld(_loss(), **kw), "SBA", h=h, seed=0)
    got = _train(lambda p: BBI(p, lr=h, foreach=False, fused=False, **kw), pass_loss=True)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_minibatch_langevin_equals_integrate_with_the_same_batches():
    """Gradient evaluation k of integrate() uses batch k of the loss's stream; a training loop
    that feeds batch k at step k follows the same trajectory."""
    h, gamma = 0.1, 0.5
    U = _loss(batch_size=6, seed=3)
    ref = _integrate(S.Langevin(U, gamma=gamma, temperature=0.0), "BAOAB", h=h, seed=0)
    got = _train(lambda p: Langevin(p, lr=h, gamma=gamma, temperature=0.0, foreach=False,
                                    fused=False), batches=U.schedule.indices)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    full = _integrate(S.Langevin(_loss(), gamma=gamma, temperature=0.0), "BAOAB", h=h, seed=0)
    assert np.abs(full - ref).max() > 1e-4               # the batches matter


@pytest.mark.parametrize("path", ["single", "foreach"])
def test_noisy_langevin_one_chain_draws_the_optimizer_stream(path):
    h, gamma, tau, seed = 0.1, 0.5, 0.01, 1234
    ref = _integrate(S.Langevin(_loss(), gamma=gamma, temperature=tau), "BAOAB", h=h,
                     seed=seed, dtype=torch.float64)
    got = _train(lambda p: Langevin(p, lr=h, gamma=gamma, temperature=tau, seed=seed,
                                    **PATHS[path]))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    other = _train(lambda p: Langevin(p, lr=h, gamma=gamma, temperature=tau, seed=seed + 1,
                                      **PATHS[path]))
    assert np.abs(other - ref).max() > 1e-3


def test_fused_optimizer_samples_the_same_posterior_in_distribution():
    """The fused path's Philox noise differs from the torch stream; the invariant measure does
    not: on Bayesian linear regression its θ has the closed-form posterior mean and variance."""
    g = torch.Generator().manual_seed(0)
    n, lam, tau, h = 40, 0.5, 0.05, 0.5
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-0.5]], dtype=torch.float64) + 0.3 + 0.2 * torch.randn(
        n, 1, generator=g, dtype=torch.float64)
    phi = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1).numpy()
    A = 2.0 / n * phi.T @ phi + lam * np.eye(3)
    mu = np.linalg.solve(A, 2.0 / n * phi.T @ y.numpy()[:, 0])
    var = np.diag(tau * np.linalg.inv(A))
    w = torch.tensor(mu[:2][None].copy(), requires_grad=True)
    b = torch.tensor(mu[2:].copy(), requires_grad=True)
    opt = Langevin([w, b], lr=h, gamma=1.5, temperature=tau, seed=5, fused=True)
    draws = []
    for _ in range(6000):
        opt.zero_grad()
        (F.mse_loss(x @ w.T + b, y) + 0.5 * lam * ((w * w).sum() + (b * b).sum())).backward()
        opt.step()
        draws.append(np.concatenate([w.detach().numpy()[0], b.detach().numpy()]))
    d = np.array(draws)[None, 200:]
    for i in range(3):
        m = estimate_mean(d[..., i])
        v = estimate_mean((d[..., i] - mu[i]) ** 2)
        assert abs(m.value - mu[i]) < 4 * m.se and m.se < 0.1 * np.sqrt(var[i])
        assert abs(v.value - var[i]) < 4 * v.se and v.se < 0.15 * var[i]
