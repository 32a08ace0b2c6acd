"""Events inside an optimizer: triggers evaluated on the device, one host check per step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..events.actions import Action
from ..events.engine import EventLog, EventSet
from ..events.triggers import Trigger

__all__ = ["OptimizerEvents", "as_scalar", "move_state"]


def as_scalar(value: Any, device: torch.device) -> Tensor:
    """A 1-element float64 tensor on ``device``, without a host synchronisation: a tensor is
    cast on its device, a number is written by a fill kernel (``torch.full``), not copied from
    host memory (``torch.tensor([x], device="cuda")`` is a pageable host-to-device copy, which
    synchronises the stream)."""
    if isinstance(value, Tensor):
        return value.detach().reshape(1).to(device=device, dtype=torch.float64)
    return torch.full((1,), float(value), dtype=torch.float64, device=device)


class OptimizerEvents:
    """The events of one optimizer.

    The triggers run in array form on 1-element float64 tensors on the parameters' device (the
    loss stays on the GPU). After evaluating all of them, one ``bool()`` of the OR of the
    fired flags is the only host synchronisation of the step; only on a step where something
    fired are the firings logged and the actions handed back. All state (trigger references,
    counters, "once" latches, the log) lives in ``optimizer.global_state["events"]`` and is
    saved in the optimizer's ``state_dict``.

    Args:
        events: Triggers, or None.
        owner: The optimizer's name (for error messages).
        supported: Action types the optimizer implements.
        observables: Observables the optimizer provides.
    """

    def __init__(self, events: Iterable[Trigger] | Trigger | None, owner: str,
                 supported: Sequence[type[Action]], observables: Sequence[str]) -> None:
        self.set = EventSet([] if events is None else events)
        self.set.check_supported(owner, supported, observables)

    def __len__(self) -> int:
        return len(self.set)

    def needs(self, observable: str) -> bool:
        return observable in self.set.observables

    def fire(self, global_state: dict[str, Any], values: Mapping[str, Tensor], step: int,
             device: torch.device) -> list[Action]:
        """Evaluate the triggers; returns the actions of the events that fired this step."""
        if not len(self.set):
            return []
        est = global_state.get("events")
        if est is None:
            est = global_state["events"] = self.set.init_state(
                torch.zeros(1, dtype=torch.float64, device=device))
        elif est["done"] and est["done"][0].device != device:
            # made where an earlier step observed (a step without gradients observes on the
            # CPU; the first stepping tensor's device can change): follow the values
            move_state(est, device)
        masks = self.set.observe(est, values, step)
        if not bool(torch.cat([m.reshape(-1) for m in masks]).any()):  # the one check
            return []
        actions: list[Action] = []
        for i, m in enumerate(masks):
            if bool(m.any()):
                self.set.record_one(est, i, m, values, step)
                actions += self.set.events[i].actions
        return actions

    def log(self, global_state: dict[str, Any]) -> EventLog:
        est = global_state.get("events")
        return EventLog() if est is None else self.set.log(est)


def move_state(est: dict[str, Any], device: torch.device) -> None:
    """Move the triggers' state and the "once" latches of ``est`` (made by
    :meth:`~dynopt.events.EventSet.init_state`) to ``device``, in place."""
    est["trig"] = [{k: v.to(device) for k, v in st.items()} for st in est["trig"]]
    est["done"] = [d.to(device) for d in est["done"]]
