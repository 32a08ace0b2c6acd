"""Continuous-time systems: the dynamics, one object each.

A system knows its state variables, the sub-flows (letters) it offers to splitting integrators,
its energy or conserved invariant, and its parameters (validated at construction).
"""

from ..ddp.trajectory import DDPTrajectory as DDPTrajectory
from .adaptive_langevin import AdaptiveLangevin as AdaptiveLangevin
from .base import AbstractSystem as AbstractSystem
from .born_infeld import BornInfeld as BornInfeld
from .ecd_sep import ECDSep as ECDSep
from .hamiltonian import Hamiltonian as Hamiltonian
from .langevin import Langevin as Langevin
from .nose_hoover import NoseHoover as NoseHoover
from .nose_hoover_chain import NoseHooverChain as NoseHooverChain
from .overdamped import OverdampedLangevin as OverdampedLangevin
from .port_hamiltonian import PortHamiltonian as PortHamiltonian

__all__ = [
    "AbstractSystem",
    "AdaptiveLangevin",
    "BornInfeld",
    "DDPTrajectory",
    "ECDSep",
    "Hamiltonian",
    "Langevin",
    "NoseHoover",
    "NoseHooverChain",
    "OverdampedLangevin",
    "PortHamiltonian",
]
