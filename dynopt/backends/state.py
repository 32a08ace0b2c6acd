"""The state of a batch of chains, created and copied by the backend that runs it.

It lives with the backends (which build, advance, copy and convert it) and is re-exported as
:class:`dynopt.stepping.State` and ``dynopt.State``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["State"]


@dataclass(eq=False)
class State:
    """The full state of a batch of chains.

    States compare (and hash) by identity: their arrays have no single truth value, so a
    field-wise ``==`` could only raise. Compare ``q``, ``p``, ``x`` with ``np.array_equal`` or
    ``torch.equal``.

    Attributes:
        q: Positions, shape ``(chains, dim)`` (numpy float64 for numba, a tensor for torch).
        p: Momenta, ``(chains, dim)``, or ``(chains, 0)`` for first-order systems.
        x: Extras (thermostat variables, noise memory), ``(chains, n_extras)``.
        step: Number of steps taken.
        seed: The run's seed (the numba RNG is a pure function of seed, chain and step).
        backend: ``"numba"`` or ``"torch"``.
        noise: ``"gaussian"``, ``"gaussian-f64"`` or ``"discrete"``.
        h: Step size of the last step taken (None before the first).
        time: Elapsed time, the sum of h over the steps taken (a run resumed at another h
            continues its time axis from here).
        generator: The torch generator (torch backend only; None with per-chain streams).
        streams: Per-chain generators keyed by (seed, global chain index)
            (:class:`~dynopt.backends.torch.streams.ChainStreams`; torch backend with
            ``chain_ids``), else None.
        noise_memory: Whether ``x`` holds a Leimkuhler–Matthews noise memory (the previous
            step's normals) for LM to continue: True once LM's start drew it (``init`` for an
            LM scheme, or an LM run continuing a state without one), False for an overdamped
            state started by Euler–Maruyama (which keeps none: LM then draws it). None where
            unknown (a state built by hand or saved by an older version): an all-zero memory
            then counts as none. The flag, not the values, decides: with ``noise="discrete"``
            a genuine memory is all zeros with probability (2/3)^(chains·dim).
        layout: The names and sizes of the extras in ``x``, ``((name, size), ...)`` as the
            system that made the state lists them (``extras_layout``): a system continues the
            state only with the same layout, so a state of another system whose extras have
            the same total width is not silently reinterpreted. None (a state built by hand or
            saved by an older version, or set on purpose to continue a state with other
            extras): only the widths are checked.
    """

    q: Any
    p: Any
    x: Any
    step: int = 0
    seed: int = 0
    backend: str = "numba"
    noise: str = "gaussian"
    h: float | None = None
    time: float = 0.0
    generator: Any = field(default=None, repr=False)
    streams: Any = field(default=None, repr=False)
    noise_memory: bool | None = field(default=None, repr=False)
    layout: tuple[tuple[str, int], ...] | None = field(default=None, repr=False)

    @property
    def n_chains(self) -> int:
        return int(self.q.shape[0])

    @property
    def dim(self) -> int:
        return int(self.q.shape[1])

    def copy(self) -> State:
        """A deep copy (arrays, tensors and the RNG state), made by the state's backend."""
        from . import get_backend

        return get_backend(self.backend).copy_state(self)
