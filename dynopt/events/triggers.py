r"""Triggers: conditions on observables that fire events.

A trigger watches one observable (``"loss"``, ``"energy"``, ``"step"`` or, in ``integrate()``
only, ``"state"``) and keeps a little state per chain (reference loss, running minimum,
counters). Its logic is written once in array form (numpy or torch, any device), so the same
trigger runs per chain in ``integrate()`` and on the device in an optimizer without host
synchronisation.

| trigger | fires when | default |
|---|---|---|
| :class:`LossBelow` (f) | L ≤ f · L₀ (L₀: the first observed loss) | once |
| :class:`RelativeReduction` (f) | L ≤ (1 − f) · L_ref, then L_ref ← L (staged goals) | repeats |
| :class:`Plateau` (k) | no new minimum for k consecutive observations (counter reset) | repeats |
| :class:`Threshold` (v) | the observable is below (or above) v | once |
| :class:`EnergyBelow`, :class:`EnergyAbove` | energy threshold | once |
| :class:`AtStep` (n) | the step count reaches n | once |
| :class:`StateCondition` (fn) | ``fn(q, p)`` is true (``integrate()`` only) | once |
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._validation import check_int, check_positive, check_probability, check_real
from .actions import Action

__all__ = ["AtStep", "EnergyAbove", "EnergyBelow", "LossBelow", "Plateau", "RelativeReduction",
           "StateCondition", "Threshold", "Trigger"]

Array = Any


def _xp(a: Array) -> Any:
    import torch

    return torch if isinstance(a, torch.Tensor) else np


def _full(like: Array, value: float) -> Array:
    xp = _xp(like)
    if xp is np:
        return np.full(np.shape(like), value, dtype=np.float64)
    return xp.full_like(like, value, dtype=like.dtype if like.is_floating_point() else None)


def _where(mask: Array, a: Array, b: Array) -> Array:
    return _xp(mask).where(mask, a, b)


class Trigger:
    """Base class: a condition on an observable plus the actions it fires.

    Args:
        then: The action (or actions) performed when the trigger fires.
        once: Fire at most once per chain (default depends on the trigger).
    """

    observable: str = "loss"
    default_once: bool = True

    def __init__(self, then: Action | Sequence[Action] = (), *, once: bool | None = None) -> None:
        if isinstance(then, type) and issubclass(then, Action):
            raise TypeError(f"then must be an Action instance, got the class {then.__name__}: "
                            f"write then={then.__name__}(...)")
        if then is None or isinstance(then, str | bytes) or not isinstance(then, Action | Sequence):
            raise TypeError(f"then must be an Action or a list of Actions, got {then!r}")
        actions = [then] if isinstance(then, Action) else list(then)
        for a in actions:
            if not isinstance(a, Action):
                raise TypeError(f"then must be an Action or a list of Actions, got {a!r}")
        self.actions: list[Action] = actions
        if once is not None and not isinstance(once, bool):
            raise TypeError(f"once must be a bool, got {once!r}")
        self.once = self.default_once if once is None else once

    # --- array-form logic (numpy or torch), shapes (n,) ----------------------------------
    def init_state(self, like: Array) -> dict[str, Array]:
        """Per-chain state with the shape, dtype and device of ``like``."""
        return {}

    def condition(self, value: Array, step: int, st: dict[str, Array]) -> Array:
        """Boolean mask of chains whose condition holds; may update ``st`` (in place)."""
        raise NotImplementedError

    def after_fire(self, value: Array, fired: Array, st: dict[str, Array]) -> None:
        """Update the state of chains that fired (e.g. reset a reference)."""

    def _args(self) -> str:
        return ""

    def __repr__(self) -> str:
        acts = ", ".join(map(repr, self.actions))
        inner = ", ".join(x for x in (self._args(), f"then=[{acts}]" if acts else "") if x)
        return f"{type(self).__name__}({inner})"


def _assign(st: dict[str, Array], key: str, value: Array) -> None:
    """In-place update (keeps tensors that live in an optimizer's state)."""
    cur = st[key]
    if isinstance(cur, np.ndarray):
        cur[...] = value
    else:
        cur.copy_(value)


class LossBelow(Trigger):
    """Fires when the loss falls to ``fraction`` of the initial (first observed) loss.

    With ``then=SetFriction(γ)`` this is the goal-oriented braking of Burghoff, Heinrich Monells
    & Gottschalk (2023): explore with little friction until L ≤ f·L₀, then brake. The rule
    assumes a positive loss (a cross-entropy, a squared error): with L₀ ≤ 0, f·L₀ ≥ L₀ and it
    fires at once; shift such a loss (or use :class:`Threshold` on an absolute level).

    Args:
        fraction: f > 0.
        then: Actions.
        once: Default True.
    """

    def __init__(self, fraction: float, then: Action | Sequence[Action] = (), *,
                 once: bool | None = None) -> None:
        super().__init__(then, once=once)
        self.fraction = check_positive("fraction", fraction)

    def init_state(self, like: Array) -> dict[str, Array]:
        return {"reference": _full(like, math.nan)}

    def condition(self, value: Array, step: int, st: dict[str, Array]) -> Array:
        ref = st["reference"]
        _assign(st, "reference", _where(ref != ref, value, ref))  # NaN: first observation
        return value <= self.fraction * st["reference"]

    def _args(self) -> str:
        return f"fraction={self.fraction:g}"


class RelativeReduction(Trigger):
    """Fires each time the loss has fallen by ``fraction`` relative to the loss at the previous
    firing (initially the first observed loss): a sequence of goals L₀(1 − f)^k.

    Args:
        fraction: f in (0, 1).
        then: Actions.
        once: Default False.
    """

    default_once = False

    def __init__(self, fraction: float, then: Action | Sequence[Action] = (), *,
                 once: bool | None = None) -> None:
        super().__init__(then, once=once)
        self.fraction = check_probability("fraction", fraction, open_right=True)
        if self.fraction == 0.0:
            raise ValueError("fraction must be > 0, got 0.0")

    def init_state(self, like: Array) -> dict[str, Array]:
        return {"reference": _full(like, math.nan)}

    def condition(self, value: Array, step: int, st: dict[str, Array]) -> Array:
        ref = st["reference"]
        _assign(st, "reference", _where(ref != ref, value, ref))
        return value <= (1.0 - self.fraction) * st["reference"]

    def after_fire(self, value: Array, fired: Array, st: dict[str, Array]) -> None:
        _assign(st, "reference", _where(fired, value, st["reference"]))

    def _args(self) -> str:
        return f"fraction={self.fraction:g}"


class Plateau(Trigger):
    """Fires after ``k`` consecutive observations without a new minimum (then counts again).

    Args:
        k: Patience k ≥ 1.
        observable: ``"loss"`` (default) or ``"energy"``.
        then: Actions.
        once: Default False.
    """

    default_once = False

    def __init__(self, k: int, then: Action | Sequence[Action] = (), *,
                 observable: str = "loss", once: bool | None = None) -> None:
        super().__init__(then, once=once)
        self.k = check_int("k", k, minimum=1)
        if observable not in ("loss", "energy"):
            raise ValueError(f"observable must be 'loss' or 'energy', got {observable!r}")
        self.observable = observable

    def init_state(self, like: Array) -> dict[str, Array]:
        return {"best": _full(like, math.inf), "since": _full(like, 0.0)}

    def condition(self, value: Array, step: int, st: dict[str, Array]) -> Array:
        improved = value < st["best"]
        _assign(st, "best", _where(improved, value, st["best"]))
        _assign(st, "since", _where(improved, 0.0 * st["since"], st["since"] + 1.0))
        return st["since"] >= self.k

    def after_fire(self, value: Array, fired: Array, st: dict[str, Array]) -> None:
        _assign(st, "since", _where(fired, 0.0 * st["since"], st["since"]))

    def _args(self) -> str:
        return f"k={self.k}" + ("" if self.observable == "loss" else ", observable='energy'")


class Threshold(Trigger):
    """Fires when an observable is below (``below=True``) or above a fixed value.

    Args:
        value: The threshold.
        observable: ``"loss"`` or ``"energy"``.
        below: Direction.
        then: Actions.
        once: Default True.
    """

    def __init__(self, value: float, then: Action | Sequence[Action] = (), *,
                 observable: str = "loss", below: bool = True, once: bool | None = None) -> None:
        super().__init__(then, once=once)
        self.value = check_real("value", value)
        if observable not in ("loss", "energy"):
            raise ValueError(f"observable must be 'loss' or 'energy', got {observable!r}")
        self.observable = observable
        if type(below) is not bool:
            raise TypeError(f"below must be a bool, got {below!r}")
        self.below = below

    def condition(self, value: Array, step: int, st: dict[str, Array]) -> Array:
        return value < self.value if self.below else value > self.value

    def _args(self) -> str:
        return f"{self.observable} {'<' if self.below else '>'} {self.value:g}"


class EnergyBelow(Threshold):
    """Fires when the energy (H) drops below ``value``."""

    def __init__(self, value: float, then: Action | Sequence[Action] = (), *,
                 once: bool | None = None) -> None:
        super().__init__(value, then, observable="energy", below=True, once=once)


class EnergyAbove(Threshold):
    """Fires when the energy (H) rises above ``value``."""

    def __init__(self, value: float, then: Action | Sequence[Action] = (), *,
                 once: bool | None = None) -> None:
        super().__init__(value, then, observable="energy", below=False, once=once)


class AtStep(Trigger):
    """Fires when the step count (number of completed steps) reaches ``n``.

    Args:
        n: Step n ≥ 0.
        then: Actions.
    """

    observable = "step"

    def __init__(self, n: int, then: Action | Sequence[Action] = ()) -> None:
        super().__init__(then, once=True)
        self.n = check_int("n", n, minimum=0)

    def condition(self, value: Array, step: int, st: dict[str, Array]) -> Array:
        return value >= self.n

    def _args(self) -> str:
        return f"n={self.n}"


class StateCondition(Trigger):
    """Fires when ``fn(q, p)`` is true (``integrate()`` only; q, p numpy ``(chains, dim)``).

    Example: stop a chain once it enters a ball around a minimum,
    ``StateCondition(lambda q, p: ((q - c) ** 2).sum(-1) < r2, then=Stop())``.

    Args:
        fn: Vectorised predicate returning a boolean array of shape ``(chains,)``.
        then: Actions.
        name: Label for the log.
    """

    observable = "state"

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
                 then: Action | Sequence[Action] = (), *, name: str = "condition") -> None:
        super().__init__(then, once=True)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        self.fn = fn
        self.name = name

    def condition(self, value: Array, step: int, st: dict[str, Array]) -> Array:
        return np.asarray(value, dtype=bool)

    def _args(self) -> str:
        return repr(self.name)
