"""Long statistical studies (``pytest -m slow``): tighter standard errors than the default tier.

Each study takes tens of seconds on 2 cores; together a few minutes.
"""

from __future__ import annotations

import numpy as np
import pytest

import dynopt
from dynopt import diagnostics, potentials, systems

pytestmark = pytest.mark.slow

#: Quadrature values of ⟨q²⟩ for U = (q² − 1)² (langevin-thermostats.md §5.5).
DOUBLE_WELL_Q2 = {0.10: 0.972523, 0.25: 0.917671, 0.50: 0.852136, 1.00: 0.832745}


@pytest.mark.parametrize("tau", sorted(DOUBLE_WELL_Q2))
def test_double_well_q2_at_four_temperatures(tau):
    """BAOAB at small h, 256 chains × 4·10⁵ steps: ⟨q²⟩ within 4 SE of quadrature (the
    configurational bias of BAOAB at h = 0.02 is below 1e-5 here, far under the SE)."""
    system = systems.Langevin(potentials.DoubleWell(dim=1), gamma=2.0, temperature=tau)
    traj = dynopt.integrate(system, "BAOAB", [1.0], h=0.02, n_steps=400_000, n_chains=256,
                            seed=11, record_every=20)
    q2 = traj.q[:, 2000:, 0] ** 2
    se = diagnostics.batch_means_se(q2)
    assert abs(q2.mean() - DOUBLE_WELL_Q2[tau]) < 4 * se, (q2.mean(), se)
    assert abs(q2.mean() - diagnostics.gibbs_moment(traj.system.potential, tau,
                                                    lambda x: x * x)) < 4 * se


def test_leapfrog_energy_has_no_secular_drift_over_ten_million_steps():
    ham = systems.Hamiltonian(potentials.DoubleWell(dim=2))
    traj = dynopt.integrate(ham, "leapfrog", [0.9, -1.1], p0=[0.6, 0.3], h=0.05,
                            n_steps=10_000_000, n_chains=4, record_every=1000, seed=0)
    drift = diagnostics.energy_drift(traj)
    assert abs(drift.slope) < 4 * drift.slope_se
    assert drift.max_abs_error < 0.05  # bounded: O(h²) shadow-Hamiltonian oscillation only


def test_nose_hoover_chain_samples_the_harmonic_oscillator_canonically():
    """A chain of length 3 on a 1-D oscillator: ⟨q²⟩ = τ/ω², ⟨q⁴⟩ = 3(τ/ω²)², ⟨p²⟩ = τ
    within 4 SE over a long single trajectory per chain (where a single thermostat fails)."""
    tau, omega = 1.0, 1.0
    nhc = systems.NoseHooverChain(potentials.Harmonic(omega=omega), temperature=tau,
                                  chain_length=3, tau=1.0)
    # deterministic dynamics: distinct initial conditions make the 16 chains independent
    q0 = np.linspace(-2.0, 2.0, 16)[:, None]
    p0 = np.random.default_rng(0).normal(size=(16, 1))
    traj = dynopt.integrate(nhc, None, q0, p0=p0, h=0.02, n_steps=2_000_000, record_every=10,
                            seed=0)
    q = traj.q[:, 10_000:, 0]
    p = traj.p[:, 10_000:, 0]
    for sample, exact in ((q**2, tau / omega**2), (q**4, 3 * (tau / omega**2) ** 2),
                          (p**2, tau)):
        se = diagnostics.batch_means_se(sample)
        # leapfrog-based thermostat at h = 0.02: O(h²) ≈ 1e-4 bias, inside the allowance below
        assert abs(sample.mean() - exact) < 4 * se + 2e-3 * exact, (sample.mean(), exact, se)
