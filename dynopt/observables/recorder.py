"""The recorder behind ``integrate(..., observables=...)``: per-record values on the device.

At each record it evaluates U (full batch), the kinetic energy, the thermostat variables and
every requested observable for all chains and writes them into preallocated ``(chain, draw,
...)`` tensors on the state's device: no host synchronisation until the run ends. The result is
an ordinary :class:`~dynopt.trajectory.Trajectory` whose ``extras`` hold every observable, so the
diagnostics (ESS, R-hat, batch means, energy drift on ``traj.energy``/``traj.conserved``) apply
unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..backends.base import Records
from ..trajectory import Trajectory, recorded_extras
from .base import Context
from .callback import Callback
from .names import resolve
from .theta import Theta

__all__ = ["Recorder"]

#: Extras never recorded by the recorder (dim-sized per-chain memory).
_SKIP = ("noise_prev",)


class Recorder:
    """Per-record observables of a torch-backend run.

    Args:
        observables: What :func:`dynopt.observables.names.resolve` accepts.
        system: The system.
        state: The initial state (its device, chain count and chain ids).
        n_records: Number of records (including the initial one).
        h: The run's step size (the time a record's state shows; None: the state's own).
        reserved: Further keys no observable may record, because the caller writes them into
            the trajectory itself (TrainingMonitor's ``lambda_max``), with what each one is.
        reserved_prefixes: Key prefixes likewise refused (TrainingMonitor's ``xi:group<i>``).
    """

    def __init__(self, observables: Any, system: Any, state: Any, n_records: int,
                 h: float | None = None, *, reserved: dict[str, str] | None = None,
                 reserved_prefixes: dict[str, str] | None = None) -> None:
        self.items = resolve(observables)
        self.system = system
        self.n_records = int(n_records)
        self.start_step = int(state.step)
        self.start_time = float(state.time)
        self.h = h
        self.every = 1
        self.chain_ids = (list(state.streams.chain_ids) if state.streams is not None
                          else list(range(state.n_chains)))
        self.dim = state.dim
        self.extras: list[tuple[str, int, int]] = []
        off = 0
        for name, size in system.extras_layout(state.dim).items():
            if name not in _SKIP:
                self.extras.append((name, off, size))
            off += size
        self.buffers: dict[str, torch.Tensor] = {}
        #: Keys :meth:`trajectory` gives a meaning of its own (the kinetic energy, traj.q,
        #: the invariant, the squeezed thermostat variables), so an observable may not record
        #: them, even where this system records no such key itself: a user "kinetic" on a
        #: first-order system became traj.energy's kinetic term, a user "invariant" became
        #: traj.conserved, a user "xi" replaced the thermostat's record.
        self.reserved = {"potential", "kinetic", "invariant", "q"} | {
            key for name, _, _ in self.extras for key in (name, f"x:{name}")}
        self.caller_reserved = dict(reserved or {})
        self.reserved |= self.caller_reserved.keys()
        self.reserved_prefixes = dict(reserved_prefixes or {})

    @property
    def width(self) -> int:
        """Rough number of values per chain and record (for the memory check)."""
        theta = any(isinstance(o, Theta) for o in self.items)
        return 3 + sum(s for _, _, s in self.extras) + (self.dim if theta else 0) + 64

    def records(self, every: int) -> Records:
        """The ``Records`` a backend fills through this recorder."""
        self.every = int(every)
        return Records(q=None, p=None, x=None, u=None, every=self.every, observer=self)

    def record(self, r: int, state: Any, system: Any) -> None:
        """Evaluate and store record ``r`` (step ``start_step + r·every``)."""
        step = self.start_step + r * self.every
        # the runner records inside a chunk, before it advances state.step and state.time:
        # what an observable sees (a Callback gets the state) is the record's step and time
        held = state.step, state.time
        state.step = step
        if self.h is not None:
            state.time = self.start_time + (step - self.start_step) * self.h
        try:
            self._record(r, step, state, system)
        finally:
            state.step, state.time = held

    def _record(self, r: int, step: int, state: Any, system: Any) -> None:
        ctx = Context(state=state, system=system, step=step, record=r, chain_ids=self.chain_ids)
        q = state.q
        out: dict[str, torch.Tensor] = {"potential": system.potential.value(q)}
        if system.has_momentum:
            out["kinetic"] = system.kinetic_energy(state.p)
        for name, off, size in self.extras:
            out[f"x:{name}"] = state.x[:, off:off + size]
        for item in self.items:
            got = item(ctx)
            # "q" is θ, recorded by Theta only
            reserved = self.reserved - {"q"} if isinstance(item, Theta) else self.reserved
            clash = ((out.keys() | reserved) & got.keys()) | {
                key for key in got if key.startswith(tuple(self.reserved_prefixes))}
            if clash:  # it would overwrite a record (traj.energy is built from two of them)
                raise ValueError(self._clash_message(item, clash))
            out.update(got)
        for key, val in out.items():
            buf = self.buffers.get(key)
            if buf is None:
                fill = float("nan") if val.is_floating_point() else 0
                buf = torch.full((val.shape[0], self.n_records, *val.shape[1:]), fill,
                                 dtype=val.dtype, device=val.device)
                self.buffers[key] = buf
            buf[:, r] = val

    def _clash_message(self, item: Any, clash: set[str]) -> str:
        caller = [f"{key!r} ({what})" for key, what in self.caller_reserved.items()
                  if key in clash]
        caller += [f"{prefix}... ({what})" for prefix, what in self.reserved_prefixes.items()
                   if any(key.startswith(prefix) for key in clash)]
        also = f"; here {', '.join(caller)}" if caller else ""
        text = (f"observable {item!r} records {sorted(clash)}, a name already recorded or "
                "reserved (the potential, the kinetic energy, the invariant, θ as 'q', the "
                f"thermostat variables or another observable{also}); give it another name")
        if isinstance(item, Callback):
            text += (" with dynopt.observables.Callback('a_name', fn) (a bare function is "
                     "recorded under its __name__)")
        return text

    def arrays(self, upto: int) -> dict[str, np.ndarray]:
        """The first ``upto`` records of every key as numpy (float64 for floating values)."""
        out = {}
        for key, buf in self.buffers.items():
            b = buf[:, :upto].detach().cpu()
            out[key] = (b.to(torch.float64) if b.is_floating_point() else b).numpy()
        return out

    def trajectory(self, upto: int, **fields: Any) -> Trajectory:
        """A :class:`Trajectory`: ``q`` is θ if ``"theta"`` was recorded, else ``(C, R, 0)``;
        ``p`` is None; ``extras`` hold potential, kinetic, the thermostat variables (scalar ones
        squeezed, :func:`~dynopt.trajectory.recorded_extras`), ``invariant`` where the system
        has one, and every observable."""
        arr = self.arrays(upto)
        u = arr.pop("potential")
        kinetic = arr.pop("kinetic", np.zeros_like(u))
        raw = {name: arr.pop(f"x:{name}") for name, _, _ in self.extras}
        q = arr.pop("q", np.zeros((u.shape[0], u.shape[1], 0)))
        extras: dict[str, np.ndarray] = {"potential": u, "kinetic": kinetic}
        extras.update(recorded_extras(self.system, raw))
        with np.errstate(over="ignore", invalid="ignore"):
            inv = self.system.invariant(u, kinetic, raw, self.dim)
        if inv is not None:
            extras["invariant"] = inv
        extras.update(arr)
        with np.errstate(over="ignore", invalid="ignore"):
            energy = self.system.recorded_energy(u, kinetic)
        return Trajectory(q=q, p=None, energy=energy, extras=extras, observables=self.items,
                          **fields)
