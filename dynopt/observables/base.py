"""What an observable is: a function of the state recorded per chain at every record step."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Context", "Observable"]


@dataclass
class Context:
    """What an observable may read at a record.

    Attributes:
        state: The :class:`~dynopt.stepping.State` (q, p, x of shape ``(chains, ...)``).
        system: The system (its ``potential`` is U).
        step: The step counter of the record.
        chain_ids: Global index of each chain (``state.streams``' ids, else 0..chains−1): key
            per-chain randomness by these, never by the position in the batch.
        record: Index of this record within the run (0 for the initial state).
    """

    state: Any
    system: Any
    step: int
    chain_ids: list[int]
    record: int = 0

    @property
    def potential(self) -> Any:
        return self.system.potential


class Observable(abc.ABC):
    """A per-chain quantity recorded into ``traj.extras[name]`` (``(chain, draw, ...)``).

    Subclasses compute, without host synchronisation, a dict of tensors whose first axis is the
    chain axis; the recorder stores each under its key (``traj.extras[key]``).
    """

    @abc.abstractmethod
    def __call__(self, ctx: Context) -> dict[str, torch.Tensor]:
        """Name -> tensor of shape ``(chains,)`` or ``(chains, k)`` at this record."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
