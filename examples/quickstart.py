"""Langevin dynamics on a double well: integrate, then check the invariant measure.

    python examples/quickstart.py
"""

from __future__ import annotations

import numpy as np

import dynopt
from dynopt import potentials, systems

system = systems.Langevin(potentials.DoubleWell(dim=1), gamma=1.0, temperature=0.25)
traj = dynopt.integrate(system, "BAOAB", [1.0], h=0.05, n_steps=200_000, n_chains=16, seed=0,
                        record_every=10)
burn = traj.n_draws // 10
q = traj.q[:, burn:, 0]
print(f"{traj}")
print(f"<q>   = {q.mean():+.4f}   (exact 0)")
print(f"<q^2> = {(q**2).mean():.4f}    (0.917671 by quadrature of the Gibbs density)")
print(f"P(q>0) = {(q > 0).mean():.3f}    (exact 0.5)")
print(f"<p^2> = {(traj.p[:, burn:] ** 2).mean():.4f}    (tau = 0.25; BAOAB's kinetic bias is "
      f"O(h^2))")
crossings = np.abs(np.diff(np.sign(traj.q[..., 0]), axis=1)).sum() / 2
print(f"well crossings per chain: {crossings / traj.n_chains:.0f}")
