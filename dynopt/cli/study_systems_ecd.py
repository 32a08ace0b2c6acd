"""Energy-conserving and port-Hamiltonian systems for ``dynopt study --system NAME``.

Each entry is ``name: (factory(potential, args) -> system, help)`` in the form of
:data:`dynopt.cli.study_registry.SYSTEMS`; wire them in with one line there::

    SYSTEMS.update({k: SystemEntry(f, h) for k, (f, h) in ECD_SYSTEMS.items()})

``dynopt study --system born-infeld --potential ackley`` then integrates BBI's map ``"SBA"``;
the study's energy drift is that of H = √(V(V + |Π|²)) at the recorded states (before the
next projection), and :func:`dynopt.reproductions.bbi.energy_study` (run by
``dynopt reproduce bbi``) adds the shell after projection and the speed limit.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..potentials.base import AbstractPotential
from ..systems import BornInfeld, ECDSep, PortHamiltonian
from ..systems.base import AbstractSystem

__all__ = ["ECD_SYSTEMS"]

Factory = Callable[[AbstractPotential, argparse.Namespace], AbstractSystem]

ECD_SYSTEMS: dict[str, tuple[Factory, str]] = {
    "born-infeld": (
        lambda pot, a: BornInfeld(pot, v0=0.0, delta_energy=1.0, t0=20, n_bounces=4, t1=100),
        "Born–Infeld (BBI) energy-conserving descent, scheme SBA: δE = 1, bounces T0 = 20, "
        "N_b = 4, T1 = 100 (momenta: direction from --temperature, norm from the shell)"),
    "ecdsep": (
        lambda pot, a: ECDSep(pot, F0=-1.0, eta=1.0, nu=1e-3, delta_energy=1.0),
        "ECDSep energy-conserving descent, scheme SBAR: F0 = −1, η = 1, ν = 1e-3, δE = 1"),
    "port-hamiltonian": (
        lambda pot, a: PortHamiltonian(pot, gamma=a.gamma),
        "port-Hamiltonian heavy ball (scheme FBA = SGD with momentum), friction --gamma"),
}
