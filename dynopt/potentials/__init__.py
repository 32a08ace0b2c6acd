"""Potentials U(q) with gradients for both backends.

Built-ins: :class:`Harmonic`, :class:`DoubleWell`, :class:`Ackley`, :class:`Rastrigin`,
:class:`Rosenbrock`, :class:`Zakharov`,
:class:`MultiBasin`. Bring your own with :class:`Custom`; a network's training loss is
:class:`NetworkLoss`. :class:`Localized` adds an inverse temperature, a tether and a Gaussian
prior to any of them (local sampling).
"""

from .ackley import Ackley as Ackley
from .base import AbstractPotential as AbstractPotential
from .custom import Custom as Custom
from .double_well import DoubleWell as DoubleWell
from .harmonic import Harmonic as Harmonic
from .localized import Localized as Localized
from .multi_basin import MultiBasin as MultiBasin
from .network_loss import NetworkLoss as NetworkLoss
from .rastrigin import Rastrigin as Rastrigin
from .rosenbrock import Rosenbrock as Rosenbrock
from .zakharov import Zakharov as Zakharov

__all__ = ["AbstractPotential", "Ackley", "Custom", "DoubleWell", "Harmonic", "Localized",
           "MultiBasin", "NetworkLoss", "Rastrigin", "Rosenbrock", "Zakharov"]
