"""Python side of the numba backend: packs programs and potentials, calls the kernel."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import AbstractBackend, Divergence, Records
from ..state import State
from .kernel import (
    EXTENDED_CODES,
    EXTENDED_SIG,
    block_lanes,
    no_extended_ops,
    potential_values,
    run_block_kernel,
)
from .philox import GAUSSIAN, GAUSSIAN_F64, NOISE_KINDS, fill_for, normals_for, split_seed
from .potentials import GRAD_SIG, VALUE_SIG, dummy_grad, dummy_value, unused

if TYPE_CHECKING:
    from ...potentials.base import AbstractPotential
    from ...program import Program

__all__ = ["NumbaBackend", "pack_potential"]

#: Philox streams: 0 = dynamics noise, 1 = initial momenta, 2 = initial extras, 4 = the
#: directions of the ``Bounce`` event action.
STREAM_MOMENTA = 1
STREAM_EXTRAS = 2
STREAM_EVENT_BOUNCE = 4
#: Event loops with fewer than this many numbers (chains × dim) per step run on one thread.
SERIAL_WORK = 1 << 16


def pack_potential(potential: AbstractPotential) -> tuple[int, np.ndarray, Any, Any]:
    """``(kind, params, value_fn, grad_fn)`` for the kernel."""
    kind = int(potential.numba_kind)
    if kind > 0:
        return kind, np.ascontiguousarray(potential.numba_params(), dtype=np.float64), (
            unused(dummy_value, VALUE_SIG)), unused(dummy_grad, GRAD_SIG)
    fns = potential.numba_functions()
    if fns is None:
        raise ValueError(
            f"backend='numba' needs a numba implementation of {potential!r}: pass numba_value= "
            "and numba_grad= to dynopt.potentials.Custom, or use backend='torch'"
        )
    return 0, np.zeros(1), fns[0], fns[1]


def _check_buffers(system: Any, program: Program, state: State) -> None:
    """The shapes and dtypes the kernel indexes by (a mismatch would corrupt memory)."""
    n, dim = state.q.shape
    for name in ("q", "p", "x"):
        a = getattr(state, name)
        if (not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype != np.float64
                or not a.flags.c_contiguous or a.shape[0] != n):
            raise ValueError(f"state.{name} must be a C-contiguous float64 array with {n} rows "
                             f"for backend='numba', got {type(a).__name__} "
                             f"{getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")
    if dim != system.potential.dim:
        raise ValueError(f"state has dim={dim} but the potential {system.potential!r} has "
                         f"dim={system.potential.dim}")
    if state.p.shape[1] != (dim if system.has_momentum else 0):
        raise ValueError(f"state.p has shape {state.p.shape}; {type(system).__name__} needs "
                         f"{(n, dim if system.has_momentum else 0)}")
    if state.x.shape[1] != program.n_extras:
        raise ValueError(f"state.x has {state.x.shape[1]} extras per chain but the program of "
                         f"{type(system).__name__} addresses {program.n_extras}")


def _extended_ops(codes: np.ndarray) -> Any:
    """The kernel's extended-op function: compiled (on first import) only for programs that
    use an op outside the kernel's inline set."""
    if any(int(c) in _EXTENDED for c in codes):
        from .extended_ops import run_extended_op

        return run_extended_op
    return unused(no_extended_ops, EXTENDED_SIG)


_EXTENDED = frozenset(int(c) for c in EXTENDED_CODES)


