"""Linear stability limits from a scheme's program, and λ_max by Lanczos."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from dynopt import integrate, systems
from dynopt.diagnostics import (
    critical_step,
    model_top_eigenvalue,
    optimizer_stability_limit,
    potential_top_eigenvalue,
    spectral_radius,
    stability_limit,
    transfer_matrix,
)
from dynopt.errors import DivergenceError
from dynopt.integrators import Splitting
from dynopt.potentials import Ackley, Harmonic

H = 0.1
FRICTIONS = [0.0, 0.3, 1.0, 5.0]


@pytest.mark.parametrize("gamma", FRICTIONS)
def test_langevin_limits_match_closed_forms(gamma: float) -> None:
    """Palindromic Langevin splittings: h²λ < 4 at every friction; BAO/OBA (heavy ball with
    exact friction c = e^{−γh}): h²λ < 2(1 + c)."""
    lang = systems.Langevin(None, gamma=gamma, temperature=0.0)
    for scheme in ("BAOAB", "OBABO", "ABOBA"):
        assert stability_limit(lang, scheme, H).value == pytest.approx(4.0, rel=1e-8)
    c = math.exp(-gamma * H)
    for scheme in ("BAO", "OBA", "AOB"):
        assert stability_limit(lang, scheme, H).value == pytest.approx(2 * (1 + c), rel=1e-8)


@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("eta", [1e-3, 0.05])
def test_heavy_ball_is_sgd_momentum_limit(mu: float, eta: float) -> None:
    """SGD(lr=η, momentum=μ) is PortHamiltonian "FBA" with h = √η, γ = (1 − μ)/h; its limit
    from the program is ηλ < 2(1 + μ). Langevin BAOAB at τ = 0 is SGD(η = h²(1+c)/2, μ = c)
    and gives the same ηλ < 2(1 + μ)."""
    h = math.sqrt(eta)
    ph = systems.PortHamiltonian(None, gamma=(1 - mu) / h)
    lim = stability_limit(ph, "FBA", h)
    assert lim.lam * eta == pytest.approx(2 * (1 + mu), rel=1e-8)
    gamma = -math.log(mu) / h if mu > 0 else 50.0 / h
    c = math.exp(-gamma * h)
    eta_l = h * h * (1 + c) / 2
    lim_l = stability_limit(systems.Langevin(None, gamma=gamma, temperature=0.0), "BAOAB", h)
    assert lim_l.lam * eta_l == pytest.approx(2 * (1 + c), rel=1e-8)


def test_leapfrog_first_order_and_mass() -> None:
    ham = systems.Hamiltonian(None)
    assert stability_limit(ham, "leapfrog", 0.5).lam == pytest.approx(16.0, rel=1e-12)
    assert stability_limit(systems.Hamiltonian(None, mass=3.0), "BAB", 0.5).lam == \
        pytest.approx(48.0, rel=1e-12)
    # gradient descent: Euler–Maruyama at τ = 0 is q ← q − (h/γ)λq, stable for hλ < 2γ
    for gamma in (0.5, 1.0, 2.0):
        od = systems.OverdampedLangevin(None, temperature=0.0, gamma=gamma)
        for scheme in ("em", "lm"):
            assert stability_limit(od, scheme, 0.01).value == pytest.approx(2 * gamma, rel=1e-8)
    # the critical step for a given λ inverts the limit (friction re-lowered at every h)
    assert critical_step(ham, "BAB", 16.0) == pytest.approx(0.5, rel=1e-12)
    lang = systems.Langevin(None, gamma=1.0, temperature=0.0)
    hc = critical_step(lang, "BAO", 16.0)
    assert hc * hc * 16.0 == pytest.approx(2 * (1 + math.exp(-hc)), rel=1e-10)


def test_frozen_thermostat_linearization() -> None:
    """Adaptive Langevin "BACDE" with ξ frozen is BAO with c = e^{−ξh}; ξ < 0 is anti-damping
    (unstable for every λ > 0); an unknown extras name is refused."""
    al = systems.AdaptiveLangevin(None, temperature=1.0, xi0=0.7)
    assert stability_limit(al, "BACDE", H).value == pytest.approx(2 * (1 + math.exp(-0.07)),
                                                                  rel=1e-8)
    lim = stability_limit(al, "BACDE", H, extras={"xi": 2.0})
    assert lim.value == pytest.approx(2 * (1 + math.exp(-0.2)), rel=1e-8)
    assert lim.frozen == {"xi": 2.0}
    assert stability_limit(al, "BACDE", H, extras={"xi": -0.1}).lam == 0.0
    with pytest.raises(ValueError, match="'zeta'"):
        stability_limit(al, "BACDE", H, extras={"zeta": 1.0})
    with pytest.raises(ValueError, match="extras"):
        stability_limit(al, "BACDE", H, extras={"xi": float("nan")})


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="energy-shell"):
        stability_limit(systems.BornInfeld(None), None, 0.1)
    with pytest.raises(ValueError, match="h must be"):
        stability_limit(systems.Hamiltonian(None), "BAB", -0.1)
    with pytest.raises(ValueError, match="non-uniform mass"):
        stability_limit(systems.Hamiltonian(Harmonic(1.0, dim=2), mass=[1.0, 2.0]), "BAB", 0.1)
    with pytest.raises(ValueError, match="offers"):
        stability_limit(systems.Hamiltonian(None), "BAOAB", 0.1)


def _brute_matrix(scheme: Splitting, h: float, lam: float, gamma: float) -> np.ndarray:
    """The one-step matrix written directly from the letters (independent of the program)."""
    k = np.eye(2)
    for letter, frac in scheme.letters():
        t = frac * h
        if letter == "A":
            m = np.array([[1.0, t], [0.0, 1.0]])
        elif letter == "B":
            m = np.array([[1.0, 0.0], [-t * lam, 1.0]])
        else:
            m = np.diag([1.0, math.exp(-gamma * t)])
        k = m @ k
    return k


def _brute_limit(scheme: Splitting, h: float, gamma: float) -> float:
    rho = lambda lam: np.max(np.abs(np.linalg.eigvals(_brute_matrix(scheme, h, lam, gamma))))  # noqa: E731
    grid = np.linspace(1e-6, 40.0 / h**2, 40_001)
    bad = next(x for x in grid if rho(x) > 1 + 1e-9)
    lo, hi = bad - grid[1] + grid[0], bad
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rho(mid) <= 1 + 1e-9 else (lo, mid)
    return lo


def test_random_splittings_match_brute_force_scan() -> None:
    rng = np.random.default_rng(7)
    for _ in range(6):
        n = int(rng.integers(3, 8))
        letters = "".join(rng.choice(list("ABO"), size=n))
        letters += "".join(c for c in "ABO" if c not in letters)
        fr = np.empty(len(letters))
        for c in set(letters):
            idx = [i for i, x in enumerate(letters) if x == c]
            w = rng.uniform(0.2, 1.0, size=len(idx))
            fr[idx] = w / w.sum()
        fr = [float(f) for f in fr]
        for c in set(letters):  # make each letter's fractions sum to 1 exactly
            idx = [i for i, x in enumerate(letters) if x == c]
            fr[idx[-1]] = 1.0 - sum(fr[i] for i in idx[:-1])
        scheme = Splitting(letters, fr)
        gamma = float(rng.uniform(0.0, 3.0))
        lim = stability_limit(systems.Langevin(None, gamma=gamma, temperature=0.0), scheme, 0.3)
        assert lim.lam == pytest.approx(_brute_limit(scheme, 0.3, gamma), rel=1e-6), letters
        k = transfer_matrix(systems.Langevin(None, gamma=gamma), scheme, 0.3, 0.9 * lim.lam)
        np.testing.assert_allclose(k, _brute_matrix(scheme, 0.3, 0.9 * lim.lam, gamma),
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("side", [-1, 1])
def test_leapfrog_run_just_past_the_limit_diverges(side: int) -> None:
    """ω² = 25: h_c = 2/ω = 0.4. 0.1 % inside, leapfrog conserves the shadow energy
    H̃ = ω²q²/2 + p²/(2(1 − h²ω²/4)), so from (1, 0) the orbit stays in |q| ≤ 1; 0.1 % past, |q|
    grows like ρⁿ with ρ ≈ 1.09 and passes 10¹⁰ (or overflows)."""
    omega = 5.0
    lim = stability_limit(systems.Hamiltonian(None), "BAB", 0.4)
    assert lim.lam == pytest.approx(omega**2, rel=1e-12)
    h = 0.4 * (1 + side * 1e-3)
    assert stability_limit(systems.Hamiltonian(None), "BAB", h).is_stable(omega**2) == (side < 0)
    sysm = systems.Hamiltonian(Harmonic(omega))
    try:
        traj = integrate(sysm, "BAB", [1.0], h=h, n_steps=5000, p0=[[0.0]], backend="torch",
                         seed=0)
        q, p = traj.q[0, :, 0], traj.p[0, :, 0]
    except DivergenceError:
        q = p = np.array([math.inf])
    if side < 0:
        shadow = omega**2 * q**2 / 2 + p**2 / (2 * (1 - h * h * omega**2 / 4))
        np.testing.assert_allclose(shadow, omega**2 / 2, rtol=1e-9)
        assert np.abs(q).max() <= 1 + 1e-9
    else:
        assert np.abs(q).max() > 1e10


def test_spectral_radius_inside_and_outside() -> None:
    ham = systems.Hamiltonian(None)
    assert spectral_radius(ham, "BAB", 0.5, 15.9) == pytest.approx(1.0, abs=1e-12)
    assert spectral_radius(ham, "BAB", 0.5, 16.5) > 1.1


def test_top_eigenvalue_of_known_quadratics() -> None:
    rng = np.random.default_rng(3)
    for dim in (5, 200):  # dense path and Lanczos
        a = rng.standard_normal((dim, dim))
        hess = a @ a.T / dim + np.diag(rng.uniform(0, 1, dim))
        exact = np.linalg.eigvalsh(hess)[-1]
        ht = torch.as_tensor(hess)
        r = potential_top_eigenvalue(lambda q, ht=ht: 0.5 * q @ ht @ q, rng.standard_normal(dim))
        assert abs(r.value - exact) < 1e-6
        assert abs(abs(r.vector @ np.linalg.eigh(hess)[1][:, -1]) - 1) < 1e-6
    om = np.linspace(0.5, 3.0, 60)
    assert potential_top_eigenvalue(Harmonic(om, dim=60), np.ones(60)).value == \
        pytest.approx(9.0, abs=1e-6)
    # a non-quadratic potential: the Hessian of Ackley at a point against finite differences
    ack = Ackley(dim=2)
    q = np.array([0.3, -0.2])
    eps = 1e-5
    fd = np.stack([(ack.grad(q + eps * e) - ack.grad(q - eps * e)) / (2 * eps) for e in np.eye(2)])
    assert potential_top_eigenvalue(ack, q).value == pytest.approx(
        np.linalg.eigvalsh(0.5 * (fd + fd.T))[-1], rel=1e-6)
    with pytest.raises(TypeError, match="potential"):
        potential_top_eigenvalue(3.0, q)


def test_model_top_eigenvalue_linear_regression() -> None:
    """MSE of a linear model: ∇²U = 2 X̃ᵀX̃/n (X̃ with a column of ones), + λ_wd I; chunked data
    give the same value, and the model's .grad is left untouched."""
    torch.manual_seed(0)
    x = torch.randn(300, 6, dtype=torch.float64) * torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    y = torch.randn(300, 1, dtype=torch.float64)
    model = torch.nn.Linear(6, 1).double()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    xt = torch.cat([x, torch.ones(300, 1, dtype=torch.float64)], 1).numpy()
    exact = np.linalg.eigvalsh(2 * xt.T @ xt / 300)[-1]
    loss = torch.nn.MSELoss()
    assert model_top_eigenvalue(model, loss, (x, y)).value == pytest.approx(exact, abs=1e-6)
    chunks = [(x[:100], y[:100]), (x[100:], y[100:])]
    assert model_top_eigenvalue(model, loss, chunks, weight_decay=0.3).value == pytest.approx(
        exact + 0.3, abs=1e-6)
    assert all(bool((p.grad == 7.0).all()) for p in model.parameters())
    with pytest.raises(ValueError, match="weight_decay"):
        model_top_eigenvalue(model, loss, (x, y), weight_decay=-1.0)
    with pytest.raises(TypeError, match="data"):
        model_top_eigenvalue(model, loss, [])


