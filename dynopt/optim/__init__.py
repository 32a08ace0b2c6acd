"""Dynamics as ``torch.optim.Optimizer`` objects, built from the same systems and schemes as
``integrate()``.

``make(name, model_or_params, **hyperparameters)`` builds an optimizer by its registry name (used
by ``dynopt train``); every optimizer module registers itself with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .base import DynamicsOptimizer as DynamicsOptimizer

__all__ = ["BBI", "LOL", "REGISTRY", "AdLaLa", "AdaptiveLangevin", "DDPNOpt", "DynamicsOptimizer",
           "ECDSep", "HeavyBall", "Langevin", "NoseHoover", "OverdampedLangevin", "Partitioned",
           "make", "register"]

#: name → factory ``(params, **kwargs) -> optimizer`` (``params`` may be a module).
REGISTRY: dict[str, Callable[..., torch.optim.Optimizer]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding an optimizer factory to :data:`REGISTRY`."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[name] = factory
        return factory

    return deco


def make(name: str, model_or_params: Any, **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` for a module (its parameters) or parameters."""
    if name not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](model_or_params, **kwargs)


# Optimizer modules register themselves on import (after ``register`` exists).
from .adaptive_langevin import AdaptiveLangevin as AdaptiveLangevin  # noqa: E402
from .adlala import AdLaLa as AdLaLa  # noqa: E402
from .bbi import BBI as BBI  # noqa: E402
from .ddpnopt import DDPNOpt as DDPNOpt  # noqa: E402
from .ecd_sep import ECDSep as ECDSep  # noqa: E402
from .heavy_ball import HeavyBall as HeavyBall  # noqa: E402
from .langevin import Langevin as Langevin  # noqa: E402
from .lol import LOL as LOL  # noqa: E402
from .nose_hoover import NoseHoover as NoseHoover  # noqa: E402
from .overdamped import OverdampedLangevin as OverdampedLangevin  # noqa: E402
from .partitioned import Partitioned as Partitioned  # noqa: E402