class NumbaBackend(AbstractBackend):
    """CPU, float64, parallel over blocks of chains; counter-based noise (Philox-4x32-10)."""

    name = "numba"

    def init_state(self, system, q, p, *, seed, noise, dtype, device,  # type: ignore[no-untyped-def]
                   draw_extras=True):
        if str(dtype) not in ("None", "float64", "double", "torch.float64",
                              "<class 'numpy.float64'>", "<class 'float'>") or (
                str(device) not in ("None", "cpu")):
            raise ValueError(
                f"backend='numba' runs in float64 on the CPU; got dtype={dtype!r}, "
                f"device={device!r} (use backend='torch' for float32 or CUDA)"
            )
        n, dim = q.shape
        # Maxwell–Boltzmann momenta are Gaussian whatever the run's noise kind
        kind = GAUSSIAN_F64 if NOISE_KINDS[noise] == GAUSSIAN_F64 else GAUSSIAN

        def sampler(stream: int) -> Any:
            def draw(shape: tuple[int, ...]) -> np.ndarray:
                return normals_for(seed, shape[0], int(np.prod(shape[1:])), stream=stream,
                                   kind=kind).reshape(shape)
            return draw

        if p is None:
            p = system.initial_momentum(n, dim, sampler(STREAM_MOMENTA))
        x = system.initial_extras(n, dim, sampler(STREAM_EXTRAS) if draw_extras
                                  else lambda shape: np.zeros(shape))
        return State(q=np.ascontiguousarray(q, dtype=np.float64),
                     p=np.ascontiguousarray(p, dtype=np.float64).reshape(n, -1),
                     x=np.ascontiguousarray(x, dtype=np.float64).reshape(n, -1),
                     step=0, seed=seed, backend="numba", noise=noise)

    def start_extras(self, system, state):  # type: ignore[no-untyped-def]
        # the extras' own Philox stream, keyed by (seed, chain): independent of the dynamics
        # noise (stream 0) at every step
        return self.init_state(system, state.q, state.p, seed=state.seed, noise=state.noise,
                               dtype=None, device=None).x

    def advance(self, system, program: Program, state: State, n_steps: int,  # type: ignore[no-untyped-def]
                records: Records | None) -> Divergence | None:
        if n_steps == 0:
            return None
        _check_buffers(system, program, state)
        codes, fstart, fpar, istart, ipar = program.pack()
        kind, par, vfn, gfn = pack_potential(system.potential)
        minv = 1.0 / system.mass_vector(state.dim)
        sqrtm = np.sqrt(system.mass_vector(state.dim))
        k0, k1 = split_seed(state.seed)
        lanes = block_lanes(state.n_chains)
        start_q = state.q[:lanes].copy() if kind == 0 else None
        n_blocks = (state.n_chains + lanes - 1) // lanes
        status = np.zeros((n_blocks, 3), dtype=np.int64)
        if records is None:
            rq = np.zeros((1, 1, 1))
            rp = np.zeros((1, 1, 1))
            rx = np.zeros((1, 1, 1))
            ru = np.zeros((1, 1))
            every = n_steps + 1
            start = 0
        else:
            rq, rp, rx, ru, every, start = (records.q, records.p, records.x, records.u,
                                            records.every, records.next)
        run_block_kernel((state.q, state.p, state.x), (minv, sqrtm),
                         (codes, fstart, fpar, istart, ipar), (kind, par), vfn, gfn,
                         _extended_ops(codes), fill_for(NOISE_KINDS[state.noise]),
                         (k0, k1, NOISE_KINDS[state.noise]),
                         (state.step, n_steps, every, start, lanes), (rq, rp, rx, ru), status)
        bad = status[:, 0] > 0
        div = None
        if bad.any():
            i = int(np.argmin(np.where(bad, status[:, 0], np.iinfo(np.int64).max)))
            div = Divergence(step=int(status[i, 0]), chain=int(status[i, 1]),
                             potential=bool(status[i, 2]))
        if kind == 0 and hasattr(system.potential, "raise_if_failed"):
            where = (f"at or before step {div.step} (chain {div.chain})" if div is not None
                     else f"in steps {state.step + 1}..{state.step + n_steps}")
            system.potential.raise_if_failed(par, start_q, where)
        if div is not None:
            return div
        state.step += n_steps
        if records is not None:
            records.next += n_steps // every
        return None

    def potential_values(self, system, q):  # type: ignore[no-untyped-def]
        kind, par, vfn, _ = pack_potential(system.potential)
        q = np.ascontiguousarray(q, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != system.potential.dim:  # built-ins index par by d
            raise ValueError(f"q has shape {q.shape}; {system.potential!r} needs (chains, "
                             f"{system.potential.dim})")
        out = potential_values(q, kind, par, vfn)
        if kind == 0 and hasattr(system.potential, "raise_if_failed"):
            system.potential.raise_if_failed(par, q, "on the recorded state")
        return out

    def allocate_records(self, state, n_records, every):  # type: ignore[no-untyped-def]
        c = state.n_chains
        return Records(q=np.full((c, n_records, state.dim), np.nan),
                       p=np.full((c, n_records, state.p.shape[1]), np.nan),
                       x=np.full((c, n_records, state.x.shape[1]), np.nan),
                       u=np.full((c, n_records), np.nan), every=every)

    def records_to_numpy(self, records):  # type: ignore[no-untyped-def]
        return {"q": records.q, "p": records.p, "x": records.x, "u": records.u}

    array_kind = "a numpy array"

    def is_array(self, a):  # type: ignore[no-untyped-def]
        return isinstance(a, np.ndarray)

    def check_storage(self, state):  # type: ignore[no-untyped-def]
        for name in ("q", "p", "x"):
            a = getattr(state, name)
            if a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable:
                raise ValueError(
                    f"state.{name} must be a writable C-contiguous float64 array for "
                    f"backend='numba', got dtype {a.dtype}, contiguous="
                    f"{a.flags.c_contiguous}, writable={a.flags.writeable}")

    def state_to_numpy(self, state):  # type: ignore[no-untyped-def]
        return {"q": np.asarray(state.q), "p": np.asarray(state.p), "x": np.asarray(state.x)}

    def copy_state(self, state):  # type: ignore[no-untyped-def]
        return dataclasses.replace(state, q=state.q.copy(), p=state.p.copy(), x=state.x.copy())

    def itemsize(self, state):  # type: ignore[no-untyped-def]
        return 8

    def write_record(self, records, r, state, system):  # type: ignore[no-untyped-def]
        records.q[:, r] = state.q
        records.p[:, r] = state.p
        records.x[:, r] = state.x
        records.u[:, r] = self.potential_values(system, state.q)

    def bounce_momenta(self, state, fired, mass):  # type: ignore[no-untyped-def]
        n, dim = state.q.shape
        # isotropic directions whatever the run's noise kind (discrete normals are not), from the
        # float64 transform as the in-kernel bounces of energy_ops (once per event: cost moot)
        z = normals_for(state.seed, n, dim, stream=STREAM_EVENT_BOUNCE, first=state.step * dim,
                        kind=GAUSSIAN_F64)
        # p ← √K·M^{1/2}z/|z|, K = pᵀM⁻¹p: a random direction of the same kinetic energy
        sqrt_m = np.sqrt(np.asarray(mass, dtype=np.float64))
        pn = np.sqrt(np.sum(state.p * state.p / sqrt_m**2, axis=-1, keepdims=True))
        zn = np.linalg.norm(z, axis=-1, keepdims=True)
        state.p[fired] = (sqrt_m * z * (pn / zn))[fired]

    @contextlib.contextmanager
    def serial_for(self, work):  # type: ignore[no-untyped-def]
        if work >= SERIAL_WORK:
            yield
            return
        import numba

        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            yield
        finally:
            numba.set_num_threads(threads)
