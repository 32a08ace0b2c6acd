"""Explicit state and the single-step API.

``integrate()`` is a loop over this API; the torch optimizers wrap the same programs. Everything
a run needs to continue bit for bit lives in :class:`State`: positions, momenta, extras, the step
counter and the RNG (for the numba backend the counter-based generator makes ``(seed, step)`` the
whole RNG state; the torch backend carries a ``torch.Generator``).

Example:
    >>> import dynopt
    >>> sys = dynopt.systems.Langevin(dynopt.potentials.DoubleWell(), gamma=1.0, temperature=0.25)
    >>> scheme = dynopt.integrators.BAOAB()
    >>> state = scheme.init(sys, [1.0], seed=0)          # numba backend by default
    >>> for _ in range(10):
    ...     state = scheme.step(sys, state, h=0.05)
    >>> state.step
    10
"""

from __future__ import annotations

import operator
import secrets
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from ._state_check import check_state
from ._validation import check_choice, check_int, check_positive
from .backends.state import State as State
from .integrators.base import warn_if_noise_dropped
from .program import OpCode
from .systems.port_hamiltonian import check_friction_ops

if TYPE_CHECKING:
    from .integrators.base import AbstractIntegrator
    from .systems.base import AbstractSystem

__all__ = ["State", "check_state", "init", "run", "step"]

BACKENDS = ("numba", "torch")
#: Noise kinds (``noise=``); the numba kernels' codes: ``dynopt.backends.numba.philox.NOISE_KINDS``.
NOISES = ("gaussian", "gaussian-f64", "discrete")
#: Seeds are 64-bit: the Philox key takes them whole; torch's CPU generator keeps 32 bits, so
#: :func:`dynopt.backends.torch.ops.seeded` folds larger seeds into 32 with a hash of all 64.
MAX_SEED = 2**64 - 1


def new_seed() -> int:
    """A fresh random 63-bit seed (recorded in the state so the run can be reproduced)."""
    return secrets.randbits(63)


def init(
    system: AbstractSystem,
    integrator: AbstractIntegrator,
    q0: Any,
    *,
    backend: str | None = None,
    seed: int | None = None,
    p0: Any = None,
    n_chains: int | None = None,
    noise: str | None = "gaussian",
    dtype: Any = None,
    device: Any = None,
    chain_ids: Any = None,
) -> State:
    """Initial state for ``n_chains`` chains started at ``q0``.

    Args:
        system: The dynamics.
        integrator: The scheme (checked against the system's letters here).
        q0: ``(dim,)`` (broadcast to all chains) or ``(chains, dim)``.
        backend: ``"numba"`` (CPU, fused, float64) or ``"torch"`` (CPU/GPU, float32/float64);
            None: the first backend the potential supports (numba, or torch for a
            :class:`~dynopt.potentials.NetworkLoss`).
        seed: Integer seed; a fresh one is drawn (and stored in the state) if None.
        p0: Initial momenta, like ``q0``; by default Maxwell–Boltzmann for systems with a
            temperature, zero otherwise.
        n_chains: Number of independent chains (default: ``q0.shape[0]`` or 1).
        noise: ``"gaussian"`` (default; None means it too, as in :func:`dynopt.integrate`),
            ``"gaussian-f64"`` or ``"discrete"`` (moment-matched three-point noise); see
            :func:`dynopt.integrate`.
        dtype: Torch dtype (torch backend; default float64, whatever ``q0``'s dtype).
        device: Torch device (torch backend; default: ``q0``'s device when ``q0`` is a torch
            tensor, else the CPU).
        chain_ids: Global indices of these chains (torch backend): each chain then draws its
            noise from its own generator keyed by ``(seed, chain id)``
            (:mod:`dynopt.backends.torch.streams`), so a chain's path does not depend on the
            other chains or on the process that holds it.
    """
    from .backends import get_backend

    if system.potential is None:  # before the backend, whose default comes from it
        raise ValueError(f"{type(system).__name__} needs a potential to be integrated")
    if backend is None:
        backend = resolve_backend(system.potential)
    check_choice("backend", backend, BACKENDS)
    noise = check_choice("noise", "gaussian" if noise is None else noise, NOISES)
    if device is None and backend == "torch":
        device = _tensor_device(q0)  # a CUDA q0 runs on its GPU, not silently on the CPU
    if seed is None:
        seed = new_seed()
    seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    supported = getattr(system.potential, "backends", BACKENDS)
    if backend not in supported:
        raise ValueError(f"backend={backend!r} cannot integrate {system.potential!r}; it supports "
                         f"backend in {tuple(supported)}")
    integrator.check(system)
    if chain_ids is not None:
        chain_ids = check_chain_ids(chain_ids)
        if n_chains is None and np.ndim(_to_numpy(q0)) <= 1:
            n_chains = len(chain_ids)
    if n_chains is not None:
        n_chains = check_int("n_chains", n_chains, minimum=1)
    from .integrate import _rows, check_memory

    # the size before anything is allocated (a state only: no records)
    check_memory(system, _rows(q0, n_chains), system.potential.dim, 0, 1,
                 itemsize=4 if dtype is not None and "32" in str(dtype) else 8)
    q, p = _initial_arrays(system, q0, p0, n_chains)
    # an overdamped system's only extras are the LM noise memory: a scheme that never reads it
    # (Euler–Maruyama) keeps zeros there and draws nothing, as its optimizer keeps none
    draw = not _memory_only(system) or _reads_memory(system, integrator)
    if chain_ids is None:
        state = get_backend(backend).init_state(system, q, p, seed=seed, noise=noise,
                                               dtype=dtype, device=device, draw_extras=draw)
    else:
        ids = check_chain_ids(chain_ids, q.shape[0])
        if not get_backend(backend).supports_chain_ids:
            raise ValueError(f"chain_ids needs backend='torch' (the numba backend keys noise by "
                             f"the local chain index), got backend={backend!r}")
        state = get_backend(backend).init_state(system, q, p, seed=seed, noise=noise,
                                               dtype=dtype, device=device, chain_ids=ids,
                                               draw_extras=draw)
    if _memory_only(system):
        state.noise_memory = draw
    state.layout = extras_layout(system, state.dim)
    return state


