"""What a backend provides: state creation, advancing a program, potential evaluation."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..program import Program
    from ..stepping import State
    from ..systems.base import AbstractSystem

__all__ = ["AbstractBackend", "Divergence", "Records"]


@dataclass
class Records:
    """Preallocated output arrays, filled every ``every`` steps from index ``next``.

    Shapes: ``q (C, R, D)``, ``p (C, R, Dp)``, ``x (C, R, E)``, ``u (C, R)``. The numba backend
    writes numpy arrays; the torch backend writes tensors of the same shapes on its device.
    With an ``observer`` (:class:`dynopt.observables.Recorder`, torch backend) the backend
    hands each record to it instead and q, p, x, u stay unused.
    """

    q: Any
    p: Any
    x: Any
    u: Any
    every: int
    next: int = 0
    observer: Any = None


@dataclass
class Divergence:
    """Where a run first became non-finite (returned by :meth:`AbstractBackend.advance`)."""

    step: int
    chain: int


class AbstractBackend(abc.ABC):
    """Executes :class:`~dynopt.program.Program` objects on a batch of chains."""

    name: str

    @abc.abstractmethod
    def init_state(
        self,
        system: AbstractSystem,
        q: np.ndarray,
        p: np.ndarray | None,
        *,
        seed: int,
        noise: str,
        dtype: Any,
        device: Any,
    ) -> State:
        """Create the state; draw default momenta and extras from the run's own generator."""

    @abc.abstractmethod
    def advance(
        self,
        system: AbstractSystem,
        program: Program,
        state: State,
        n_steps: int,
        records: Records | None,
    ) -> Divergence | None:
        """Run ``n_steps`` steps in place, recording into ``records`` if given.

        Returns None, or the first step at which a chain's q or p became non-finite or an extra
        became NaN (checked before that step is recorded, so every record is finite); the state
        is then undefined and ``state.step`` unchanged.
        """

    @abc.abstractmethod
    def potential_values(self, system: AbstractSystem, q: Any) -> np.ndarray:
        """U at each row of ``q``, as numpy."""

    @abc.abstractmethod
    def allocate_records(self, state: State, n_records: int, every: int) -> Records:
        """Output arrays for ``n_records`` records."""

    @abc.abstractmethod
    def records_to_numpy(self, records: Records) -> dict[str, np.ndarray]:
        """The records as numpy arrays ``q, p, x, u``."""

    def state_to_numpy(self, state: State) -> dict[str, np.ndarray]:
        """q, p, x of a state as numpy arrays."""
        conv = (lambda a: a.detach().cpu().numpy()) if self.name == "torch" else np.asarray
        return {"q": conv(state.q), "p": conv(state.p), "x": conv(state.x)}
