"""The optimizers by name: ``make(name, model_or_params, **hyperparameters)`` (used by
``dynopt train``); every optimizer module registers its factory with :func:`register`.

This is the registry of *optimizer classes*; the registry of the *dynamics* a param group can
run is :data:`dynopt.optim.dynamics.REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["REGISTRY", "make", "register"]

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