def extras_layout(system: AbstractSystem, dim: int) -> tuple[tuple[str, int], ...]:
    """``system``'s extras as ``((name, size), ...)``: what :attr:`State.layout` records."""
    return tuple((str(k), int(v)) for k, v in system.extras_layout(dim).items())


def _memory_only(system: AbstractSystem) -> bool:
    """Whether the system's only extras are the LM noise memory (the overdamped system)."""
    return set(system.extras_layout(1)) == {"noise_prev"}


def _reads_memory(system: AbstractSystem, integrator: AbstractIntegrator) -> bool:
    return any(system.lower(letter, 1.0).code == OpCode.LM_NOISE
               for letter, _ in integrator.letters())


def fill_memory(system: AbstractSystem, integrator: AbstractIntegrator, state: State) -> None:
    """Give a state started by Euler–Maruyama (its LM noise memory left at zero) the memory
    that Leimkuhler–Matthews's own start draws, when LM continues it; in place (call on a
    copy). Without it LM's first step would add R₀ = 0: half the noise variance.

    ``state.noise_memory`` says whether the state holds a memory (an all-zero one is genuine
    under discrete noise); only where it is None (unknown) does an all-zero memory count as
    none."""
    if not _memory_only(system) or not _reads_memory(system, integrator):
        return
    if state.noise_memory is None:
        state.noise_memory = not bool((state.x == 0).all())
    if state.noise_memory:
        return
    state.x = start_memory(system, state)
    state.noise_memory = True


def start_memory(system: AbstractSystem, state: State) -> Any:
    """A fresh LM noise memory for every chain of ``state`` (as LM's start draws it), in the
    state's array kind, dtype and device, repeating none of the run's noise (see
    :meth:`~dynopt.backends.base.AbstractBackend.start_extras`; on the torch backend it
    advances the state's generator): for an Euler–Maruyama state continued by LM, or the
    chains an event switches to LM."""
    from .backends import get_backend

    return get_backend(state.backend).start_extras(system, state)


def _tensor_device(a: Any) -> Any:
    """The device of a torch tensor, None for anything else (torch is not imported for it)."""
    torch = sys.modules.get("torch")
    return a.device if torch is not None and isinstance(a, torch.Tensor) else None


def _to_numpy(a: Any) -> Any:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else a


def resolve_backend(potential: Any) -> str:
    """The default backend for ``potential``: the first of its ``backends`` (numba if any)."""
    return str(getattr(potential, "backends", BACKENDS)[0])


