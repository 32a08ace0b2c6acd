"""Observables by name: what ``integrate(..., observables=[...])`` accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Observable
from .callback import Callback
from .layers import LayerConfigurational, LayerKinetic
from .loss import HeldoutLoss, Loss
from .theta import Projections, Theta

__all__ = ["NAMES", "resolve"]

#: Name -> factory of the built-in observables.
NAMES: dict[str, Callable[[], Observable]] = {
    "loss": Loss,
    "heldout_loss": HeldoutLoss,
    "layer_kinetic": LayerKinetic,
    "layer_configurational": LayerConfigurational,
    "projections": Projections,
    "theta": Theta,
}


def resolve(observables: Any) -> list[Observable]:
    """A list of :class:`Observable` from objects, names and callables.

    Raises:
        TypeError: ``observables`` is not a list/tuple or an entry is none of the above.
        ValueError: An unknown name.
    """
    if isinstance(observables, str | Observable) or callable(observables):
        observables = [observables]
    if not isinstance(observables, list | tuple):
        raise TypeError(f"observables must be a list of observables, names or callables, got "
                        f"{observables!r}")
    out: list[Observable] = []
    named: dict[str, int] = {}  # a bare callable's __name__ -> its entry
    for k, item in enumerate(observables):
        if isinstance(item, Observable):
            out.append(item)
        elif isinstance(item, str):
            if item not in NAMES:
                raise ValueError(f"unknown observable {item!r}; choose from {sorted(NAMES)}")
            out.append(NAMES[item]())
        elif isinstance(item, type) and issubclass(item, Observable):
            # a class is callable too: it became a Callback that called Theta(state)
            raise TypeError(f"observables entries must be Observable objects, not classes: "
                            f"got {item.__name__}; pass {item.__name__}()")
        elif callable(item):
            name = getattr(item, "__name__", "callback")
            if name in named:  # two lambdas: both '<lambda>'; the recorder refused a "clash"
                raise ValueError(
                    f"observables entries {named[name]} and {k} are both functions named "
                    f"{name!r}, and a function is recorded under its __name__: name each one "
                    f"with dynopt.observables.Callback('a_name', fn), e.g. "
                    f"[Callback('m1', f1), Callback('m2', f2)]")
            named[name] = k
            out.append(Callback(name, item))
        else:
            raise TypeError(f"observables entries must be Observable objects, names or "
                            f"callables, got {item!r}")
    return out
