"""``integrate()``: many steps of many chains, recorded for studies."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import check_int, check_positive
from .backends import get_backend
from .errors import DivergenceError, Interrupted
from .integrators import resolve
from .integrators.base import warn_if_noise_dropped
from .stepping import check_state, fill_memory, init
from .systems.port_hamiltonian import check_friction_ops
from .trajectory import Trajectory, recorded_extras

if TYPE_CHECKING:
    from .backends.base import Divergence
    from .integrators.base import AbstractIntegrator
    from .stepping import State
    from .systems.base import AbstractSystem

__all__ = ["advance_in_chunks", "integrate"]

#: Refuse to allocate more than this many bytes of state and records together.
MAX_RECORD_BYTES = 4 * 2**30
#: Chain-steps per kernel call at most (sets the progress-bar granularity). A numba kernel call
#: does not see Ctrl-C: the KeyboardInterrupt arrives when the call returns, so calls are also
#: bounded in time (:data:`CHUNK_SECONDS`), whatever the record interval.
CHUNK_WORK = 4_000_000
#: A kernel call that took longer than this makes the next ones about half as long; calls far
#: shorter grow back, up to :data:`CHUNK_WORK`.
CHUNK_SECONDS = 0.5
#: Coordinates per chain that count as one chain-step of work for the first call's size (on
#: the numba backend: each later call is sized by the time the previous one took).
_DIM_WORK = 64


def integrate(
    system: AbstractSystem,
    integrator: AbstractIntegrator | str | None,
    q0: Any,
    *,
    h: float,
    n_steps: int,
    backend: str | None = None,
    seed: int | None = None,
    p0: Any = None,
    n_chains: int | None = None,
    record_every: int = 1,
    noise: str | None = None,
    dtype: Any = None,
    device: Any = None,
    progress: bool | None = None,
    state: State | None = None,
    events: Any = None,
    observables: Any = None,
    chain_ids: Any = None,
) -> Trajectory:
    """Integrate ``n_chains`` independent chains of ``system`` for ``n_steps`` steps.

    Example:
        >>> import dynopt
        >>> sys = dynopt.systems.Langevin(dynopt.potentials.DoubleWell(), gamma=1.0,
        ...                               temperature=0.25)
        >>> traj = dynopt.integrate(sys, "BAOAB", [1.0], h=0.05, n_steps=1000, n_chains=8,
        ...                         seed=0)
        >>> traj.q.shape
        (8, 1001, 1)

    Args:
        system: The dynamics (a :mod:`dynopt.systems` object).
        integrator: An integrator, a name (``"BAOAB"``, ``"leapfrog"``, ``"lm"``), a splitting
            string, or None for the system's default scheme.
        q0: Initial positions, ``(dim,)`` for all chains or ``(chains, dim)``.
        h: Step size (> 0).
        n_steps: Number of steps (>= 0).
        backend: ``"numba"`` (CPU, float64, fused parallel kernel) or ``"torch"``; None (default):
            numba, or torch for potentials only torch can evaluate (a
            :class:`~dynopt.potentials.NetworkLoss`).
        seed: Integer seed (a fresh one is drawn and stored in the result if None).
        p0: Initial momenta (default: Maxwell–Boltzmann at the system's temperature, or zero).
        n_chains: Number of chains (default from ``q0``).
        record_every: Record every this many steps (the initial state is always record 0).
        noise: ``"gaussian"`` (default, None), ``"gaussian-f64"`` or ``"discrete"`` (±√3 w.p. 1/6,
            0 w.p. 2/3: cheaper, matches Gaussian moments to fifth order, weak order 2 is
            kept). The numba backend computes ``"gaussian"`` normals with float32 arithmetic
            (4–5× cheaper; within a few float32 ulps of the float64 transform on the same
            random words) and ``"gaussian-f64"`` with float64 arithmetic; the torch backend
            draws ``torch.randn`` in the run's dtype for both.
        dtype: Torch dtype for ``backend="torch"`` (float32 or float64, default float64,
            whatever ``q0``'s dtype).
        device: Torch device for ``backend="torch"``; default: ``q0``'s device when ``q0`` is a
            torch tensor (a CUDA ``q0`` runs on its GPU), else the CPU. The numba backend runs
            on the CPU and copies a CUDA ``q0`` there.
        progress: Show a tqdm progress bar (default: for runs over ~10⁸ chain-steps).
        state: Continue from this state (e.g. ``traj.final_state``) instead of ``q0``/``p0``
            (which are then not read). The state fixes the seed, backend, noise kind, number of
            chains, dtype and device: each of these arguments, when given, must agree with it
            (a ValueError names the first that does not).
        events: Triggers with actions (:mod:`dynopt.events`), evaluated per chain after every
            step; the run then advances one step per kernel call (see
            :mod:`dynopt.events.run`) and the firings are in ``traj.events``.
        observables: What to record (torch backend), instead of the whole state: a list of
            :mod:`dynopt.observables` objects, names (``"loss"``, ``"heldout_loss"``,
            ``"layer_kinetic"``, ``"layer_configurational"``, ``"projections"``, ``"theta"``)
            or callables ``f(state) -> (chains,) or (chains, k)`` tensor. The potential,
            kinetic energy, energy, invariant and thermostat variables are always recorded; q is
            recorded only with ``"theta"`` (else ``traj.q`` has 0 columns) and ``traj.p`` is None.
            None (default): record q, p and the extras in full, as always.
        chain_ids: Global indices (distinct, below 2³²) of the chains of this call (torch
            backend): chain c then draws
            its noise from its own generator keyed by ``(seed, c)``, so it follows the same path
            whichever process runs it beside whichever chains (:mod:`dynopt.replicas`).

    Returns:
        A :class:`~dynopt.trajectory.Trajectory` with ``n_steps // record_every + 1`` draws.

    Raises:
        ValueError: On invalid parameters (the message names the parameter and value), e.g. an
            explicit friction step ``F`` with γ·t > 2, which would amplify the momentum
            (:func:`dynopt.systems.port_hamiltonian.friction_factor`).
        DivergenceError: If q, p or an extra becomes NaN/inf, or the potential energy at a
            record step after the start does (a chain left the potential's domain, or U
            overflows); it names the first such step and chain and carries the trajectory
            recorded before it (``err.trajectory``: finite but for U at the initial q, which
            is recorded as given).
        Interrupted: On Ctrl-C (a KeyboardInterrupt, seen within about
            :data:`CHUNK_SECONDS` whatever ``record_every``); ``err.trajectory`` keeps the
            records completed before it.
    """
    from .systems.base import AbstractSystem

    if not isinstance(system, AbstractSystem):
        raise TypeError(f"system must be a dynopt system (e.g. dynopt.systems.Langevin(...)), "
                        f"got {system!r}")
    integ = resolve(integrator if integrator is not None else system.default_scheme)
    h = check_positive("h", h)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    record_every = check_int("record_every", record_every, minimum=1)
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be None or a bool, got {progress!r}")
    n_records = n_steps // record_every + 1
    if state is None:
        if n_chains is not None:
            n_chains = check_int("n_chains", n_chains, minimum=1)
        if chain_ids is not None:
            from .stepping import check_chain_ids

            chain_ids = check_chain_ids(chain_ids)  # (an iterator is read once, here)
            if n_chains is None and (q0.ndim if hasattr(q0, "ndim") else np.ndim(q0)) <= 1:
                n_chains = len(chain_ids)  # one row per id: the size check counts them all
        if system.potential is not None:
            # with observables the records hold no θ: the recorder checks its own size below
            check_memory(system, _rows(q0, n_chains), system.potential.dim,
                         n_steps if observables is None else 0, record_every,
                         itemsize=4 if dtype is not None and "32" in str(dtype) else 8)
        state = init(system, integ, q0, backend=backend, seed=seed, p0=p0, n_chains=n_chains,
                     noise=noise, dtype=dtype, device=device,
                     chain_ids=chain_ids)
    else:
        check_state(system, state)
        _refuse_conflicts(state, seed=seed, backend=backend, noise=noise, n_chains=n_chains,
                          dtype=dtype, device=device)
        if chain_ids is not None:
            raise ValueError("chain_ids cannot be combined with state= (the state carries its "
                             "own per-chain streams)")
        integ.check(system)
        check_memory(system, state.n_chains, state.dim,
                     n_steps if observables is None else 0, record_every,
                     itemsize=get_backend(state.backend).itemsize(state))
        state = state.copy()
        fill_memory(system, integ, state)  # an EM state continued by LM
    if events is not None and state.streams is not None:
        raise ValueError("events= cannot be combined with chain_ids= (per-chain noise streams)")
    program = integ.program(system, h)
    warn_if_noise_dropped(system, integ.name, program.ops)
    if events is None:  # (with events, run_with_events checks every mode and SetFriction's γ)
        check_friction_ops(program.ops, state.x, h)
    be = get_backend(state.backend)
    if observables is None:
        records = be.allocate_records(state, n_records, record_every)
        _record_initial(be, system, state, records)
    else:
        from .observables.recorder import Recorder

        if not be.supports_observables:
            raise ValueError(f"observables= needs backend='torch', got backend={state.backend!r}")
        observer = Recorder(observables, system, state, n_records, h=h)
        need = n_records * state.n_chains * observer.width * 8
        if need > MAX_RECORD_BYTES:
            raise ValueError(
                f"recording the observables for {n_records} draws x {state.n_chains} chains needs "
                f"{need / 2**30:.1f} GiB; raise record_every (got {record_every})")
        records = observer.records(record_every)
        observer.record(0, state, system)
        records.next = 1
    show = progress if progress is not None else n_steps * state.n_chains > 10**8
    bar = _progress(show, n_steps, f"{integ.name} on {type(system).__name__}")
    start_step, start_time = state.step, state.time
    log = None

    def clock(step: int) -> float:
        """The time of ``step`` of this run (its steps all have size h)."""
        return start_time + (step - start_step) * h

    def diverged(div: Any) -> DivergenceError:
        bar.close()
        partial = _assemble(be, system, integ, state, records, h, record_every, start_step,
                            start_time, upto=(div.step - start_step - 1) // record_every + 1,
                            final=False)
        if log is not None:  # what the events did up to the divergence
            partial = dataclasses.replace(partial, events=log)
        if getattr(div, "potential", False):
            return DivergenceError(
                f"integration diverged at step {div.step} (t = {clock(div.step):.6g}): the "
                f"potential energy of chain {div.chain} was not finite (NaN or inf) at a finite "
                f"state with {integ.name} at h = {h}: the chain left the potential's domain "
                "(the gradient did not keep it inside), or the step size is beyond the "
                "stability limit (dynopt.diagnostics.stability_limit); U is evaluated at the "
                "record steps; err.trajectory holds the records before this one.",
                step=div.step, chain=div.chain, trajectory=partial)
        return DivergenceError(
            f"integration diverged at step {div.step} (t = {clock(div.step):.6g}): chain "
            f"{div.chain} reached a non-finite state (q, p or extras) with {integ.name} at "
            f"h = {h}. "
            "Either the step size is beyond the stability limit of this potential "
            "(dynopt.diagnostics.stability_limit) or the potential returned a non-finite "
            "gradient at a finite q (a custom function outside its domain, say); "
            "err.trajectory holds the records before the divergence.",
            step=div.step, chain=div.chain, trajectory=partial)

    try:
        if events is not None:
            from .events.run import run_with_events

            div, log = run_with_events(be, system, integ, program, state, n_steps, records,
                                       events, h, bar)
            if div is not None:
                raise diverged(div)
        if log is None:
            div = advance_in_chunks(be, system, program, state, n_steps, records, bar)
            if div is not None:
                raise diverged(div)
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        bar.close()
        kept = records.next
        state.time = clock(state.step)
        partial = _assemble(be, system, integ, state, records, h, record_every, start_step,
                            start_time, upto=kept, final=False)
        if getattr(err, "events_log", None) is not None:
            partial = dataclasses.replace(partial, events=err.events_log)  # type: ignore[attr-defined]
        raise Interrupted(
            f"integrate() interrupted; err.trajectory keeps the {kept} records up to step "
            f"{start_step + (kept - 1) * record_every}", trajectory=partial) from err
    bar.close()
    if n_steps:  # State.h is the size of the last step taken
        state.h = h
    state.time = clock(state.step)
    traj = _assemble(be, system, integ, state, records, h, record_every, start_step,
                     start_time, upto=records.next)
    return traj if log is None else dataclasses.replace(traj, events=log)


def advance_in_chunks(be: Any, system: AbstractSystem, program: Any, state: State,
                      n_steps: int, records: Any = None, bar: Any = None) -> Divergence | None:
    """``be.advance`` for ``n_steps`` steps in calls bounded in work and time, with the same
    result (bit for bit) as one call.

    A call runs at most :data:`CHUNK_WORK` chain-steps (the first fewer for chains of many
    coordinates on a backend whose calls do not see Ctrl-C), and calls shrink when one takes
    longer than :data:`CHUNK_SECONDS`: the numba kernel sees no
    Ctrl-C, so a single call over a long record interval (``record_every=10**9``) made Ctrl-C
    wait for the interval's end. Records stay where one call would put them (every
    ``records.every`` steps from ``state.step`` at entry): a call ends on a record step or
    records nothing, and a call that ends a record interval it did not start records that
    interval's end alone. The results do not depend on the split: every op acts on each chain
    alone, the noise is a function of (seed, chain, step) on numba and the generator's stream
    continues from call to call on torch.

    Args:
        be: The backend.
        system: The dynamics.
        program: The compiled scheme (``integrator.program(system, h)``).
        state: Advanced in place.
        n_steps: Steps to run.
        records: Where to record (``records.next`` advances), or None.
        bar: A progress bar (``update(n)``), or None.

    Returns:
        None, or the backend's :class:`~dynopt.backends.base.Divergence`.
    """
    cap = max(1, CHUNK_WORK // max(state.n_chains, 1))
    size = cap if be.sees_interrupts else max(1, cap // max(1, -(-state.dim // _DIM_WORK)))
    every = records.every if records is not None else n_steps + 1
    done = 0
    while done < n_steps:
        left = n_steps - done
        todo = min(size, left)
        phase = done % every
        call_records = records
        if phase == 0 and todo >= every:
            if todo < left:  # whole intervals (the run's tail past its last record excepted)
                todo -= todo % every
        elif phase + todo >= every:  # ends the interval it is in: records its end alone
            todo = every - phase
            call_records = dataclasses.replace(records, every=todo)
        else:  # inside an interval: records nothing
            call_records = None
        t0 = time.perf_counter()
        div = be.advance(system, program, state, todo, call_records)
        took = time.perf_counter() - t0
        if div is not None:
            return div
        if call_records is not None and call_records is not records:
            records.next = call_records.next
        done += todo
        if bar is not None:
            bar.update(todo)
        if took > CHUNK_SECONDS:
            size = max(1, min(size, int(todo * CHUNK_SECONDS / (2 * took))))
        elif took < CHUNK_SECONDS / 8 and todo == size:
            size = min(cap, 2 * size)
    return None


def _refuse_conflicts(state: State, **given: Any) -> None:
    """Arguments that ``state=`` fixes must agree with it when they are given: a run that
    silently ignored ``seed=5`` or ``noise="discrete"`` would not be the run the caller asked
    for."""
    import torch

    from .backends.torch.runner import resolve_dtype

    q = state.q
    have = {"seed": state.seed, "backend": state.backend, "noise": state.noise,
            "n_chains": state.n_chains,
            "dtype": q.dtype if isinstance(q, torch.Tensor) else torch.float64,
            "device": q.device if isinstance(q, torch.Tensor) else torch.device("cpu")}
    for name, value in given.items():
        if value is None:
            continue
        want = have[name]
        if name == "dtype":
            same = resolve_dtype(value) == want
        elif name == "device":
            dev = torch.device(value)
            # CPU tensors carry no index: "cpu" and "cpu:0" are the one CPU device
            same = dev.type == want.type and (dev.type == "cpu"
                                               or dev.index in (None, want.index))
        else:
            same = value == want
        if not same:
            raise ValueError(f"integrate: {name}={value!r} conflicts with state=, which continues "
                             f"a run with {name}={want!r}; leave {name} out to continue it")


def _record_initial(be: Any, system: AbstractSystem, state: State, records: Any) -> None:
    be.write_record(records, 0, state, system)
    records.next = 1


def _rows(q0: Any, n_chains: int | None) -> int:
    """Chains a run will have (before ``q0`` is converted; init() validates it fully)."""
    if n_chains is not None:
        return n_chains
    shape = getattr(q0, "shape", None)
    if shape is None:
        try:
            shape = np.shape(q0)
        except ValueError:  # ragged input: init() names the problem
            return 1
    return int(shape[0]) if len(shape) == 2 else 1


def check_memory(system: AbstractSystem, n_chains: int, dim: int, n_steps: int,
                 record_every: int, *, itemsize: int = 8,
                 names: tuple[str, str] = ("n_chains", "record_every")) -> int:
    """Bytes a run needs (state, its copy, records); ValueError above :data:`MAX_RECORD_BYTES`.

    Called before anything is allocated, so a huge ``n_chains`` is refused, not swapped in.
    The hint names the change that makes the run fit: the smallest ``record_every``, or the
    largest ``n_chains``, under ``names`` (the command line passes its option names). Returns
    the byte count.
    """
    chains_name, every_name = names
    width = dim + (dim if system.has_momentum else 0) + sum(system.extras_layout(dim).values())
    state_row = 3 * width * itemsize  # the initial arrays, the state and integrate's copy
    record_row = (width + 1) * itemsize  # q, p, extras and U per record
    n_records = n_steps // record_every + 1
    need = n_chains * (state_row + n_records * record_row)
    if need <= MAX_RECORD_BYTES:
        return need
    per_chain = state_row + n_records * record_row
    fit_chains = MAX_RECORD_BYTES // per_chain
    free_records = (MAX_RECORD_BYTES // n_chains - state_row) // record_row  # records that fit
    if free_records >= 2:
        every = -(-n_steps // (free_records - 1))
        hint = f"raise {every_name} to at least {every} (got {record_every})" + (
            f" or lower {chains_name} to at most {fit_chains}" if fit_chains >= 1 else "")
    elif fit_chains >= 1:
        hint = f"lower {chains_name} to at most {fit_chains} (or raise {every_name})"
    else:
        hint = f"lower {chains_name}"
    raise ValueError(
        f"{chains_name}={n_chains} x {n_records} records of dim {dim} needs {need / 2**30:.3g} GiB "
        f"(state {n_chains * state_row / 2**30:.3g} GiB, records "
        f"{n_chains * n_records * record_row / 2**30:.3g} GiB), above the limit of "
        f"{MAX_RECORD_BYTES / 2**30:.3g} GiB: {hint}")


def _assemble(be: Any, system: AbstractSystem, integ: AbstractIntegrator, state: State,
              records: Any, h: float, record_every: int, start_step: int, start_time: float,
              upto: int,
              final: bool = True) -> Trajectory:
    """The trajectory of records ``0..upto-1``; record r is the state at step
    ``start_step + r * record_every``. ``state`` is the final one unless ``final`` is False
    (after a divergence it may hold non-finite values and is not attached)."""
    t = start_time + np.arange(upto) * record_every * h
    if records.observer is not None:
        return records.observer.trajectory(
            upto, t=t, h=h, record_every=record_every, seed=state.seed, backend=state.backend,
            system=system, integrator=integ, final_state=state if final else None)
    arr = be.records_to_numpy(records)
    q = arr["q"][:, :upto]
    u = arr["u"][:, :upto]
    dim = q.shape[2]
    p = arr["p"][:, :upto] if system.has_momentum else None
    with np.errstate(over="ignore", invalid="ignore"):  # records just before a divergence
        kinetic = system.kinetic_energy(p) if p is not None else np.zeros_like(u)
        energy = system.recorded_energy(u, kinetic)
    layout = system.extras_layout(dim)
    raw: dict[str, np.ndarray] = {}
    off = 0
    for name, size in layout.items():
        raw[name] = arr["x"][:, :upto, off:off + size]
        off += size
    extras: dict[str, np.ndarray] = {"potential": u, "kinetic": kinetic}
    extras.update(recorded_extras(system, raw))
    with np.errstate(over="ignore", invalid="ignore"):
        inv = system.invariant(u, kinetic, raw, dim)
    if inv is not None:
        extras["invariant"] = inv
    return Trajectory(t=t, q=q, p=p, energy=energy, extras=extras, h=h,
                      record_every=record_every, seed=state.seed, backend=be.name,
                      system=system, integrator=integ, final_state=state if final else None)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(show: bool, total: int, desc: str) -> Any:
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", unit_scale=True, leave=False)
