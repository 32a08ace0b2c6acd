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

__all__ = ["REGISTRY", "DDPNOpt", "DynamicsOptimizer", "make", "register"]

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


# optimizer modules register themselves on import (they need ``register`` above)
from .bbi import BBI as BBI  # noqa: E402
from .ddpnopt import DDPNOpt as DDPNOpt  # noqa: E402
from .ecd_sep import ECDSep as ECDSep  # noqa: E402
from .heavy_ball import HeavyBall as HeavyBall  # noqa: E402

__all__ += ["BBI", "DDPNOpt", "ECDSep", "HeavyBall"]