def check_chain_ids(chain_ids: Any, n_chains: int | None = None) -> list[int]:
    """Distinct non-negative integer chain indices (one per chain if ``n_chains`` is given),
    as a list: an iterator is read once, and 2.5, "1" or True are refused (not truncated)."""
    try:
        ids = []
        for c in list(chain_ids):
            if isinstance(c, bool | np.bool_):
                raise TypeError
            ids.append(operator.index(c))
    except TypeError:
        raise TypeError(f"chain_ids must be a sequence of ints, got {chain_ids!r}") from None
    if any(c < 0 for c in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"chain_ids must be distinct non-negative ints, got {chain_ids!r}")
    if any(c >= 2**32 for c in ids):  # the CPU streams are a bijection of c modulo 2³²
        raise ValueError(f"chain_ids must be below 2**32, got {max(ids)} (chains c and "
                         "c + 2**32 would share a noise stream)")
    if n_chains is not None and len(ids) != n_chains:
        raise ValueError(f"chain_ids has {len(ids)} entries but there are {n_chains} chains")
    return ids



def step(
    system: AbstractSystem, integrator: AbstractIntegrator, state: State, *, h: float | None = None
) -> State:
    """One step; returns a new state and leaves ``state`` unchanged."""
    return run(system, integrator, state, n_steps=1, h=h)


def run(
    system: AbstractSystem,
    integrator: AbstractIntegrator,
    state: State,
    *,
    n_steps: int,
    h: float | None = None,
) -> State:
    """``n_steps`` steps without recording; returns a new state.

    The steps run in calls of bounded work, as in :func:`dynopt.integrate`, so Ctrl-C (a
    KeyboardInterrupt, ``state`` unchanged) is seen within about a second; U is not evaluated,
    so unlike integrate() a non-finite U at a finite state is not checked here.
    """
    from .backends import get_backend

    h = state.h if h is None else h
    if h is None:
        raise ValueError("h must be given (the state has no previous step size)")
    h = check_positive("h", h)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    check_state(system, state)
    integrator.check(system)
    program = integrator.program(system, h)
    warn_if_noise_dropped(system, integrator.name, program.ops)  # as integrate() does
    check_friction_ops(program.ops, state.x, h)
    new = state.copy()
    fill_memory(system, integrator, new)
    from .integrate import advance_in_chunks  # (calls Ctrl-C can interrupt: see there)

    div = advance_in_chunks(get_backend(state.backend), system, program, new, n_steps)
    if div is not None:
        from .errors import DivergenceError

        raise DivergenceError(
            f"{integrator.name} on {type(system).__name__} diverged at step {div.step}: chain "
            f"{div.chain} reached a non-finite state (h = {h}); the input state is unchanged",
            step=div.step, chain=div.chain)
    if n_steps:  # State.h is the size of the last step taken
        new.h = h
    new.time = state.time + n_steps * h
    return new


def _initial_arrays(
    system: AbstractSystem, q0: Any, p0: Any, n_chains: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate and broadcast q0, p0 to ``(chains, dim)`` float64 arrays."""
    from ._validation import as_finite_array

    if q0 is None:
        raise ValueError("q0 is required (the initial positions), unless integrate() is given "
                         "state= to continue a run")
    q = as_finite_array("q0", q0, ndim=(0, 1, 2))
    if q.ndim == 2 and q.shape[0] == 0:
        raise ValueError(f"q0 has 0 chains (shape {q.shape}); give at least one row")
    if q.ndim == 0:
        q = q.reshape(1)
    dim = q.shape[-1]
    system.potential.check_dim(dim)  # type: ignore[union-attr]
    if n_chains is not None:
        n_chains = check_int("n_chains", n_chains, minimum=1)
    if q.ndim == 1:
        q = np.broadcast_to(q, (n_chains or 1, dim)).copy()
    elif n_chains is not None and q.shape[0] != n_chains:
        raise ValueError(f"q0 has {q.shape[0]} chains (rows) but n_chains={n_chains}")
    p = None
    if p0 is not None:
        if not system.has_momentum:
            raise ValueError(f"p0 given but {type(system).__name__} has no momenta")
        p = as_finite_array("p0", p0, ndim=(0, 1, 2))
        if p.ndim == 0:  # a scalar, as for q0: one coordinate
            p = p.reshape(1)
        if p.ndim == 1 and p.shape[0] == q.shape[1]:
            p = np.broadcast_to(p, q.shape).copy()
        if p.shape != q.shape:
            raise ValueError(f"p0 has shape {p.shape} but q0 gives shape {q.shape}")
    # always copies: the backends update their state in place and must never touch user input
    q = np.array(q, dtype=np.float64, order="C")
    return q, (None if p is None else np.array(p, dtype=np.float64, order="C"))