def _run_quadratic(opt_factory: Any, lam: float, steps: int = 2000) -> tuple[float, float]:
    """max |θ| over the first and the second half of a run on U = λθ²/2 from θ = 1."""
    theta = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    opt = opt_factory([theta])
    trace = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * lam * theta.square().sum()).backward()
        opt.step()
        trace.append(float(theta.detach().abs().max()))
    return max(trace[: steps // 2]), max(trace[steps // 2:])


@pytest.mark.parametrize("name", ["sgd", "sgd-momentum", "sgd-dampening", "heavyball",
                                  "langevin"])
def test_optimizer_limits_decide_divergence_of_the_real_optimizer(name: str) -> None:
    """The limit from the optimizer's scheme separates bounded from divergent runs of the
    optimizer itself on a quadratic (0.5 % on either side: |θ| shrinks vs grows 100-fold from one half of the run to the
    next)."""
    from dynopt.optim import HeavyBall, Langevin

    factories = {
        "sgd": (lambda p: torch.optim.SGD(p, lr=0.01), 2 / 0.01),
        "sgd-momentum": (lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), 2 * 1.9 / 0.01),
        "sgd-dampening": (lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.5, dampening=0.2),
                          2 * 1.5 / 0.008),
        "heavyball": (lambda p: HeavyBall(p, lr=0.1, gamma=2.0), 2 * (2 - 0.2) / 0.01),
        "langevin": (lambda p: Langevin(p, lr=0.1, gamma=1.0, temperature=0.0, seed=0),
                     4 / 0.01),
    }
    factory, closed = factories[name]
    probe = factory([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))])
    lam = optimizer_stability_limit(probe).lam
    assert lam == pytest.approx(closed, rel=1e-8)
    first, second = _run_quadratic(factory, 0.995 * lam)
    assert second <= first
    first, second = _run_quadratic(factory, 1.005 * lam)
    assert second > 100 * first


