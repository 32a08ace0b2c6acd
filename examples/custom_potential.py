"""Bring your own potential to both backends, and continue a run from its final state.

    python examples/custom_potential.py
"""

from __future__ import annotations

import numpy as np

import dynopt
from dynopt import potentials, systems


def value(q):  # array form: numpy or torch, q has shape (..., 2)
    return (q**4).sum(-1) - q[..., 0] * q[..., 1]


def numba_value(q):  # one configuration, numba-compilable
    return q[0] ** 4 + q[1] ** 4 - q[0] * q[1]


def numba_grad(q, out):
    out[0] = 4 * q[0] ** 3 - q[1]
    out[1] = 4 * q[1] ** 3 - q[0]


pot = potentials.Custom(2, value=value, numba_value=numba_value, numba_grad=numba_grad,
                        name="quartic-coupled")
ham = systems.Hamiltonian(pot)
runs = {}
for backend in ("numba", "torch"):
    runs[backend] = traj = dynopt.integrate(ham, "leapfrog", [0.5, -0.2], p0=[0.3, 0.4], h=0.01,
                                            n_steps=20_000, backend=backend, record_every=100)
    drift = np.abs(traj.energy - traj.energy[:, :1]).max()
    print(f"{backend:5s}: max |H(t) - H(0)| over 20k leapfrog steps = {drift:.2e}")
gap = np.abs(runs["numba"].q - runs["torch"].q).max()
print(f"numba vs torch, max |Δq| = {gap:.1e}")

# continue the numba run for another 20k steps from where it stopped
more = dynopt.integrate(ham, "leapfrog", None, h=0.01, n_steps=20_000,
                        state=runs["numba"].final_state)
print(f"continued to t = {more.t[-1]:.0f}; energy still {more.energy[0, -1]:.6f}")
