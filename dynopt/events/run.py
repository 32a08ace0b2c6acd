"""``integrate(..., events=...)``: stepping with per-chain events.

With events, ``integrate()`` advances one step at a time (one kernel call per step on the numba
backend; the torch backend likewise), evaluates the observables of every chain after each step
(and once on the initial state) and applies the actions of the triggers that fire to those
chains only. This costs a kernel launch per step, so it is meant for studies of ≲10⁵ steps;
without events ``integrate()`` keeps its fused multi-step path.

Observables: ``loss`` = U(q) of the integrated system's potential, ``energy`` = the current
system's :meth:`~dynopt.systems.base.AbstractSystem.energy` (H for BornInfeld), ``step`` = steps
completed, ``state`` = ``(q, p)`` for :class:`~dynopt.events.StateCondition`.

Actions per chain: :class:`~dynopt.events.SetFriction` writes the ``gamma`` extra (systems that
have one, e.g. PortHamiltonian), :class:`~dynopt.events.Bounce` redraws the direction of p at
the same kinetic energy pᵀM⁻¹p (p = √(pᵀM⁻¹p)·M^{1/2}z/|z|, z Gaussian from the run's generator:
numba Philox stream 4 at counter = step, torch the state's generator),
:class:`~dynopt.events.Stop` freezes the chain (the run ends when all have stopped),
:class:`~dynopt.events.SwitchDynamics` moves the chain to other dynamics with the same state
layout. Every firing is logged in ``traj.events``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.base import Divergence, Records
from ..program import OpCode
from ..systems.port_hamiltonian import check_friction_ops
from .actions import Bounce, SetFriction, Stop, SwitchDynamics
from .engine import EventLog, EventSet

if TYPE_CHECKING:
    from ..backends.base import AbstractBackend
    from ..integrators.base import AbstractIntegrator
    from ..program import Program
    from ..stepping import State
    from ..systems.base import AbstractSystem

__all__ = ["run_with_events"]

_OBSERVABLES = ("loss", "energy", "step", "state")
_ACTIONS = (SetFriction, SwitchDynamics, Bounce, Stop)


def _modes(system: AbstractSystem, program: Program, events: EventSet, dim: int, h: float
           ) -> tuple[list[tuple[AbstractSystem, Program]], dict[int, int]]:
    """The dynamics a chain can be in: 0 = the given one, then one per SwitchDynamics."""
    from ..integrators import resolve

    modes = [(system, program)]
    index: dict[int, int] = {}
    for a in events.actions():
        if not isinstance(a, SwitchDynamics):
            continue
        new = a.system
        if new.potential is None or new.potential.dim != dim:
            raise ValueError(f"{a!r}: the new system needs a potential of dim={dim}")
        if new.has_momentum != system.has_momentum or (
                new.extras_layout(dim) != system.extras_layout(dim)):
            raise ValueError(
                f"{a!r}: the new system must have the same state layout as "
                f"{type(system).__name__} (momenta: {system.has_momentum}, extras: "
                f"{system.extras_layout(dim)}), got momenta {new.has_momentum}, extras "
                f"{new.extras_layout(dim)}")
        if "gamma" in new.extras_layout(dim) and getattr(new, "gamma", None) != getattr(
                system, "gamma", None):  # the friction is per-chain state: it carries over
            raise ValueError(
                f"{a!r}: the friction γ is a per-chain state variable of "
                f"{type(system).__name__} and carries over unchanged, so the new system's "
                f"gamma={getattr(new, 'gamma', None)!r} would be ignored (current "
                f"{getattr(system, 'gamma', None)!r}); give SwitchDynamics a system with the same "
                "gamma and add SetFriction(...) to the event's actions")
        integ = resolve(a.integrator if a.integrator is not None else new.default_scheme)
        index[id(a)] = len(modes)
        modes.append((new, integ.program(new, h)))
    return modes, index


def _first_divergent(work: Any, mine: np.ndarray, d: Divergence) -> Divergence | None:
    """``d`` if its chain runs this mode, else the first chain of the mode that is not finite
    (a chain of another mode stepped under this one may diverge; its own mode decides)."""
    if mine[d.chain]:
        return d
    for c in np.flatnonzero(mine):
        row = [work.q[int(c)], work.p[int(c)], work.x[int(c)]]
        if not all(bool(np.isfinite(np.asarray(_host(t))).all()) for t in row):
            return Divergence(step=d.step, chain=int(c))
    return None


def _host(t: Any) -> Any:
    return t.detach().cpu() if hasattr(t, "detach") else t


def _rows(a: Any, mask: np.ndarray) -> Any:
    if isinstance(a, np.ndarray):
        return mask
    import torch

    return torch.as_tensor(mask, device=a.device)


def run_with_events(be: AbstractBackend, system: AbstractSystem, integ: AbstractIntegrator,
                    program: Program, state: State, n_steps: int, records: Records,
                    events: Any, h: float, bar: Any) -> tuple[Divergence | None, EventLog]:
    """Advance ``state`` by up to ``n_steps`` steps with events; fills ``records`` in place.

    Returns ``(divergence or None, log)``; stops early once every chain has stopped.
    """
    es = events if isinstance(events, EventSet) else EventSet(events)
    es.check_supported("integrate()", _ACTIONS, _OBSERVABLES)
    n, dim = state.n_chains, state.dim
    layout = system.extras_layout(dim)
    gamma_off = None
    if any(isinstance(a, SetFriction) for a in es.actions()):
        if "gamma" not in layout:
            raise ValueError(
                f"SetFriction needs a system with a per-chain friction extra 'gamma' (e.g. "
                f"PortHamiltonian); {type(system).__name__} has extras {list(layout)}")
        gamma_off = list(layout).index("gamma")
        gamma_off = sum(list(layout.values())[:gamma_off])
    if any(isinstance(a, Bounce) for a in es.actions()) and not system.has_momentum:
        raise ValueError(f"Bounce needs momenta; {type(system).__name__} has none")
    modes, mode_index = _modes(system, program, es, dim, h)
    # an explicit friction step must not amplify p at the γ any chain has or an event may set
    set_gammas = [a.gamma for a in es.actions() if isinstance(a, SetFriction)]
    for _, prog in modes:
        check_friction_ops(prog.ops, state.x, h, set_gammas)
    chain_mode = np.zeros(n, dtype=np.int64)
    # which chains hold an LM noise memory (an overdamped system): a chain switched from EM
    # (which keeps none) to LM gets the one LM's start draws, not R_prev = 0 (half the variance)
    reads_memory = [any(op.code == OpCode.LM_NOISE for op in prog.ops) for _, prog in modes]
    has_memory = None
    if any(reads_memory) and set(layout) == {"noise_prev"}:
        has_memory = (np.full(n, bool(state.noise_memory)) if state.noise_memory is not None
                      else np.asarray(be.state_to_numpy(state)["x"] != 0).any(axis=1))
    stopped = np.zeros(n, dtype=bool)
    est = es.init_state(np.zeros(n))
    every = records.every

    def numpy_state() -> dict[str, np.ndarray]:
        return be.state_to_numpy(state)

    def observe() -> None:
        arr = numpy_state()
        values: dict[str, np.ndarray] = {"step": np.full(n, float(state.step))}
        if "loss" in es.observables:
            values["loss"] = be.potential_values(system, state.q)
        if "energy" in es.observables:
            p = arr["p"] if system.has_momentum else None
            energy = np.empty(n)
            for m, (sys_m, _) in enumerate(modes):
                sel = chain_mode == m
                if sel.any():
                    energy[sel] = np.asarray(sys_m.energy(arr["q"][sel],
                                                          None if p is None else p[sel]))
            values["energy"] = energy
        if "state" in es.observables:
            values["state"] = np.zeros(n, dtype=bool)
        # every trigger sees this state; the actions apply in list order (as the optimizers')
        fired_all = []
        for i, e in enumerate(es.events):
            values_i = values
            if e.observable == "state":
                values_i = dict(values)
                values_i["state"] = _predicate(e, arr, system.has_momentum, n)
            fired_all.append((i, es.observe_one(est, i, values_i, state.step), values_i))
        # chains stopped before this observation fire nothing; a Stop that fires in it does
        # not hide the other firings of the same observation (logged and applied, as in the
        # optimizers, whatever the list order)
        running = ~stopped
        for i, fired, values_i in fired_all:
            apply(i, fired, values_i, running)

    def apply(i: int, fired: np.ndarray, values: dict[str, np.ndarray], running: np.ndarray
              ) -> None:
        fired = np.asarray(fired, dtype=bool) & running
        if not fired.any():
            return
        es.record_one(est, i, fired, values, state.step)
        for a in es.events[i].actions:
            if isinstance(a, SetFriction):
                state.x[_rows(state.x, fired), gamma_off] = a.gamma
            elif isinstance(a, Stop):
                stopped[fired] = True
            elif isinstance(a, SwitchDynamics):
                chain_mode[fired] = mode_index[id(a)]
                if has_memory is not None and reads_memory[mode_index[id(a)]]:
                    give_memory(fired)
            elif isinstance(a, Bounce):
                bounce(fired)

    def give_memory(fired: np.ndarray) -> None:
        assert has_memory is not None
        need = fired & ~has_memory
        if need.any():
            from ..stepping import start_memory

            sel = _rows(state.x, need)
            state.x[sel] = start_memory(system, state)[sel]
            has_memory[need] = True

    def bounce(fired: np.ndarray) -> None:
        # one mass per chain mode: the kinetic energy pᵀM⁻¹p of the chain's own dynamics stays
        for m, (sys_m, _) in enumerate(modes):
            sel = fired & (chain_mode == m)
            if sel.any():
                be.bounce_momenta(state, sel, sys_m.mass_vector(dim))

    def record() -> Divergence | None:
        """Record the state; a non-finite U stops the run as in the kernels (the chain left
        the potential's domain), before this record counts."""
        r = records.next
        if records.observer is not None:  # integrate(observables=...)
            records.observer.record(r, state, system)
            u = records.observer.buffers["potential"][:, r]
        else:
            be.write_record(records, r, state, system)
            u = records.u[:, r]
        finite = np.isfinite(np.asarray(_host(u)))
        if not finite.all():
            return Divergence(step=state.step, chain=int(np.argmin(finite)), potential=True)
        records.next = r + 1
        return None

    def advance() -> Divergence | None:
        present = np.unique(chain_mode[~stopped]) if (~stopped).any() else np.array([0])
        frozen = state.copy() if stopped.any() else None
        if len(present) == 1:
            m = int(present[0])
            div = be.advance(modes[m][0], modes[m][1], state, 1, None)
            if div is not None and stopped.any():  # a frozen chain's trial step does not count
                div = _first_divergent(state, ~stopped, div)
                if div is None:  # the backend counts a step only if every chain stayed finite
                    state.step += 1
        else:
            # every mode steps a copy of all chains and each chain keeps its own mode's result
            base = state.copy()
            div = None
            for m in present:
                mine = chain_mode == m
                work = base.copy()
                if state.generator is not None:  # one live stream: each mode draws after the
                    work.generator = state.generator  # last (a copy would repeat its draws)
                d = be.advance(modes[int(m)][0], modes[int(m)][1], work, 1, None)
                sel = _rows(state.q, mine)
                state.q[sel], state.p[sel], state.x[sel] = work.q[sel], work.p[sel], work.x[sel]
                if d is not None and div is None:  # only a chain that runs this mode counts
                    div = _first_divergent(work, mine & ~stopped, d)
            state.step += 1
        if frozen is not None:
            sel = _rows(state.q, stopped)
            state.q[sel], state.p[sel], state.x[sel] = frozen.q[sel], frozen.p[sel], frozen.x[sel]
        return div

    try:
        with be.serial_for(n * dim):
            observe()
            for k in range(n_steps):
                if stopped.all():  # (also when every chain stopped on the initial state)
                    break
                div = advance()
                if div is not None:
                    return div, es.log(est)
                if (k + 1) % every == 0:
                    div = record()
                    if div is not None:
                        return div, es.log(est)
                bar.update(1)
                observe()
    except KeyboardInterrupt as err:  # the log so far travels with it (integrate attaches it)
        err.events_log = es.log(est)  # type: ignore[attr-defined]
        raise
    if has_memory is not None:  # None: some chains hold a memory, some none
        state.noise_memory = (bool(has_memory[0]) if bool((has_memory == has_memory[0]).all())
                              else None)
    return None, es.log(est)


def _predicate(e: Any, arr: dict[str, np.ndarray], has_momentum: bool, n: int) -> np.ndarray:
    """A StateCondition's per-chain booleans, refused clearly unless one per chain."""
    out = np.asarray(e.fn(arr["q"], arr["p"] if has_momentum else None))
    if out.shape not in ((n,), (n, 1)) or not (out.dtype == bool or out.dtype.kind in "iuf"):
        raise ValueError(f"{e!r}: the predicate must return one boolean per chain, shape "
                         f"({n},), got {type(out).__name__} of shape {out.shape} and dtype "
                         f"{out.dtype}")
    if out.dtype.kind == "f" and not np.all(np.isfinite(out)):  # bool(NaN) is True
        bad = np.flatnonzero(~np.isfinite(out.reshape(n)))
        raise ValueError(f"{e!r}: the predicate returned a non-finite value "
                         f"({out.reshape(n)[bad[0]]}) for chain(s) {bad.tolist()[:5]}, which is "
                         "neither true nor false; return booleans")
    return out.astype(bool).reshape(n)
