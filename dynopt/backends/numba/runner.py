"""Python side of the numba backend: packs programs and potentials, calls the kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import AbstractBackend, Divergence, Records
from .kernel import LANES, potential_values, run_block_kernel
from .philox import DISCRETE, GAUSSIAN, normals_for, split_seed
from .potentials import dummy_grad, dummy_value

if TYPE_CHECKING:
    from ...potentials.base import AbstractPotential
    from ...program import Program
    from ...stepping import State

__all__ = ["NumbaBackend", "pack_potential"]

#: Philox streams: 0 = dynamics noise, 1 = initial momenta, 2 = initial extras.
STREAM_MOMENTA = 1
STREAM_EXTRAS = 2


def pack_potential(potential: AbstractPotential) -> tuple[int, np.ndarray, Any, Any]:
    """``(kind, params, value_fn, grad_fn)`` for the kernel."""
    kind = int(potential.numba_kind)
    if kind > 0:
        return kind, np.ascontiguousarray(potential.numba_params(), dtype=np.float64), (
            dummy_value), dummy_grad
    fns = potential.numba_functions()
    if fns is None:
        raise ValueError(
            f"backend='numba' needs a numba implementation of {potential!r}: pass numba_value= "
            "and numba_grad= to dynopt.potentials.Custom, or use backend='torch'"
        )
    return 0, np.zeros(1), fns[0], fns[1]


class NumbaBackend(AbstractBackend):
    """CPU, float64, parallel over blocks of chains; counter-based noise (Philox-4x32-10)."""

    name = "numba"

    def init_state(self, system, q, p, *, seed, noise, dtype, device):  # type: ignore[no-untyped-def]
        from ...stepping import State

        if dtype not in (None, np.float64, "float64") or device not in (None, "cpu"):
            raise ValueError(
                f"backend='numba' runs in float64 on the CPU; got dtype={dtype!r}, "
                f"device={device!r} (use backend='torch' for float32 or CUDA)"
            )
        n, dim = q.shape
        kind = DISCRETE if noise == "discrete" else GAUSSIAN

        def sampler(stream: int) -> Any:
            def draw(shape: tuple[int, ...]) -> np.ndarray:
                return normals_for(seed, shape[0], int(np.prod(shape[1:])), stream=stream,
                                   kind=kind).reshape(shape)
            return draw

        if p is None:
            p = system.initial_momentum(n, dim, sampler(STREAM_MOMENTA))
        x = system.initial_extras(n, dim, sampler(STREAM_EXTRAS))
        return State(q=np.ascontiguousarray(q, dtype=np.float64),
                     p=np.ascontiguousarray(p, dtype=np.float64).reshape(n, -1),
                     x=np.ascontiguousarray(x, dtype=np.float64).reshape(n, -1),
                     step=0, seed=seed, backend="numba", noise=noise)

    def advance(self, system, program: Program, state: State, n_steps: int,  # type: ignore[no-untyped-def]
                records: Records | None) -> Divergence | None:
        if n_steps == 0:
            return None
        codes, fstart, fpar, istart, ipar = program.pack()
        kind, par, vfn, gfn = pack_potential(system.potential)
        minv = 1.0 / system.mass_vector(state.dim)
        sqrtm = np.sqrt(system.mass_vector(state.dim))
        k0, k1 = split_seed(state.seed)
        n_blocks = (state.n_chains + LANES - 1) // LANES
        status = np.zeros((n_blocks, 2), dtype=np.int64)
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
        run_block_kernel(state.q, state.p, state.x, minv, sqrtm, codes, fstart, fpar, istart,
                         ipar, kind, par, vfn, gfn, k0, k1,
                         DISCRETE if state.noise == "discrete" else GAUSSIAN,
                         state.step, n_steps, every, start, rq, rp, rx, ru, status)
        bad = status[:, 0] > 0
        if bad.any():
            i = int(np.argmin(np.where(bad, status[:, 0], np.iinfo(np.int64).max)))
            return Divergence(step=int(status[i, 0]), chain=int(status[i, 1]))
        state.step += n_steps
        if records is not None:
            records.next += n_steps // every
        return None

    def potential_values(self, system, q):  # type: ignore[no-untyped-def]
        kind, par, vfn, _ = pack_potential(system.potential)
        return potential_values(np.ascontiguousarray(q, dtype=np.float64), kind, par, vfn)

    def allocate_records(self, state, n_records, every):  # type: ignore[no-untyped-def]
        c = state.n_chains
        return Records(q=np.full((c, n_records, state.dim), np.nan),
                       p=np.full((c, n_records, state.p.shape[1]), np.nan),
                       x=np.full((c, n_records, state.x.shape[1]), np.nan),
                       u=np.full((c, n_records), np.nan), every=every)

    def records_to_numpy(self, records):  # type: ignore[no-untyped-def]
        return {"q": records.q, "p": records.p, "x": records.x, "u": records.u}
