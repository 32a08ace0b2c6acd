"""Local SGLD (devinterp style): the tether γ_loc|θ − θ₀|²/2 and the inverse temperature nβ, and
the local learning coefficient estimate λ̂ = nβ(E[L] − L(θ*)) on a quadratic, where λ = d/2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynopt.diagnostics import batch_means_se
from dynopt.optim import Langevin, OverdampedLangevin

A = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)  # curvatures a_i of L = ½Σ a_i θ_i²
NBETA, GAMMA_LOC = 50.0, 1.0


def _llc_samples(make, chains=256, steps=2500, burn=300):
    """λ̂ samples: nβ·L(θ) per chain and step, θ ~ exp(−nβL − γ_loc|θ − θ*|²/2) (τ = 1),
    started at the minimum θ* = 0 (as devinterp starts at the trained weights)."""
    theta = torch.zeros(chains, A.numel(), dtype=torch.float64, requires_grad=True)
    opt = make([theta])
    out = np.empty((chains, steps - burn))
    for k in range(steps):
        opt.zero_grad()
        per_chain = 0.5 * (A * theta * theta).sum(1)
        per_chain.sum().backward()  # the chains are independent: one loss, separable
        if k >= burn:
            out[:, k - burn] = NBETA * per_chain.detach().numpy()
        opt.step()
    return out


def _exact() -> float:
    """nβ E[L] for the Gaussian local posterior: ½ Σ nβ a_i/(nβ a_i + γ_loc) (→ d/2)."""
    return float(0.5 * (NBETA * A / (NBETA * A + GAMMA_LOC)).sum())


@pytest.mark.parametrize("name", ["lm", "baoab"])
def test_llc_of_a_quadratic_is_half_the_dimension(name):
    """Leimkuhler–Matthews (exact variance on quadratics) and BAOAB (exact configurational
    variance on quadratics at any h): |λ̂ − exact| < 4 SE, exact within 0.05 of d/2 = 2 (the
    tether's known bias), and the SE itself small (≈ 0.005 expected; a broken sampler that
    only widens the error bar fails)."""
    if name == "lm":
        def make(ps):
            return OverdampedLangevin(ps, lr=0.005, temperature=1.0, scheme="lm", nbeta=NBETA,
                                      localization=GAMMA_LOC, seed=0)
    else:
        def make(ps):
            return Langevin(ps, lr=0.05, gamma=5.0, temperature=1.0, nbeta=NBETA,
                            localization=GAMMA_LOC, seed=0)
    samples = _llc_samples(make)
    est = samples.mean()
    se = batch_means_se(samples.mean(0))
    exact = _exact()
    assert abs(exact - A.numel() / 2) < 0.05
    assert se < 0.02
    assert abs(est - exact) < 4 * se, (est, exact, se)


def test_tether_without_nbeta_pulls_to_the_anchor():
    """With a flat loss (zero gradient) the tether alone is an OU process around θ₀ with
    variance τ/γ_loc: checked on the sample variance (exact for LM)."""
    theta = torch.full((512, 2), 3.0, dtype=torch.float64, requires_grad=True)
    opt = OverdampedLangevin([theta], lr=0.05, temperature=0.5, scheme="lm", localization=2.0,
                             seed=1)
    xs = []
    for k in range(1200):
        theta.grad = torch.zeros_like(theta)
        opt.step()
        if k >= 200:
            xs.append(theta.detach().clone())
    x = torch.stack(xs)  # (draw, chain, 2)
    assert abs(float(x.mean()) - 3.0) < 0.01
    var = ((x - 3.0) ** 2).mean(-1).numpy().T  # (chain, draw)
    se = batch_means_se(var.mean(0))
    assert se < 0.01
    assert abs(var.mean() - 0.25) < 4 * se


@pytest.mark.parametrize(("system_cls", "opt_cls", "scheme"), [
    ("OverdampedLangevin", OverdampedLangevin, "em"), ("Langevin", Langevin, "BAOAB")])
def test_system_options_equal_the_optimizer(system_cls, opt_cls, scheme):
    """The systems' nbeta/localization/center (a Localized potential) and the optimizers'
    group keys are one mechanism: integrate(system, backend="torch") and the optimizer on the
    same quadratic, seed and anchor q₀ give the same trajectory (1e-12)."""
    import dynopt
    from dynopt.potentials import Harmonic

    dim, n, h, seed = 3, 60, 0.05, 11
    omega = np.array([0.5, 1.0, 2.0])
    q0 = np.array([0.3, -0.2, 0.1])
    kw = {"nbeta": 4.0, "localization": 2.0}
    system = getattr(dynopt.systems, system_cls)(Harmonic(omega, dim), temperature=0.2,
                                                center=q0, **kw)
    extra = {"p0": np.zeros(dim)} if system_cls == "Langevin" else {}
    traj = dynopt.integrate(system, scheme, q0, h=h, n_steps=n, backend="torch", seed=seed,
                            dtype=torch.float64, **extra)
    theta = torch.tensor(q0, requires_grad=True)
    okw = {"gamma": 1.0} if opt_cls is Langevin else {}
    opt = opt_cls([theta], lr=h, temperature=0.2, seed=seed, foreach=True, **kw, **okw)
    w2 = torch.tensor(omega**2)
    got = []
    for _ in range(n):
        opt.zero_grad()
        (0.5 * (w2 * theta**2).sum()).backward()
        opt.step()
        got.append(theta.detach().clone().numpy())
    np.testing.assert_allclose(np.array(got), traj.q[0, 1:], rtol=0, atol=1e-12)


def test_localized_potential_gradient_value_and_errors():
    from dynopt.potentials import Harmonic, Localized

    u = Localized(Harmonic(2.0, dim=2), nbeta=3.0, localization=0.5, center=[1.0, -1.0],
                  weight_decay=0.25)
    q = np.array([[0.2, 0.4]])
    want = 3.0 * 0.5 * 4.0 * (q * q).sum(-1) + 0.25 * ((q - [1.0, -1.0]) ** 2).sum(-1) \
        + 0.125 * (q * q).sum(-1)
    np.testing.assert_allclose(u.value(q), want, rtol=1e-15)
    qt = torch.tensor(q, requires_grad=True)
    np.testing.assert_allclose(u.grad(q), u.grad_autograd(qt).detach().numpy(), rtol=1e-14)
    assert float(u.laplacian(q)[0]) == pytest.approx(3.0 * 8.0 + 2 * 0.75)
    with pytest.raises(ValueError, match="nbeta"):
        Localized(Harmonic(dim=2), nbeta=0.0)
    with pytest.raises(ValueError, match="center"):
        Localized(Harmonic(dim=2), center=[1.0, 2.0, 3.0])
    import dynopt

    with pytest.raises(ValueError, match="numba"):
        dynopt.integrate(dynopt.systems.OverdampedLangevin(u), "em", np.zeros(2), h=0.01,
                         n_steps=2, backend="numba")


def test_localized_refuses_a_minibatch_potential_and_defaults_to_torch():
    """nbeta/localization on a minibatch NetworkLoss ran full-batch without a word (the wrapper
    did not pass the minibatch protocol on), and the default backend was numba, which then
    failed naming a wrong fix."""
    import dynopt
    from dynopt.potentials import DoubleWell, NetworkLoss

    torch.manual_seed(0)
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 1, dtype=torch.float64)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
                              torch.nn.Linear(4, 1)).double()
    minibatch = NetworkLoss(net, torch.nn.functional.mse_loss, (x, y), batch_size=5, seed=1)
    with pytest.raises(ValueError, match="minibatch .*stochastic"):
        dynopt.systems.Langevin(minibatch, gamma=1.0, temperature=1e-3, nbeta=2.0)
    system = dynopt.systems.Langevin(DoubleWell(dim=1), gamma=1.0, temperature=0.5, nbeta=2.0)
    tr = dynopt.integrate(system, "BAOAB", [0.5], h=0.1, n_steps=3, seed=0)
    assert tr.backend == "torch"


def _net_loss(heldout: bool = True):
    from dynopt.potentials import NetworkLoss

    torch.manual_seed(0)
    x, y = torch.randn(20, 2, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    net = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 1)).double()
    U = NetworkLoss(net, torch.nn.functional.mse_loss, (x, y),
                    heldout=(x[:8], y[:8]) if heldout else None)
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    return U, theta


def test_localized_network_loss_keeps_the_network_observables_and_curvature():
    """A Localized NetworkLoss dropped data_loss, heldout_data, layers and the Hessian-vector
    products: "loss", "heldout_loss" and "layer_configurational" failed, "layer_kinetic"
    recorded one block, and λ_max raised TypeError."""
    import dynopt
    from dynopt.diagnostics import potential_top_eigenvalue
    from dynopt.potentials import Localized

    U, theta = _net_loss()
    nb, loc, wd = 3.0, 0.5, 0.25
    L = Localized(U, nbeta=nb, localization=loc, center=theta.numpy(), weight_decay=wd)
    q = theta[None] + 0.1
    z = torch.randn(1, 2, U.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # Hessian-vector products: exact shift of the base's
    np.testing.assert_allclose(L.hvp(q, z), nb * U.hvp(q, z) + (loc + wd) * z, rtol=1e-13)
    g, hz = L.grad_and_hvp(q, z)
    np.testing.assert_allclose(g, L.grad(q), rtol=1e-12)
    np.testing.assert_allclose(hz, L.hvp(q, z), rtol=1e-13)
    np.testing.assert_allclose(L.hutchinson(q, z), z * L.hvp(q, z), rtol=1e-13)
    lam = potential_top_eigenvalue(L, theta, tol=1e-10).value
    assert lam == pytest.approx(nb * potential_top_eigenvalue(U, theta, tol=1e-10).value
                                + loc + wd, rel=1e-7)
    # the network's records pass through, unscaled
    system = dynopt.systems.Langevin(U, temperature=1e-3, nbeta=nb, localization=loc,
                                     center=theta.numpy())
    traj = dynopt.integrate(system, "BAOAB", theta, h=0.01, n_steps=8, n_chains=2, seed=0,
                            observables=["theta", "loss", "heldout_loss", "layer_kinetic",
                                         "layer_configurational"])
    qs = torch.as_tensor(traj.q[:, -1])
    np.testing.assert_allclose(traj.extras["loss"][:, -1], U.data_loss(qs), rtol=1e-12)
    np.testing.assert_allclose(traj.extras["heldout_loss"][:, -1], U.heldout_loss(qs),
                               rtol=1e-12)
    for name in U.layers:
        assert f"kinetic:{name}" in traj.extras and f"laplacian:{name}" in traj.extras
    # an analytic base still has none of these
    from dynopt.potentials import Harmonic

    plain = Localized(Harmonic(dim=2), nbeta=2.0)
    assert not any(hasattr(plain, k) for k in ("hvp", "layers", "data_loss", "heldout_data"))


def test_center_without_localization_is_refused():
    """center alone did nothing but wrap the potential (and force the torch backend)."""
    import dynopt
    from dynopt.potentials import Harmonic

    with pytest.raises(ValueError, match="center .* no effect without localization > 0"):
        dynopt.systems.Langevin(Harmonic(dim=2), center=[0.5, 0.5])
    with pytest.raises(ValueError, match="localization=0.0"):
        dynopt.systems.OverdampedLangevin(Harmonic(dim=2), nbeta=2.0, center=[0.5, 0.5])
    s = dynopt.systems.Langevin(Harmonic(dim=2), localization=1.0, center=[0.5, 0.5])
    assert "center=[0.5, 0.5]" in repr(s)
