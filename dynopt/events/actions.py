"""What an event does when it fires."""

from __future__ import annotations

from typing import Any

from .._validation import check_nonnegative

__all__ = ["Action", "Bounce", "SetFriction", "Stop", "SwitchDynamics"]


class Action:
    """Base class of event actions.

    Where an action takes effect is decided by its user: ``integrate()`` applies it to the
    chains whose trigger fired, an optimizer to the whole model. Each optimizer lists the
    actions it supports (``supported_actions``) and rejects others at construction.
    """

    #: Whether the action needs the host (Python) to act, e.g. to stop a loop.
    host_only: bool = False

    def describe(self) -> str:
        return repr(self)


class SetFriction(Action):
    """Set the friction γ to ``gamma`` (the port-Hamiltonian "brake").

    In ``integrate()`` it needs a system with a per-chain ``gamma`` extra
    (:class:`dynopt.systems.PortHamiltonian`); in :class:`dynopt.optim.HeavyBall` it overrides
    the groups' ``gamma`` from the firing step on (the update of that very step uses it).

    Args:
        gamma: The new friction γ ≥ 0.
    """

    def __init__(self, gamma: float) -> None:
        self.gamma = check_nonnegative("gamma", gamma)

    def __repr__(self) -> str:
        return f"SetFriction(gamma={self.gamma:g})"


class SwitchDynamics(Action):
    """Continue with other dynamics (``integrate()`` only), per chain.

    The new system must have the same extras layout and momentum variables as the current one
    (e.g. Hamiltonian → Langevin, or PortHamiltonian with another scheme), so the state carries
    over unchanged, extras included: a PortHamiltonian's friction γ is such an extra, so a
    switch to another γ is refused (use :class:`SetFriction`).

    Args:
        system: The new system (same potential dimension).
        integrator: Its integrator (default: the new system's default scheme).
    """

    def __init__(self, system: Any, integrator: Any = None) -> None:
        from ..systems.base import AbstractSystem

        if not isinstance(system, AbstractSystem):
            raise TypeError(f"system must be a dynopt system, got {system!r}")
        self.system = system
        self.integrator = integrator

    def __repr__(self) -> str:
        return f"SwitchDynamics({self.system!r})"


class Bounce(Action):
    """Give the momenta a random direction with the same kinetic energy pᵀM⁻¹p (positions
    unchanged; with unit mass, the same norm).

    Directions come from the run's own generator (numba: Philox stream 4, a pure function of
    (seed, chain, step); torch: the state's or optimizer's generator), Gaussian (uniform on the
    sphere). :class:`dynopt.optim.BBI` performs it as one of its own bounce steps instead.
    """

    def __repr__(self) -> str:
        return "Bounce()"


class Stop(Action):
    """Stop: in ``integrate()`` the chain freezes (and the run ends once every chain has
    stopped); an optimizer's later ``step()`` calls do nothing (``optimizer.stopped``)."""

    host_only = True

    def __repr__(self) -> str:
        return "Stop()"