def test_optimizer_limit_without_a_scheme() -> None:
    p = [torch.nn.Parameter(torch.zeros(2))]
    res = optimizer_stability_limit(torch.optim.Adam(p))
    assert res.lam is None and "Adam" in res.reason
    res = optimizer_stability_limit(torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True))
    assert res.lam is None and "Nesterov" in res.reason
    wd = optimizer_stability_limit(torch.optim.SGD(p, lr=0.1, weight_decay=0.5))
    assert wd.lam == pytest.approx(20.0 - 0.5, rel=1e-12)
    with pytest.raises(TypeError, match="optimizer"):
        optimizer_stability_limit("sgd")


def test_lambda_max_observable_along_a_run() -> None:
    """integrate(..., observables=[LambdaMax(every=2)]) on the MSE of a linear model: the Hessian
    is 2X̃ᵀX̃/n + λ_wd I at every θ, so every computed record equals its top eigenvalue (1e-8)
    and the skipped records are NaN."""
    from dynopt.observables.curvature import LambdaMax
    from dynopt.potentials import NetworkLoss

    torch.manual_seed(0)
    x = torch.randn(200, 5, dtype=torch.float64)
    y = torch.randn(200, 1, dtype=torch.float64)
    model = torch.nn.Linear(5, 1).double()
    pot = NetworkLoss(model, torch.nn.functional.mse_loss, (x, y), weight_decay=0.2)
    q0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    traj = integrate(systems.Langevin(pot, gamma=1.0, temperature=1e-2), "BAOAB", q0, h=0.05,
                     n_steps=20, n_chains=3, backend="torch", seed=0, record_every=5,
                     dtype=torch.float64, observables=["loss", LambdaMax(every=2)])
    xt = torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], 1).numpy()
    exact = np.linalg.eigvalsh(2 * xt.T @ xt / 200)[-1] + 0.2
    lam = traj.extras["lambda_max"]
    assert lam.shape == (3, 5)
    np.testing.assert_allclose(lam[:, ::2], exact, rtol=1e-8)
    assert np.isnan(lam[:, 1::2]).all()
    with pytest.raises(ValueError, match="every"):
        LambdaMax(every=0)


