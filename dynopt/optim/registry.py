"""The optimizers by name: ``make(name, model_or_params, **hyperparameters)`` (used by
``dynopt train``); every optimizer module registers its factory with :func:`register`.

This is the registry of *optimizer classes*; the registry of the *dynamics* a param group can
run is :data:`dynopt.optim.dynamics.REGISTRY`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["REGISTRY", "canonical_name", "make", "register"]

#: name → factory ``(params, **kwargs) -> optimizer`` (``params`` may be a module).
REGISTRY: dict[str, Callable[..., torch.optim.Optimizer]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding an optimizer factory to :data:`REGISTRY`."""

    clash = [known for known in REGISTRY if known != name and _key(known) == _key(name)]
    if clash:  # canonical_name could not tell them apart
        raise ValueError(f"optimizer name {name!r} differs from the registered {clash[0]!r} "
                         "only in case or separators")

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[name] = factory
        return factory

    return deco


def _key(name: str) -> str:
    return re.sub(r"[\s_-]", "", name.casefold())


def canonical_name(name: str) -> str:
    """The registered name that ``name`` spells, ignoring case, hyphens, underscores and spaces.

    So ``"Langevin"``, ``"NoseHoover"`` (the class names) and ``"nose_hoover"`` all give the
    registered ``"langevin"`` and ``"nose-hoover"``; outputs use the registered name.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: Naming ``name`` and listing the registered names, if none matches.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a string, got {name!r} of type "
                        f"{type(name).__name__}")
    matches = [known for known in REGISTRY if _key(known) == _key(name)]
    if len(matches) != 1:  # registered names differ in more than case and separators
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return matches[0]


def make(name: str, model_or_params: Any, **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` (any case; see :func:`canonical_name`) for a module
    (its parameters) or parameters."""
    return REGISTRY[canonical_name(name)](model_or_params, **kwargs)
