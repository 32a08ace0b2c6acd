"""Dynamics as ``torch.optim.Optimizer`` objects, built from the same systems and schemes as
``integrate()``.

``make(name, model_or_params, **hyperparameters)`` builds an optimizer by its registry name
(any case; the class names ``"Langevin"``, ``"NoseHoover"`` work too; used by ``dynopt train``;
:mod:`dynopt.optim.registry`); every optimizer module registers itself with :func:`register`.
"""

from __future__ import annotations

from .base import DynamicsOptimizer as DynamicsOptimizer
from .registry import REGISTRY as REGISTRY
from .registry import make as make
from .registry import register as register

__all__ = ["BBI", "LOL", "REGISTRY", "AdLaLa", "AdaptiveLangevin", "DDPNOpt", "DynamicsOptimizer",
           "ECDSep", "HeavyBall", "Langevin", "NoseHoover", "OverdampedLangevin", "Partitioned",
           "make", "register"]


# Optimizer modules register their factories (registry.py) and dynamics (dynamics.py).
from .adaptive_langevin import AdaptiveLangevin as AdaptiveLangevin
from .adlala import AdLaLa as AdLaLa
from .bbi import BBI as BBI
from .ddpnopt import DDPNOpt as DDPNOpt
from .ecd_sep import ECDSep as ECDSep
from .heavy_ball import HeavyBall as HeavyBall
from .langevin import Langevin as Langevin
from .lol import LOL as LOL
from .nose_hoover import NoseHoover as NoseHoover
from .overdamped import OverdampedLangevin as OverdampedLangevin
from .partitioned import Partitioned as Partitioned