@pytest.mark.parametrize("kw, expected", [
    ({}, 400.0), ({"weight_decay": 50.0}, 350.0), ({"nbeta": 2.0}, 200.0),
    ({"localization": 30.0}, 370.0), ({"weight_decay": 50.0, "nbeta": 2.0}, 175.0),
])
def test_optimizer_limit_accounts_for_the_optimizers_prior(kw, expected):
    """U = nβ L + (wd + γ_loc)|θ|²/2 (the loss's λ is shifted and scaled): the limit on the loss's
    curvature is (4/h² − wd − γ_loc)/nβ for BAOAB. Only SGD's weight decay was accounted for."""
    import torch

    from dynopt.diagnostics import optimizer_stability_limit
    from dynopt.optim import Langevin

    p = torch.nn.Parameter(torch.zeros(3))
    opt = Langevin([p], lr=0.1, gamma=1.0, temperature=0.0, **kw)
    assert optimizer_stability_limit(opt).lam == pytest.approx(expected, rel=1e-9)


def test_optimizer_limit_skips_groups_that_sit_the_step_out():
    """A group with lr = 0 takes no step: SGD with momentum divided by zero, and a paused dynopt
    group reported the limit of its stand-in step h = 1 (λ_c = 4)."""
    import torch

    from dynopt.diagnostics import optimizer_stability_limit
    from dynopt.optim import HeavyBall, Langevin

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    opt = Langevin([{"params": [a], "lr": 0.0}, {"params": [b]}], lr=0.1, temperature=0.0)
    assert optimizer_stability_limit(opt).lam == pytest.approx(400.0, rel=1e-9)
    sgd = torch.optim.SGD([{"params": [a], "lr": 0.0}, {"params": [b]}], lr=0.01, momentum=0.9)
    assert optimizer_stability_limit(sgd).lam == pytest.approx(2 * 1.9 / 0.01, rel=1e-9)
    for o in (torch.optim.SGD([a], lr=0.0, momentum=0.9), HeavyBall([a], lr=0.0)):
        got = optimizer_stability_limit(o)
        assert got.lam is None and "lr = 0" in got.reason


