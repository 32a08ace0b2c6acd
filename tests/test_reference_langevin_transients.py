"""Transient (time-dependent) Langevin facts of langevin-thermostats.md §5.1, with non-unit mass.

The rest of the suite checks stationary moments; these two check the dynamics in time, where a
mass or friction scaling error shows even when the invariant measure is right:

* the free-particle Brownian limit, MSD(t) → 2τt/(mγ) per coordinate (jax-md's test), here
  against BAOAB's exact discrete MSD (no bias allowance) and that against the continuous
  Ornstein–Uhlenbeck value 2τ/(mγ)·(t − (1 − e^{−γt})/γ);
* the damped harmonic oscillator from q₀ = 1 with Maxwell momenta (jax-md's
  ``test_langevin_harmonic`` form): ⟨q(t)⟩ = A e^{−b₁t} + B e^{−b₂t}, b₁,₂ = γ/2 ± √(γ²/4 − α/m),
  A = −b₂/(b₁ − b₂), B = b₁/(b₁ − b₂).

Every statistical check is |estimate − exact| < 4 SE (+ a stated, measured bias bound) with the
SE itself bounded by the one the exact variance implies.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

import dynopt
from dynopt import potentials as P
from dynopt import systems as S


def _flat(dim: int) -> P.Custom:
    """U ≡ 0 (torch array form)."""
    return P.Custom(dim, value=lambda q: 0.0 * q.sum(-1), grad=lambda q: 0.0 * q,
                    laplacian=lambda q: 0.0 * q.sum(-1), name="flat")


def _baoab_free_msd(n_steps: int, h: float, gamma: float, tau: float, m: np.ndarray) -> np.ndarray:
    """Exact E|q_n − q_0|² per coordinate of BAOAB on U ≡ 0 from Maxwell momenta.

    With U ≡ 0 the B steps vanish, the on-step momenta are the stationary AR(1) sequence
    p_{k+1} = c p_k + √((1 − c²)τm) R_k (variance τm, correlation c^|i−j|, c = e^{−γh}), and
    q_n − q_0 = (h/2m) Σ_k (p_k + p_{k+1}) = (h/2m) Σ_k a_k p_k with a = (1, 2, …, 2, 1).
    """
    c = math.exp(-gamma * h)
    a = np.full(n_steps + 1, 2.0)
    a[0] = a[-1] = 1.0
    k = np.arange(n_steps + 1)
    quad = a @ (c ** np.abs(k[:, None] - k[None, :])) @ a
    return (h / (2.0 * m)) ** 2 * tau * m * quad


def test_free_particle_msd_is_the_brownian_limit_per_mass():
    """MSD(t) = 2τ/(mγ)·(t − (1 − e^{−γt})/γ) → 2τt/(mγ), one mass per coordinate.

    Kills: the O step's noise not scaled by M^½ (MSD of the m = 4 coordinate off by 4×), the
    drift not divided by M, a γ in the noise amplitude with the wrong power. Measured with
    100,000 chains (seed 9): 19.43 ± 0.09 and 2.435 ± 0.011 against the exact 19.52 and 2.439.
    """
    tau, gamma, h, n_steps, n_chains = 0.5, 2.0, 0.1, 200, 16_000
    mass = np.array([0.5, 4.0])
    system = S.Langevin(_flat(2), gamma=gamma, temperature=tau, mass=mass)
    traj = dynopt.integrate(system, "BAOAB", [0.0, 0.0], h=h, n_steps=n_steps,
                            n_chains=n_chains, seed=5, backend="torch", record_every=n_steps,
                            progress=False)
    t = n_steps * h
    exact = _baoab_free_msd(n_steps, h, gamma, tau, mass)
    continuous = 2.0 * tau / (mass * gamma) * (t - (1.0 - math.exp(-gamma * t)) / gamma)
    # BAOAB's discrete diffusion constant is (τ/m)(h/2)coth(γh/2): +0.33 % at γh = 0.2
    np.testing.assert_allclose(exact, continuous, rtol=4e-3)
    np.testing.assert_allclose(exact / (2.0 * tau * t / (mass * gamma)), 1.0 - 1.0 / (gamma * t),
                               rtol=4e-3)  # the Brownian limit minus the ballistic start
    d2 = (traj.q[:, -1, :] - traj.q[:, 0, :]) ** 2
    msd = d2.mean(axis=0)
    se = d2.std(axis=0, ddof=1) / math.sqrt(n_chains)
    # the displacement is Gaussian with mean 0: Var(x²) = 2 MSD²
    assert np.all(se < 1.1 * exact * math.sqrt(2.0 / n_chains)), (se, exact)
    assert np.all(np.abs(msd - exact) < 4.0 * se), (msd, exact, se)


def _damped_mean(t: np.ndarray, alpha: float, m: float, gamma: float) -> np.ndarray:
    """⟨q(t)⟩ = A e^{−b₁t} + B e^{−b₂t} from q₀ = 1, ⟨p₀⟩ = 0 (complex b for γ² < 4α/m)."""
    d = cmath.sqrt(gamma**2 / 4.0 - alpha / m)
    b1, b2 = gamma / 2.0 + d, gamma / 2.0 - d
    a, b = -b2 / (b1 - b2), b1 / (b1 - b2)
    return np.real(a * np.exp(-b1 * t) + b * np.exp(-b2 * t))


#: BAOAB's mean follows its own linear map, O(h²) from the flow: at h = 0.01 the deterministic
#: (τ = 0, p₀ = 0) run differs from the formula by at most 3.1e-5 (overdamped case) and 6.6e-5
#: (underdamped) over t ≤ 4; we allow 2e-4.
MEAN_BIAS = 2e-4


@pytest.mark.parametrize(("alpha", "m", "gamma"), [
    (2.0, 2.0, 3.0),   # overdamped: α/m = 1 < γ²/4, b = 2.618, 0.382
    (4.0, 0.5, 1.0),   # underdamped: α/m = 8 > γ²/4, complex b
])
def test_harmonic_mean_position_is_the_damped_oscillator(alpha, m, gamma):
    """Kills a mass error in the drift (α/m → α·m changes b₁,₂ by O(1)), friction applied to
    q or with the wrong sign, and noise with a non-zero mean."""
    tau, h, n_steps, n_chains, every = 0.3, 0.01, 400, 20_000, 50
    potential = P.Harmonic(math.sqrt(alpha))
    traj = dynopt.integrate(S.Langevin(potential, gamma=gamma, temperature=tau, mass=m),
                            "BAOAB", [1.0], h=h, n_steps=n_steps, n_chains=n_chains, seed=3,
                            backend="torch", record_every=every, progress=False)
    exact = _damped_mean(traj.t, alpha, m, gamma)
    det = dynopt.integrate(S.Langevin(potential, gamma=gamma, temperature=0.0, mass=m),
                           "BAOAB", [1.0], p0=[0.0], h=h, n_steps=n_steps, backend="torch",
                           record_every=every, progress=False)
    assert np.max(np.abs(det.q[0, :, 0] - exact)) < MEAN_BIAS
    q = traj.q[:, 1:, 0]
    mean = q.mean(axis=0)
    se = q.std(axis=0, ddof=1) / math.sqrt(n_chains)
    # Var q(t) ≤ τ/α: the covariance grows from diag(0, τm) towards the stationary diag(τ/α, τm)
    assert np.all(se < 1.1 * math.sqrt(tau / alpha / n_chains)), se
    assert np.all(np.abs(mean - exact[1:]) < 4.0 * se + MEAN_BIAS), (mean, exact[1:], se)
