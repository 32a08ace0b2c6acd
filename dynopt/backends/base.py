"""What a backend provides: state creation, advancing a program, potential evaluation."""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..program import Program
    from ..systems.base import AbstractSystem
    from .state import State

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
    """Where a run first became non-finite (returned by :meth:`AbstractBackend.advance`):
    the first such step, its first such chain, and whether that chain's state was finite and
    its potential energy, evaluated at a record step, was not (``potential``)."""

    step: int
    chain: int
    potential: bool = False


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
        draw_extras: bool = True,
    ) -> State:
        """Create the state; draw default momenta and extras from the run's own generator
        (``draw_extras=False``: extras that the scheme never reads, an Euler–Maruyama run's
        noise memory, are zeros and draw nothing)."""

    @abc.abstractmethod
    def start_extras(self, system: AbstractSystem, state: State) -> Any:
        """Fresh initial extras for every chain of ``state`` (as ``init_state`` draws them), in
        the state's array kind, dtype and device, drawn so that they repeat none of the noise
        the run draws: the noise memory Leimkuhler–Matthews needs when it continues a state
        that keeps none (Euler–Maruyama's). Advances the state's generator where it has one."""

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
        became NaN, or (at a record step) its potential energy became non-finite (checked
        before that step is recorded, so every record is finite); the state is then undefined
        and ``state.step`` unchanged.
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

    # --- what callers would otherwise branch on the backend's name for ----------------------
    #: ``integrate(observables=...)`` (on-device recorders) works with this backend.
    supports_observables: bool = False
    #: ``chain_ids=`` (per-chain noise streams keyed by a global chain index) works.
    supports_chain_ids: bool = False

    #: Ctrl-C interrupts a call of ``advance`` between two ops (a Python loop); False for a
    #: compiled kernel, which sees it only when the call returns, so that integrate() makes
    #: its first call smaller for chains of many coordinates
    #: (:func:`dynopt.integrate.advance_in_chunks`).
    sees_interrupts: bool = False

    #: How this backend's state arrays are named in error messages.
    array_kind: str = "an array"

    @abc.abstractmethod
    def is_array(self, a: Any) -> bool:
        """Whether ``a`` is an array this backend's states hold."""

    @abc.abstractmethod
    def check_storage(self, state: State) -> None:
        """Raise ValueError/TypeError unless the dtype, device and memory layout of the state's
        arrays are what this backend's kernels index (shapes are checked by the caller)."""

    @abc.abstractmethod
    def state_to_numpy(self, state: State) -> dict[str, np.ndarray]:
        """q, p, x of a state as numpy arrays."""

    @abc.abstractmethod
    def copy_state(self, state: State) -> State:
        """A deep copy of ``state`` (arrays and the RNG state)."""

    @abc.abstractmethod
    def itemsize(self, state: State) -> int:
        """Bytes per stored number of this state (for the memory check)."""

    @abc.abstractmethod
    def write_record(self, records: Records, r: int, state: State, system: AbstractSystem
                     ) -> None:
        """Store q, p, x and U(q) of ``state`` as record ``r``."""

    @abc.abstractmethod
    def bounce_momenta(self, state: State, fired: np.ndarray) -> None:
        """The ``Bounce`` event action: p ← |p| z/|z| for the chains in ``fired`` (bool mask),
        z a fresh standard normal vector from the run's own generator."""

    def serial_for(self, work: int) -> contextlib.AbstractContextManager[Any]:
        """A context for an event loop of ``work`` (chains × dim) per step: backends with a
        thread pool run small work serially inside it."""
        return contextlib.nullcontext()
