"""Mutation-testing gaps of dynopt.observables and the TrainingMonitor.

Each test states a documented property that a one-line bug would break: the per-layer kinetic
energy divides by each coordinate's mass, the Hutchinson estimate is the mean over probes and
keyed by (seed, step, chain), the projection directions are unit vectors, block slices are
checked, λ_max is due by record index, the SGD momentum reading accounts for dampening.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import dynopt
from dynopt.monitor import TrainingMonitor
from dynopt.observables import LayerConfigurational, Projections
from dynopt.observables.curvature import LambdaMax
from dynopt.potentials import NetworkLoss

S = dynopt.systems
pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()


def _data(n=12):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, torch.sin(2 * x[:, :1])


def _theta(net):
    return torch.nn.utils.parameters_to_vector(net.parameters()).detach()


def test_layer_kinetic_energy_divides_by_each_coordinates_mass():
    """K_L = Σ_{i∈L} p_i²/(2 m_i) with a non-uniform mass vector, against the momenta of the
    same (deterministic) run recorded in full; the blocks add up to the recorded K."""
    net = _mlp()
    U = NetworkLoss(net, F.mse_loss, _data())
    mass = np.linspace(0.5, 4.0, U.dim)
    sys = S.Hamiltonian(U, mass=mass)
    p0 = torch.linspace(-1.0, 1.0, U.dim, dtype=torch.float64)
    kw = dict(h=0.05, n_steps=6, n_chains=2, seed=0, record_every=2, p0=p0)
    full = dynopt.integrate(sys, "BAB", _theta(net), **kw)
    obs = dynopt.integrate(sys, "BAB", _theta(net), **kw, observables=["layer_kinetic"])
    total = 0.0
    for name, sl in U.layers.items():
        want = 0.5 * (full.p[..., sl] ** 2 / mass[sl]).sum(-1)
        np.testing.assert_allclose(obs.extras[f"kinetic:{name}"], want, rtol=1e-13, atol=0)
        total = total + obs.extras[f"kinetic:{name}"]
    np.testing.assert_allclose(total, obs.extras["kinetic"], rtol=1e-13, atol=0)


def test_hutchinson_laplacian_is_exact_for_a_diagonal_hessian_with_any_probe_count():
    """A linear model on orthogonal inputs: U = mean squared error + λ|θ|²/2 has Hessian
    (2/n)ΦᵀΦ + λI = (2 + λ)I, so every Rademacher probe gives Σ_{i∈L} zᵢ(Hz)ᵢ = (2 + λ)·n_L
    exactly, and the mean over probes is the same; |∇_L U|² is the squared block gradient."""
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([[0.3], [-1.0], [0.5], [2.0]], dtype=torch.float64)
    net = nn.Linear(2, 1).double()
    lam = 0.5
    U = NetworkLoss(net, F.mse_loss, (x, y), weight_decay=lam)
    sys = S.Langevin(U, gamma=1.0, temperature=0.01)
    traj = dynopt.integrate(sys, "BAOAB", _theta(net), h=0.05, n_steps=4, n_chains=2, seed=1,
                            observables=["theta", LayerConfigurational(probes=3, seed=2)])
    assert set(U.layers) == {"weight", "bias"}
    q = torch.as_tensor(traj.q.reshape(-1, U.dim))
    g = U.grad(q).numpy().reshape(*traj.q.shape)
    for name, sl in U.layers.items():
        n_l = len(range(*sl.indices(U.dim)))
        np.testing.assert_allclose(traj.extras[f"laplacian:{name}"], (2.0 + lam) * n_l,
                                   rtol=1e-13)
        np.testing.assert_allclose(traj.extras[f"grad2:{name}"], (g[..., sl] ** 2).sum(-1),
                                   rtol=1e-12, atol=1e-15)


def test_hutchinson_probes_are_keyed_by_step_so_a_resumed_run_records_the_same_values():
    """Probes for chain c at step n come from (seed, n, c): a run continued from its final
    state records the same Laplacian estimates at the same steps as one uninterrupted run."""
    net = _mlp()
    U = NetworkLoss(net, F.mse_loss, _data())
    sys = S.Hamiltonian(U)
    obs = [LayerConfigurational(probes=1, seed=3)]
    p0 = torch.linspace(-0.5, 0.5, U.dim, dtype=torch.float64)
    kw = dict(h=0.05, record_every=2, observables=obs)
    whole = dynopt.integrate(sys, "BAB", _theta(net), n_steps=8, n_chains=2, seed=0, p0=p0, **kw)
    first = dynopt.integrate(sys, "BAB", _theta(net), n_steps=4, n_chains=2, seed=0, p0=p0, **kw)
    rest = dynopt.integrate(sys, "BAB", None, n_steps=4, state=first.final_state, **kw)
    np.testing.assert_array_equal(rest.t, whole.t[2:])
    for name in U.layers:
        key = f"laplacian:{name}"
        np.testing.assert_array_equal(rest.extras[key], whole.extras[key][:, 2:])


def test_projection_directions_are_seeded_unit_vectors():
    """The k directions are float64 normals from a generator seeded with ``seed``, normalised:
    unit length, so a projection is a coordinate of θ along a direction."""
    proj = Projections(k=5, seed=4)
    v = proj.directions(17)
    assert v.shape == (5, 17) and v.dtype == torch.float64
    np.testing.assert_allclose(torch.linalg.vector_norm(v, dim=1).numpy(), 1.0, rtol=0,
                               atol=1e-15)
    raw = torch.randn(5, 17, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    np.testing.assert_allclose(v.numpy(), (raw / raw.norm(dim=1, keepdim=True)).numpy(),
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("bad", [slice(2, 2), slice(3, 1), slice(-1, None), slice(0, 99)])
def test_an_empty_or_out_of_range_block_is_refused(bad):
    net = _mlp()
    U = NetworkLoss(net, F.mse_loss, _data())
    sys = S.Langevin(U, gamma=1.0, temperature=0.01)
    with pytest.raises(ValueError, match=r"groups\['a'\] must be a non-empty slice"):
        dynopt.integrate(sys, "BAOAB", _theta(net), h=0.05, n_steps=1, seed=0,
                         observables=[LayerConfigurational(groups={"a": bad})])


def test_lambda_max_is_due_by_record_index_not_by_step():
    """``every=2``: records 0, 2, 4, ... hold λ_max; with record_every=2 every record's step is
    even, yet records 1, 3 are NaN."""
    system = S.Langevin(dynopt.potentials.DoubleWell(dim=1), gamma=1.0, temperature=0.5)
    rec = dynopt.integrate(system, "BAOAB", [0.5], h=0.1, n_steps=8, seed=0, backend="torch",
                           record_every=2, observables=[LambdaMax(every=2)]).extras["lambda_max"]
    assert np.isfinite(rec[0, [0, 2, 4]]).all() and np.isnan(rec[0, [1, 3]]).all()


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_sgd_momentum_reading_uses_the_step_size_of_the_dampened_update(dampening):
    """SGD(lr=η, momentum=μ, dampening=d) is the heavy ball with h² = η(1−d) (its buffer
    carries the gradient times 1−d), and p = −(η/h)·buffer with h = √(η(1−d)) is the velocity
    in units of h: θₖ₊₁ − θₖ = h pₖ₊₁, so K_L = |Δθ_L|²/(2η(1−d)) at every record."""
    torch.manual_seed(0)
    x = torch.randn(40, 2, dtype=torch.float64)
    y = (x[:, :1] * x[:, 1:]).sign()
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    lr = 0.04
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.8, dampening=dampening)
    mon = TrainingMonitor(model, opt, F.mse_loss, (x, y), every=1,
                          observables=["theta", "layer_kinetic"])
    for k in range(5):
        idx = torch.arange(8 * k, 8 * k + 8)
        opt.zero_grad()
        F.mse_loss(model(x[idx]), y[idx]).backward()
        opt.step()
        mon.step()
    traj = mon.trajectory()
    dq = np.diff(traj.q[0], axis=0)
    off = 0
    for name, par in model.named_parameters():
        n = par.numel()
        want = (dq[:, off:off + n] ** 2).sum(-1) / (2 * lr * (1 - dampening))
        np.testing.assert_allclose(traj.extras[f"kinetic:{name}"][0, 1:], want, rtol=1e-10)
        off += n


def test_nesterov_sgd_has_no_momentum_reading():
    """Nesterov SGD's buffer is not the heavy-ball velocity: no kinetic records, and asking
    for them is refused naming the optimizer."""
    net = _mlp()
    data = _data()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    mon = TrainingMonitor(net, opt, F.mse_loss, data, every=1)
    assert not any(k.startswith("kinetic:") for k in mon.trajectory().extras)
    with pytest.raises(ValueError, match="SGD keeps no momenta"):
        TrainingMonitor(net, opt, F.mse_loss, data, observables=["layer_kinetic"])


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_monitor_loss_is_the_potential_without_the_prior_term(weight_decay):
    """``loss`` is the full-batch mean training loss, U without λ|θ|²/2: with weight_decay = λ
    the monitor's records satisfy loss = potential − λ|θ|²/2 (and loss = potential at λ = 0)."""
    net = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    mon = TrainingMonitor(net, opt, F.mse_loss, (x, y), every=1, weight_decay=weight_decay,
                          observables=["theta", "loss"])
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()
        mon.step()
    traj = mon.trajectory()
    prior = 0.5 * weight_decay * (traj.q ** 2).sum(-1)
    np.testing.assert_allclose(traj.extras["loss"], traj.extras["potential"] - prior,
                               rtol=1e-12, atol=1e-15)
    assert np.all(prior[0] > 0) == (weight_decay > 0)


def test_monitor_kinetic_energy_of_a_layer_without_momenta_is_nan_not_zero():
    """A layer the optimizer does not train has no momentum: its kinetic energy (and so its
    kinetic temperature) is undefined, NaN in every record; a trained layer's is a number."""
    net = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(net[2].parameters(), lr=0.05, momentum=0.9)
    mon = TrainingMonitor(net, opt, F.mse_loss, (x, y), every=1, observables=["layer_kinetic"])
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()
        mon.step()
    ex = mon.trajectory().extras
    assert np.isnan(ex["kinetic:0.weight"]).all() and np.isnan(ex["kinetic:0.bias"]).all()
    assert np.all(ex["kinetic:2.weight"][0, 1:] > 0) and np.all(ex["kinetic:2.bias"][0, 1:] > 0)