def test_stability_limit_names_a_wrong_system_argument():
    from dynopt.diagnostics import stability_limit

    with pytest.raises(TypeError, match="system must be a dynopt system"):
        stability_limit("BAOAB", "BAOAB", 0.1)


def test_potential_top_eigenvalue_uses_a_network_losss_own_hessian_products():
    """potential_top_eigenvalue refused a NetworkLoss ("not differentiable"), though it has
    Hessian-vector products; it now agrees with the exact Hessian's top eigenvalue."""
    import torch

    from dynopt.diagnostics import potential_top_eigenvalue
    from dynopt.potentials import NetworkLoss

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(),
                              torch.nn.Linear(3, 1)).double()
    x, y = torch.randn(20, 2, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    U = NetworkLoss(net, torch.nn.functional.mse_loss, (x, y))
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]

    def loss(t):
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            parts[n] = t[i:i + s.numel()].reshape(s)
            i += s.numel()
        out = torch.func.functional_call(net, parts, (x,))
        return torch.nn.functional.mse_loss(out, y)

    exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta)).max().item()
    got = potential_top_eigenvalue(U, theta, tol=1e-10).value
    assert got == pytest.approx(exact, rel=1e-7)


def test_model_top_eigenvalue_takes_chunks_as_a_tuple_or_a_list():
    """A tuple of (x, y) chunks was taken for one pair and crashed."""
    import torch

    from dynopt.diagnostics import model_top_eigenvalue

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(),
                              torch.nn.Linear(3, 1)).double()
    x, y = torch.randn(20, 2, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    lf = torch.nn.functional.mse_loss
    whole = model_top_eigenvalue(net, lf, (x, y), tol=1e-10).value
    parts = ((x[:10], y[:10]), (x[10:], y[10:]))
    assert model_top_eigenvalue(net, lf, parts, tol=1e-10).value == pytest.approx(whole, rel=1e-8)
    assert model_top_eigenvalue(net, lf, list(parts), tol=1e-10).value == pytest.approx(
        whole, rel=1e-8)
