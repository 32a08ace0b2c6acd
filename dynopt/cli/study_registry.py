"""Name → factory registries for ``dynopt study``: systems and potentials.

Adding a system to the command line is one entry in :data:`SYSTEMS`, e.g.::

    SYSTEMS["born-infeld"] = SystemEntry(
        lambda pot, a: BornInfeld(pot, ...), "Born–Infeld energy-conserving descent")

A factory receives the potential and the parsed command-line options (``temperature``, ``gamma``,
``seed``, ...) and returns a :class:`~dynopt.systems.base.AbstractSystem`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._validation import check_positive
from ..potentials import (
    Ackley,
    DoubleWell,
    Harmonic,
    MultiBasin,
    Rastrigin,
    Rosenbrock,
    Zakharov,
)
from ..potentials.base import AbstractPotential
from ..systems import (
    AdaptiveLangevin,
    Hamiltonian,
    Langevin,
    NoseHoover,
    NoseHooverChain,
    OverdampedLangevin,
)
from ..systems.base import AbstractSystem
from .study_systems_ecd import ECD_SYSTEMS

__all__ = ["POTENTIALS", "SYSTEMS", "PotentialEntry", "SystemEntry", "build_system",
           "check_scheme"]


@dataclass(frozen=True)
class SystemEntry:
    """A system the study command can build.

    Attributes:
        factory: ``(potential, args) -> system``.
        help: One line for ``--help``; it names ``--gamma`` if and only if the factory reads
            it (:func:`build_system` refuses a ``--gamma`` the system would ignore).
    """

    factory: Callable[[AbstractPotential, argparse.Namespace], AbstractSystem]
    help: str


@dataclass(frozen=True)
class PotentialEntry:
    """A potential the study command can build.

    Attributes:
        factory: ``dim -> potential``.
        default_dim: Dimension used when ``--dim`` is not given.
        start: Coordinate value every chain starts from (all coordinates), unless ``--q0``.
        h: Step size used unless ``--h`` is given, stable from ``start`` for the default
            schemes. Zakharov's curvature at (1, ..., 1), 8.7·10⁵, puts the harmonic limit at
            0.0021; BAOAB at h = 0.002 diverged in all of 30 seeds of 64 chains, at 0.0015 in
            none, so its entry takes 0.001.
    """

    factory: Callable[[int], AbstractPotential]
    default_dim: int
    start: float
    h: float = 0.05


def _period(a: argparse.Namespace) -> float:
    """Thermostat period 1/γ (γ read as a collision frequency)."""
    return 1.0 / check_positive("--gamma", a.gamma)


def _adaptive(pot: AbstractPotential, a: argparse.Namespace) -> AbstractSystem:
    # σ_A = √(2γτ) makes the stationary friction ⟨ξ⟩ = σ_A²/(2τ) equal to --gamma.
    return AdaptiveLangevin(pot, temperature=a.temperature,
                            sigma_a=math.sqrt(2.0 * a.gamma * a.temperature), xi0=a.gamma)


SYSTEMS: dict[str, SystemEntry] = {
    "hamiltonian": SystemEntry(lambda pot, a: Hamiltonian(pot),
                               "NVE; initial momenta Maxwell–Boltzmann at --temperature"),
    "langevin": SystemEntry(
        lambda pot, a: Langevin(pot, gamma=a.gamma, temperature=a.temperature),
        "underdamped Langevin, friction --gamma"),
    "overdamped": SystemEntry(
        lambda pot, a: OverdampedLangevin(pot, temperature=a.temperature,
                                          gamma=check_positive("--gamma", a.gamma)),
        "overdamped (Brownian) Langevin, time scale --gamma"),
    "adaptive-langevin": SystemEntry(
        _adaptive, "adaptive Langevin with σ_A = √(2·gamma·temperature), so ⟨ξ⟩ = --gamma"),
    "nose-hoover": SystemEntry(
        lambda pot, a: NoseHoover(pot, temperature=a.temperature, tau=_period(a)),
        "single Nosé–Hoover thermostat, period 1/--gamma"),
    "nose-hoover-chain": SystemEntry(
        lambda pot, a: NoseHooverChain(pot, temperature=a.temperature, tau=_period(a),
                                       chain_length=3),
        "Nosé–Hoover chain of length 3, period 1/--gamma"),
}

POTENTIALS: dict[str, PotentialEntry] = {
    "harmonic": PotentialEntry(lambda d: Harmonic(1.0, dim=d), 1, 0.0),
    "double-well": PotentialEntry(lambda d: DoubleWell(dim=d), 1, 1.0),
    "ackley": PotentialEntry(lambda d: Ackley(dim=d), 2, 0.5),
    "rastrigin": PotentialEntry(lambda d: Rastrigin(dim=d), 2, 0.0),
    "rosenbrock": PotentialEntry(lambda d: Rosenbrock(dim=d), 2, 1.0, h=0.005),
    "ackley-bbi": PotentialEntry(lambda d: Ackley(dim=d, b=0.02), 2, 3.0),
    "zakharov": PotentialEntry(lambda d: Zakharov(dim=d), 10, 1.0, h=0.001),
    "multi-basin": PotentialEntry(lambda d: MultiBasin(dim=d), 2, 6.0),
}

# energy-conserving descent and the port-Hamiltonian heavy ball (dynopt.cli.study_systems_ecd)
SYSTEMS.update({k: SystemEntry(f, h) for k, (f, h) in ECD_SYSTEMS.items()})


def build_system(name: str, potential: AbstractPotential, args: argparse.Namespace
                 ) -> AbstractSystem:
    """``SYSTEMS[name]`` on ``potential``; a ``--gamma`` given for a system without friction or
    thermostat period is refused, not silently ignored."""
    entry = SYSTEMS[name]
    if not getattr(args.gamma, "is_default", False) and "--gamma" not in entry.help:
        raise ValueError(f"--gamma does not apply to --system {name} (got {args.gamma!r}): "
                         f"{entry.help}")
    return entry.factory(potential, args)


def check_scheme(system: AbstractSystem, integ: Any) -> None:
    """``integ`` can drive ``system``, and keeps its thermostat: a scheme without noise on a
    stochastic system would be reported against temperature targets that do not apply."""
    integ.check(system)
    if system.is_stochastic and integ.program(system, 1.0).n_noise_ops == 0:
        raise ValueError(f"--integrator {integ.name} draws no noise, so it drops "
                         f"{type(system).__name__}'s thermostat and its temperature targets do "
                         "not apply; use a scheme with an O step (e.g. BAOAB) or --system "
                         "hamiltonian")
