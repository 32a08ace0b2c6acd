"""Noise amplitudes, per backend and per optimizer path, with a non-unit mass (issue 10).

Parity tests and the τ = 0 tests switch the noise off, so a wrong noise amplitude survives
them. Here every path runs with τ > 0 and a mass that differs per coordinate, on a flat (or
quadratic) potential where the stationary moments are exact:

* O step / OU step of Langevin: p ← c p + √((1 − c²)τ) M^½ R, so ⟨p_i²/m_i⟩ = τ for every i
  (the kick of a flat potential is zero, so p is a pure OU chain from p = 0).
* Adaptive Langevin's exact OU step with friction ξ (``O`` in ``"BAEOEAB"``): ⟨ξ⟩ = σ_A²/(2τ).
* Overdamped Langevin on U = ½ω²q²: LM gives ⟨ω²q²⟩ = τ exactly, Euler–Maruyama
  τ/(1 − dt ω²/2).

Each estimate must agree with the exact value within 4 standard errors, and each standard
error is bounded by the one expected from the marginal variance (SE_bound below), so a bug that
only inflates the spread fails too. The mutations each test catches (checked by hand, see the
report of issue 10): the O-step noise without √m_i in the numba kernel, the fused optimizer's
noise without √M, and the OU_XI variance off by a factor of 2.

| symbol | code |
|---|---|
| τ | ``TAU`` |
| m_i, M | ``MASS`` (per coordinate), ``mass`` (per optimizer param group) |
| σ_A, ε | ``SIGMA``, ``EPS`` |
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dynopt
from dynopt import diagnostics as dg
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.optim import AdaptiveLangevin, Langevin, OverdampedLangevin

TAU = 0.7
MASS = np.array([0.25, 4.0])
SIGMA, EPS = 1.2, 0.5
BACKENDS = ["numba", "torch"]
PATHS = {"single": {"foreach": False, "fused": False}, "foreach": {"foreach": True},
         "fused": {"fused": True}}
#: Omega of an effectively flat potential (∇U = ω² q ≈ 1e-12 q over these runs).
FLAT = 1e-6


def _check(est: float, se: float, exact: float, se_bound: float, label: str) -> None:
    assert se < se_bound, f"{label}: SE {se:.3g} above its expected size {se_bound:.3g}"
    assert abs(est - exact) < 4 * se, f"{label}: {est:.5f} vs exact {exact:.5f} (SE {se:.2g})"


# --- integrate(): both backends -----------------------------------------------------------------

@pytest.mark.parametrize(("backend", "noise"), [("numba", "gaussian"), ("torch", "gaussian"),
                                               ("numba", "gaussian-f64")])
@pytest.mark.parametrize("scheme", ["BAOAB", "OBABO"])
def test_langevin_kinetic_temperature_per_coordinate(backend, noise, scheme):
    """⟨p_i²/m_i⟩ = τ for m = (0.25, 4): draws 20 steps apart (correlation e^{−4} in p) from
    2048 chains started at p = 0, so SE ≈ τ√(2/n). The numba kernel with each transform."""
    system = S.Langevin(P.Harmonic(FLAT, dim=2), gamma=1.0, temperature=TAU, mass=MASS)
    traj = dynopt.integrate(system, scheme, [0.0, 0.0], p0=[0.0, 0.0], h=0.1, n_steps=1600,
                            n_chains=2048, record_every=20, seed=11, backend=backend,
                            noise=noise)
    p = traj.p[:, 10:]  # after 200 steps: c^400 = e^-40
    n = p.shape[0] * p.shape[1]
    for i in range(2):
        x = p[..., i] ** 2 / MASS[i]
        _check(float(x.mean()), float(dg.batch_means_se(x)), TAU,
               1.25 * TAU * math.sqrt(2.0 / n), f"{backend} {scheme} coordinate {i}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_adaptive_langevin_xi_mean_with_the_exact_ou_step(backend):
    """BAEOEAB with σ_A > 0: ⟨ξ⟩ = σ_A²/(2τ) and ⟨p_i²/m_i⟩ = τ. The SE of ⟨ξ⟩ is bounded by
    √(Var ξ / chains) (a time average never varies more than one draw; Var ξ = ετ)."""
    system = S.AdaptiveLangevin(P.Harmonic(FLAT, dim=2), temperature=TAU, sigma_a=SIGMA,
                                eps=EPS, xi0=SIGMA**2 / (2 * TAU), mass=MASS)
    chains = 1024
    steps = 6000 if backend == "numba" else 1200  # torch pays per op, numba per chain-step
    traj = dynopt.integrate(system, "BAEOEAB", [0.0, 0.0], h=0.05, n_steps=steps,
                            n_chains=chains, record_every=10, seed=12, backend=backend)
    xi = traj.extras["xi"][:, 30:]  # ξ starts at ξ*; p from zero relaxes within 15 time units
    se = float(dg.batch_means_se(xi, n_batches=1))  # one batch per chain: chains independent
    _check(float(xi.mean()), se, system.xi_mean,
           1.25 * math.sqrt(system.xi_variance / chains), f"{backend} <xi>")
    p = traj.p[:, 30:]
    for i in range(2):
        x = p[..., i] ** 2 / MASS[i]
        _check(float(x.mean()), float(dg.batch_means_se(x, n_batches=1)), TAU,
               1.25 * TAU * math.sqrt(2.0 / chains), f"{backend} coordinate {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("scheme", "factor"), [("lm", 1.0), ("em", 1.0 / (1.0 - 0.1 / 2))])
def test_overdamped_configurational_variance(backend, scheme, factor):
    """U = ½q² (ω = 1), dt = 0.1: ⟨q²⟩ = τ (LM, exact) or τ/(1 − dt/2) (EM), from q = 0."""
    system = S.OverdampedLangevin(P.Harmonic(1.0), temperature=TAU)
    traj = dynopt.integrate(system, scheme, [0.0], h=0.1, n_steps=2000, n_chains=2048,
                            record_every=25, seed=13, backend=backend)
    x = traj.q[:, 8:, 0] ** 2  # after 200 steps: 0.9^400
    n = x.size
    _check(float(x.mean()), float(dg.batch_means_se(x)), TAU * factor,
           1.3 * TAU * factor * math.sqrt(2.0 / n), f"{backend} {scheme}")


# --- the optimizers: every path ----------------------------------------------------------------

N_ELEM = 20_000
MASSES = (0.25, 4.0)


def _flat_params(n_tensors: int = 2) -> list[torch.Tensor]:
    """Parameters of a flat loss: zero gradients, so p is a pure OU chain per element."""
    out = []
    for _ in range(n_tensors):
        t = torch.zeros(N_ELEM, dtype=torch.float64)
        t.grad = torch.zeros_like(t)
        out.append(t)
    return out


def _langevin_p2(path: str, noise: str = "gaussian") -> list[tuple[float, float]]:
    a, b = _flat_params()
    opt = Langevin([{"params": [a], "mass": MASSES[0]}, {"params": [b], "mass": MASSES[1]}],
                   lr=0.2, gamma=1.0, temperature=TAU, seed=21, noise=noise, **PATHS[path])
    for _ in range(150):  # c^300 = e^-60
        opt.step()
    out = []
    for t, m in zip((a, b), MASSES, strict=True):
        x = (opt.state[t]["momentum_buffer"] ** 2 / m).numpy()
        out.append((float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))))
    return out


@pytest.mark.parametrize(("path", "noise"), [(p, "gaussian") for p in PATHS]
                         + [("fused", "gaussian-f64")])
def test_langevin_optimizer_kinetic_temperature_per_mass(path, noise):
    """Two groups with masses 0.25 and 4: ⟨p²/M⟩ = τ in each, SE ≤ 1.1·τ√(2/N) (float64
    tensors: the fused path with each transform)."""
    for (est, se), m in zip(_langevin_p2(path, noise), MASSES, strict=True):
        _check(est, se, TAU, 1.1 * TAU * math.sqrt(2.0 / N_ELEM), f"{path}, mass {m}")


def test_langevin_optimizer_paths_agree_in_distribution():
    """Noise on: the three paths' ⟨p²/M⟩ agree pairwise within 4 combined SEs (they draw
    different random numbers, so only the distributions can agree)."""
    res = {path: _langevin_p2(path) for path in PATHS}
    names = list(PATHS)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            for (a, sa), (b, sb) in zip(res[first], res[second], strict=True):
                assert abs(a - b) < 4 * math.hypot(sa, sb), (first, second, a, b)


@pytest.mark.parametrize("path", list(PATHS))
def test_adaptive_langevin_optimizer_xi_and_kinetic_temperature(path):
    """BAEOEAB (exact OU step with friction ξ), one ξ per tensor of N = 20 elements, 32
    tensors, M = 4: ⟨ξ⟩ = σ_A²/(2τ) and ⟨p²/M⟩ = τ. The SE of ⟨ξ⟩ is bounded by
    √(Var ξ / tensors) with Var ξ = ετ (a time average never varies more than one draw)."""
    mass, n_t, n_el = 4.0, 32, 20
    ps = [torch.zeros(n_el, dtype=torch.float64) for _ in range(n_t)]
    for t in ps:
        t.grad = torch.zeros_like(t)
    xi_star = SIGMA**2 / (2 * TAU)
    opt = AdaptiveLangevin(ps, lr=0.05, temperature=TAU, sigma_a=SIGMA, eps=EPS, xi0=xi_star,
                           mass=mass, scheme="BAEOEAB", seed=22, **PATHS[path])
    xi, p2 = [], []
    for k in range(1500):
        opt.step()
        if k >= 300 and k % 5 == 0:
            xi.append([float(opt.state[t]["extras"][0]) for t in ps])
            p2.append(torch.stack([opt.state[t]["momentum_buffer"] for t in ps]).numpy())
    series = np.array(xi).T  # (tensor, draw)
    _check(float(series.mean()), float(dg.batch_means_se(series, n_batches=1)), xi_star,
           1.25 * math.sqrt(EPS * TAU / n_t), f"{path} <xi>")
    x = (np.stack(p2, axis=1) ** 2 / mass).reshape(n_t, len(p2), n_el)
    x = x.transpose(0, 2, 1).reshape(n_t * n_el, -1)  # (element, draw)
    _check(float(x.mean()), float(dg.batch_means_se(x, n_batches=1)), TAU,
           1.25 * TAU * math.sqrt(2.0 / x.shape[0]), f"{path} <p²/M>")


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(("scheme", "factor"), [("lm", 1.0), ("em", 1.0 / (1.0 - 0.1 / 2))])
def test_overdamped_optimizer_variance(path, scheme, factor):
    """L = ½Σθ², dt = 0.1, from θ = 0: ⟨θ²⟩ = τ (LM) or τ/(1 − dt/2) (EM) per element."""
    theta = torch.zeros(N_ELEM, dtype=torch.float64)
    opt = OverdampedLangevin([theta], lr=0.1, temperature=TAU, scheme=scheme, seed=23,
                             **PATHS[path])
    for _ in range(200):  # 0.9^400
        theta.grad = theta.detach().clone()
        opt.step()
    x = (theta**2).numpy()
    exact = TAU * factor
    _check(float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)), exact,
           1.1 * exact * math.sqrt(2.0 / N_ELEM), f"{path} {scheme}")
