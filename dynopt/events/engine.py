"""Evaluating triggers, latching "once" events and logging every firing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .actions import Action
from .triggers import Trigger

__all__ = ["EventLog", "EventSet", "Firing"]

Array = Any


@dataclass(frozen=True)
class Firing:
    """One firing of one event.

    Attributes:
        step: The step count at the observation (the state after ``step`` steps).
        chain: The chain (0 in an optimizer).
        event: Index of the event in the list given by the user.
        trigger: The trigger's repr.
        observable: What it watched.
        value: The observable's value when it fired.
        actions: The reprs of the actions performed.
    """

    step: int
    chain: int
    event: int
    trigger: str
    observable: str
    value: float
    actions: tuple[str, ...]


class EventLog(list):  # list[Firing]
    """Every firing, in order (a list of :class:`Firing` with a few helpers)."""

    def steps(self, event: int | None = None) -> list[int]:
        """The steps at which ``event`` (or any event) fired."""
        return [f.step for f in self if event is None or f.event == event]

    def __repr__(self) -> str:
        return f"EventLog({list.__repr__(self)})"


class EventSet:
    """A list of triggers with their actions, evaluated together.

    The set itself is configuration; all mutable state (trigger state, "once" latches and the
    log as plain lists) lives in a dict made by :meth:`init_state`, so an optimizer can keep it
    in its ``state_dict`` and ``integrate()`` in its loop.

    Args:
        events: Triggers (each carrying its ``then=`` actions).
    """

    def __init__(self, events: Iterable[Trigger] | Trigger) -> None:
        if isinstance(events, Trigger):
            evs = [events]
        elif isinstance(events, (str, bytes)) or not hasattr(events, "__iter__"):
            raise TypeError(f"events must be a dynopt.events trigger or a list of them, got "
                            f"{events!r}")
        elif isinstance(events, set | frozenset | dict):
            raise TypeError(f"events must be ordered (a list or tuple): their actions apply in "
                            f"list order, and a {type(events).__name__}'s order changes from "
                            f"run to run; got {events!r}")
        else:
            evs = list(events)
        for i, e in enumerate(evs):
            if not isinstance(e, Trigger):
                raise TypeError(f"events[{i}] must be a dynopt.events trigger (e.g. LossBelow), "
                                f"got {e!r}")
        self.events: list[Trigger] = evs

    def __len__(self) -> int:
        return len(self.events)

    @property
    def observables(self) -> set[str]:
        return {e.observable for e in self.events}

    def actions(self) -> list[Action]:
        return [a for e in self.events for a in e.actions]

    def check_supported(self, owner: str, supported: Sequence[type], observables: Sequence[str]
                        ) -> None:
        """Raise ValueError naming the first unsupported action or observable."""
        for i, e in enumerate(self.events):
            if e.observable not in observables:
                raise ValueError(f"events[{i}] = {e!r} watches {e.observable!r}, which {owner} "
                                 f"does not provide (it provides {list(observables)})")
            for a in e.actions:
                if not isinstance(a, tuple(supported)):
                    names = [t.__name__ for t in supported]
                    raise ValueError(f"events[{i}] = {e!r}: {owner} does not support the action "
                                     f"{a!r} (supported: {names})")

    # --- state ------------------------------------------------------------------------------
    def init_state(self, like: Array) -> dict[str, Any]:
        """Fresh state for chains shaped like ``like`` (numpy array or tensor, shape (n,))."""
        if isinstance(like, np.ndarray):
            done = [np.zeros(like.shape, dtype=bool) for _ in self.events]
        else:
            import torch

            done = [torch.zeros(like.shape, dtype=torch.bool, device=like.device)
                    for _ in self.events]
        return {"trig": [e.init_state(like) for e in self.events], "done": done,
                "log": {"step": [], "chain": [], "event": [], "value": []}}

    def observe_one(self, state: dict[str, Any], i: int, values: Mapping[str, Array],
                    step: int) -> Array:
        """Evaluate event ``i``; returns the boolean mask of the chains that fire (computed in
        the arrays' namespace and device: no host synchronisation)."""
        e = self.events[i]
        v = values[e.observable]
        st = state["trig"][i]
        cond = e.condition(v, step, st)
        done = state["done"][i]
        fired = cond & ~done if e.once else cond
        if e.once:
            _latch(done, fired)
        e.after_fire(v, fired, st)
        return fired

    def observe(self, state: dict[str, Any], values: Mapping[str, Array], step: int,
                only: Sequence[int] | None = None) -> list[Array]:
        """:meth:`observe_one` for every event (or those in ``only``), in order."""
        idx = range(len(self.events)) if only is None else only
        return [self.observe_one(state, i, values, step) for i in idx]

    def record_one(self, state: dict[str, Any], i: int, mask: Array,
                   values: Mapping[str, Array], step: int) -> list[Firing]:
        """Append the firings of event ``i`` (chains where ``mask``) to the log (host side)."""
        e = self.events[i]
        m = _to_numpy(mask).astype(bool).reshape(-1)
        out: list[Firing] = []
        if not m.any():
            return out
        log = state["log"]
        vals = _to_numpy(values[e.observable]).astype(np.float64).reshape(-1)
        for c in np.flatnonzero(m):
            val = float(vals[c] if vals.size > 1 else vals[0])
            log["step"].append(int(step))
            log["chain"].append(int(c))
            log["event"].append(i)
            log["value"].append(val)
            out.append(self._firing(int(step), int(c), i, val))
        return out

    def record(self, state: dict[str, Any], fired: list[Array], values: Mapping[str, Array],
               step: int) -> list[Firing]:
        """:meth:`record_one` for every event."""
        out: list[Firing] = []
        for i, mask in enumerate(fired):
            out += self.record_one(state, i, mask, values, step)
        return out

    def _firing(self, step: int, chain: int, i: int, value: float) -> Firing:
        e = self.events[i]
        return Firing(step=step, chain=chain, event=i, trigger=repr(e), observable=e.observable,
                      value=value, actions=tuple(map(repr, e.actions)))

    def log(self, state: dict[str, Any]) -> EventLog:
        """The log of ``state`` as :class:`Firing` records."""
        lg = state["log"]
        return EventLog(self._firing(s, c, i, v) for s, c, i, v in
                        zip(lg["step"], lg["chain"], lg["event"], lg["value"], strict=True))


def _latch(done: Array, fired: Array) -> None:
    if isinstance(done, np.ndarray):
        done |= fired
    else:
        done.logical_or_(fired)


def _to_numpy(a: Array) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)
