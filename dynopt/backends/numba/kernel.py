"""The fused numba kernel: one compiled interpreter of :mod:`dynopt.program` ops for all schemes.

Loop order (chains are independent, so they are the parallel and the vector dimension):

    prange over blocks of ``lanes`` chains (:func:`block_lanes`)
        load the block into structure-of-arrays buffers Q[d, l], P[d, l], X[e, l]
        for each step
            every few steps: fill the noise buffer for the coming steps (Philox, vectorized;
                the fill of the run's noise kind comes as a function pointer, philox.fill_for)
            for each op of the program: refresh ∇U if the op reads it and q moved (op table),
                then one vectorized loop over lanes (inline ops, INLINE_CODES) or one call of
                the extended-op function pointer (EXTENDED_CODES, :mod:`.extended_ops`)
            check that Q, P are finite and X is not NaN (else record the step, stop the block)
            every ``record_every`` steps: write q, p, extras, U to the output arrays (a
                non-finite U stops the block as a non-finite state does)
        store the block back

The op interpreter dispatches on the op code once per op per step per block, so its cost is
amortized over the block's chains; a new splitting string is just a new op list, never new code.
The kernel has an explicit signature (user potentials and the extended ops enter as
first-class function pointers; the other arguments are grouped into the typed tuples below), so
it compiles once and is cached on disk. A program whose noise ops all have amplitude 0 draws no
normals.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

from ...program import OPS, OpCode, noise_counts, skippable_amplitudes
from . import lane_ops
from .cache import CACHE
from .intrinsics import f64_as_u64, prefer_512_bit_vectors
from .philox import FILL_FN
from .potentials import GRAD_FN, VALUE_FN, grad_block, value_lane

__all__ = ["EXTENDED_CODES", "EXTENDED_FN", "EXTENDED_SIG", "INLINE_CODES", "MASS", "MAX_LANES",
           "NOISE", "POTENTIAL", "PROGRAM", "RECORDS", "SCHEDULE", "STATE", "block_lanes",
           "no_extended_ops", "potential_values", "run_block_kernel"]

#: Most chains per block (the vector width of the op loops; see :func:`block_lanes`).
MAX_LANES = 256
#: Chains per block of :func:`potential_grads` (a fixed buffer width).
_GRAD_LANES = 64
#: Target number of normals per lane generated per fill of the noise buffer.
_NOISE_CHUNK = 64

_DRIFT = int(OpCode.DRIFT)
_KICK = int(OpCode.KICK)
_OU = int(OpCode.OU)
_GRAD_STEP = int(OpCode.GRAD_STEP)
_WIENER = int(OpCode.WIENER)
_LM_NOISE = int(OpCode.LM_NOISE)
_ADD_NOISE = int(OpCode.ADD_NOISE)
#: Ops the interpreter runs inline: those of Hamiltonian, Langevin and overdamped schemes.
#: Adaptive Langevin's friction, thermostat and OU-ξ ops moved out (issue 11's cold start: the
#: kernel compiles in 9.5 instead of 11.7 s); with blocks of up to MAX_LANES = 256 chains the
#: indirect call costs an AdL ensemble of 10,000 chains 5 % against inline ops at 64 lanes.
INLINE_CODES = frozenset({OpCode.DRIFT, OpCode.KICK, OpCode.OU, OpCode.GRAD_STEP, OpCode.WIENER,
                          OpCode.LM_NOISE, OpCode.ADD_NOISE})
#: Every other op (thermostats, Nosé–Hoover chains, energy-conserving descent) runs in
#: :func:`dynopt.backends.numba.extended_ops.run_extended_op`, passed to the kernel as a
#: function pointer: it is compiled only when a program uses one of them, which halves the
#: first compile of the kernel (see docs/architecture.md, "Cold start").
EXTENDED_CODES = frozenset(OpCode) - INLINE_CODES
#: Noise vectors per op code, from the op table (:data:`dynopt.program.OPS`).
_NORMALS = noise_counts()
#: Whether an op reads ∇U / moves q, per op code (the op table's flags).
_READS_GRADIENT = np.zeros(len(_NORMALS), dtype=np.bool_)
_MOVES_Q = np.zeros(len(_NORMALS), dtype=np.bool_)
#: Index in an op's float constants of its noise amplitude, or −1 where the draw is needed
#: whatever it is (:func:`dynopt.program.skippable_amplitudes`).
_AMPLITUDE = skippable_amplitudes()
for _code, _info in OPS.items():
    _READS_GRADIENT[int(_code)] = _info.reads_gradient
    _MOVES_Q[int(_code)] = _info.moves_q

_f1 = types.float64[::1]
_f2 = types.float64[:, ::1]
_f3 = types.float64[:, :, ::1]
_i1 = types.int64[::1]
_i2 = types.int64[:, ::1]

#: ``run_extended_op(code, Q, P, X, G, Z, zb, nl, c0, step, fpar, f, ipar, i0, minv, sqrtm,
#: n_dof, pot_kind, pot_par, value_fn, tq, tmp, tmp2, key0, key1)``: one extended op on a block.
EXTENDED_SIG = types.void(
    types.int64, _f2, _f2, _f2, _f2, _f2,  # code, Q, P, X, G, Z
    types.int64, types.int64, types.int64, types.int64,  # zb, nl, c0 (first chain), step
    _f1, types.int64, _i1, types.int64,  # fpar, f, ipar, i0
    _f1, _f1, types.float64,  # minv, sqrtm, n_dof
    types.int64, _f1, VALUE_FN,  # potential kind, params, user value function
    _f1, _f1, _f1,  # scratch tq (D), tmp, tmp2 (one per lane)
    types.uint64, types.uint64,  # key0, key1
)
EXTENDED_FN = types.FunctionType(EXTENDED_SIG)


@nb.njit(EXTENDED_SIG, cache=CACHE, error_model="numpy")
def no_extended_ops(code, Q, P, X, G, Z, zb, nl, c0, step, fpar, f, ipar, i0, minv, sqrtm,  # type: ignore[no-untyped-def]
                    n_dof, pot_kind, pot_par, value_fn, tq, tmp, tmp2, key0, key1):
    """The extended-op pointer of programs that use none (the runner checks; never called)."""
    raise ValueError("run_block_kernel: an extended op code without run_extended_op")


#: The kernel's argument groups (tuples), in order.
STATE = types.UniTuple(_f2, 3)  # q (C, D), p (C, D or 0), x (C, E): updated in place
MASS = types.UniTuple(_f1, 2)  # M⁻¹ and √M per coordinate
PROGRAM = types.Tuple((_i1, _i1, _f1, _i1, _i1))  # codes, fstart, fpar, istart, ipar (pack())
POTENTIAL = types.Tuple((types.int64, _f1))  # built-in kind (0: user functions), parameters
NOISE = types.Tuple((types.uint64, types.uint64, types.int64))  # key0, key1, kind
SCHEDULE = types.UniTuple(types.int64, 5)  # step0, n_steps, record_every, rec_start, lanes
RECORDS = types.Tuple((_f3, _f3, _f3, _f2))  # rec_q, rec_p, rec_x (C, R, ·), rec_u (C, R)

_SIGNATURE = types.void(
    STATE, MASS, PROGRAM, POTENTIAL,
    VALUE_FN, GRAD_FN, EXTENDED_FN,  # user potential functions, the extended ops (or the stub)
    FILL_FN,  # the noise fill of the run's kind (philox.fill_for)
    NOISE, SCHEDULE, RECORDS,
    _i2,  # status (block, [step, chain])
)


@intrinsic
def _borrowed(typingctx, ary):  # type: ignore[no-untyped-def]
    """A view of array ``ary`` (same data, shape and strides) without its memory-info pointer.

    The extended-op function is a separately compiled numba function, and numba increments
    and decrements the reference count of every array argument of such a function that has a
    memory info, on every call: the block's eight buffers (Q, P, X, G, Z, tq, tmp, tmp2), 16
    atomic read-modify-writes and 16 out-of-line calls per op, step and block, about 100 ns,
    as much as a thermostat op's own work on a block of 16 chains (the constants fpar, ipar,
    minv, sqrtm and pot_par reach the parallel loop body without a memory info already; their
    views only make that explicit). The kernel passes
    views made by this function instead: counting references on a null memory info is a no-op.
    The arrays they view stay alive for the whole block: the arguments until the kernel
    returns, the block's buffers until :func:`_alive` at the end of the block (numba frees a
    buffer after its last use, and the views do not count as uses).
    """
    if not isinstance(ary, types.Array):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        view = context.make_array(signature.args[0])(context, builder, value=args[0])
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        return view._getvalue()

    return ary(ary), codegen


@intrinsic
def _alive(typingctx, ary):  # type: ignore[no-untyped-def]
    """Nothing at run time: a use of ``ary`` that keeps numba from freeing it before this point
    (the buffers whose :func:`_borrowed` views the extended op works on)."""
    if not isinstance(ary, types.Array):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return context.get_dummy_value()

    return types.none(ary), codegen


def block_lanes(n_chains: int, n_threads: int | None = None) -> int:
    """Chains per block for an ensemble of ``n_chains``: as many as :data:`MAX_LANES`, so that
    the per-op dispatch and extended-op calls are amortized over many lanes, but never so many
    that a thread is left without a block (the number of blocks is rounded up to a multiple of
    the thread count), and a multiple of 8 (whole vectors).

    Results do not depend on it: every op acts on each lane alone and the noise is a function
    of (seed, chain, step). Measured (BAOAB, double well, 2 threads; M chain-steps/s): 10,000
    chains 247 at 64 lanes, 267 at 256; 100 chains 222 at 64, 136 at one block of 100.
    """
    threads = max(1, n_threads if n_threads is not None else nb.get_num_threads())
    n = max(1, int(n_chains))
    blocks = -(-n // MAX_LANES)
    blocks = min(-(-blocks // threads) * threads, -(-n // 8))
    per_block = -(-n // blocks)
    return min(MAX_LANES, 8 * -(-per_block // 8))


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _first_bad_lane(Q, P, X, Dp, E, nl):  # type: ignore[no-untyped-def]
    """The first lane whose q or p (its first ``Dp`` rows) is not finite or whose extras (first
    ``E`` rows) hold a NaN, else −1.

    The common case (every lane fine) is one OR over bit patterns, which vectorizes (a
    floating-point sum or an early-exit scan does not: each step paid ~0.3 µs per block of 256
    chains for it, a third of a noise-free BAOAB step): v·0 is ±0 for finite v and NaN
    otherwise, so its bits without the sign are 0 exactly for finite v. Only a block that
    diverged looks for the lane, once.
    """
    acc = np.uint64(0)
    for d in range(Q.shape[0]):
        for lane in range(nl):
            acc |= f64_as_u64(Q[d, lane] * 0.0)
    for d in range(Dp):
        for lane in range(nl):
            acc |= f64_as_u64(P[d, lane] * 0.0)
    for e in range(E):
        for lane in range(nl):
            acc |= np.uint64(X[e, lane] != X[e, lane])
    if (acc << np.uint64(1)) == np.uint64(0):
        return -1
    for lane in range(nl):
        v = 0.0
        for d in range(Q.shape[0]):
            v += Q[d, lane] * 0.0
        for d in range(Dp):
            v += P[d, lane] * 0.0
        for e in range(E):
            if X[e, lane] != X[e, lane]:
                v = math.nan
        if v != 0.0:
            return lane
    return -1  # pragma: no cover - unreachable: some lane set a bit


@nb.njit(_SIGNATURE, parallel=True, cache=CACHE, error_model="numpy")
def run_block_kernel(  # type: ignore[no-untyped-def]
    state, mass, program, potential, value_fn, grad_fn, extended_fn, fill_fn, noise, schedule,
    records, status,
):
    """Advance every chain of ``state`` by ``n_steps`` steps of ``program``.

    Arguments are grouped as the module's tuple types say (:data:`STATE`, :data:`MASS`,
    :data:`PROGRAM`, :data:`POTENTIAL`, :data:`NOISE`, :data:`SCHEDULE`, :data:`RECORDS`);
    ``status[b] = (step, chain, why)`` marks the first non-finite state of block ``b`` (0 if
    none; ``why`` = 1 where q, p and the extras were finite but U at a record step was not).
    """
    q, p, x = state
    minv, sqrtm = mass
    codes, fstart, fpar, istart, ipar = program
    pot_kind, pot_par = potential
    key0, key1, noise_kind = noise
    step0, n_steps, record_every, rec_start, lanes = schedule
    rec_q, rec_p, rec_x, rec_u = records
    C, D = q.shape
    Dp = p.shape[1]
    E = x.shape[1]
    n_ops = codes.shape[0]
    # entry checks: every index below relies on these shapes (one bad buffer = memory corruption)
    if p.shape[0] != C or x.shape[0] != C:
        raise ValueError("run_block_kernel: q, p and x must have the same number of rows")
    if minv.shape[0] != D or sqrtm.shape[0] != D:
        raise ValueError("run_block_kernel: minv and sqrtm must have q.shape[1] entries")
    if Dp != D and Dp != 0:
        raise ValueError("run_block_kernel: p must have q.shape[1] columns, or 0 (first order)")
    if fstart.shape[0] < n_ops + 1 or istart.shape[0] < n_ops + 1:
        raise ValueError("run_block_kernel: fstart and istart need len(codes) + 1 entries")
    if fstart[n_ops] > fpar.shape[0] or istart[n_ops] > ipar.shape[0]:
        raise ValueError("run_block_kernel: fpar or ipar shorter than the ops address")
    if n_steps < 0 or record_every < 1 or rec_start < 0 or step0 < 0:
        raise ValueError("run_block_kernel: n_steps, step0, rec_start >= 0, record_every >= 1")
    if lanes < 1:
        raise ValueError("run_block_kernel: lanes >= 1")
    if status.shape[0] < (C + lanes - 1) // lanes or status.shape[1] < 3:
        raise ValueError("run_block_kernel: status needs (n_blocks, 3) entries")
    if n_steps // record_every > 0:
        last = rec_start + n_steps // record_every
        if (rec_q.shape[0] != C or rec_q.shape[1] < last or rec_q.shape[2] != D
                or rec_p.shape[0] != C or rec_p.shape[1] < last or rec_p.shape[2] != Dp
                or rec_x.shape[0] != C or rec_x.shape[1] < last or rec_x.shape[2] != E
                or rec_u.shape[0] != C or rec_u.shape[1] < last):
            raise ValueError("run_block_kernel: record arrays too small for this run")
    n_noise_ops = 0
    quiet = True  # every noise op has amplitude 0 (temperature 0): no normals are drawn
    for k in range(n_ops):
        c = codes[k]
        if c < 0 or c >= _NORMALS.shape[0]:
            raise ValueError("run_block_kernel: an op code outside dynopt.program.OpCode")
        if Dp == 0 and c != _GRAD_STEP and c != _WIENER and c != _LM_NOISE:
            raise ValueError("run_block_kernel: a momentum op on a state without momenta")
        n_noise_ops += _NORMALS[c]
        if _NORMALS[c] > 0 and (_AMPLITUDE[c] < 0 or fpar[fstart[k] + _AMPLITUDE[c]] != 0.0):
            quiet = False
    S = n_noise_ops * D  # normals per lane per step
    # Normal i of a chain's step noise is at Philox index gs·S + i: a run resumed with a scheme
    # of another S would re-read indices drawn before, so each S gets its own stream word
    # (0 for one noise op per step: BAOAB, ABOBA, ...; 16 + ops otherwise).
    noise_stream = np.int64(0) if n_noise_ops == 1 else np.int64(16 + n_noise_ops)
    K = max(1, _NOISE_CHUNK // max(S, 1))  # steps per noise fill
    z_rows = 4 * ((K * S + 3) // 4 + 1) if S > 0 else 4
    n_blocks = (C + lanes - 1) // lanes
    n_dof = np.float64(D)
    for b in nb.prange(n_blocks):
        prefer_512_bit_vectors()  # on the outlined loop body, where the lane loops are
        c0 = b * lanes
        nl = min(lanes, C - c0)
        Q = np.empty((D, nl))
        P = np.empty((max(Dp, 1), nl))
        X = np.empty((max(E, 1), nl))
        G = np.zeros((D, nl))
        Z = np.zeros((z_rows, nl))  # stays 0 when quiet (0·Z must not be 0·NaN)
        Ubits = np.empty((4, nl), dtype=np.uint64)
        tmp = np.empty(nl)
        tmp2 = np.empty(nl)
        tq = np.empty(D)
        tg = np.empty(D)
        # the extended op's arrays, without reference counts (see _borrowed)
        Qb, Pb, Xb, Gb, Zb = (_borrowed(Q), _borrowed(P), _borrowed(X), _borrowed(G),
                              _borrowed(Z))
        tqb, tmpb, tmp2b = _borrowed(tq), _borrowed(tmp), _borrowed(tmp2)
        fparb, iparb, minvb, sqrtmb, pot_parb = (_borrowed(fpar), _borrowed(ipar),
                                                  _borrowed(minv), _borrowed(sqrtm),
                                                  _borrowed(pot_par))
        for lane in range(nl):
            for d in range(D):
                Q[d, lane] = q[c0 + lane, d]
            for d in range(Dp):
                P[d, lane] = p[c0 + lane, d]
            for e in range(E):
                X[e, lane] = x[c0 + lane, e]
        grad_ok = False
        z_offset = 0
        for n in range(n_steps):
            gs = step0 + n
            if S > 0 and not quiet and n % K == 0:
                steps_here = min(K, n_steps - n)
                first = gs * S
                call_first = first // 4
                n_calls = (first + steps_here * S + 3) // 4 - call_first
                fill_fn(Z, Ubits, c0, nl, call_first, n_calls, noise_stream, key0, key1,
                        noise_kind)
                z_offset = first - 4 * call_first
            zb = z_offset + (n % K) * S
            for k in range(n_ops):
                code = codes[k]
                f = fstart[k]
                i0 = istart[k]
                # the gradient cache, from the op table: refresh before an op that reads ∇U
                # (unless no op moved q since), drop after an op that moves q
                if _READS_GRADIENT[code]:
                    grad_ok = lane_ops.gradient(grad_ok, pot_kind, pot_par, Q, G, nl, grad_fn,
                                                tq, tg)
                if code == _DRIFT:
                    lane_ops.drift(Q, P, minv, fpar[f], nl)
                elif code == _KICK:
                    lane_ops.kick(P, G, fpar[f], nl)
                elif code == _OU:
                    lane_ops.ou(P, Z, zb, fpar[f], fpar[f + 1], sqrtm, nl)
                elif code == _GRAD_STEP:
                    lane_ops.grad_step(Q, G, fpar[f], nl)
                elif code == _WIENER:
                    lane_ops.wiener(Q, Z, zb, fpar[f], nl)
                elif code == _LM_NOISE:
                    lane_ops.lm_noise(Q, X, Z, zb, ipar[i0], fpar[f], nl)
                elif code == _ADD_NOISE:
                    lane_ops.add_noise(P, Z, zb, fpar[f], sqrtm, nl)
                else:  # an extended op (Nosé–Hoover chains, energy-conserving descent)
                    extended_fn(code, Qb, Pb, Xb, Gb, Zb, zb, nl, c0, gs, fparb, f, iparb, i0,
                                minvb, sqrtmb, n_dof, pot_kind, pot_parb, value_fn, tqb, tmpb,
                                tmp2b, key0, key1)
                if _MOVES_Q[code]:
                    grad_ok = False
                zb += D * _NORMALS[code]  # the op's normals are consumed
            # divergence check, before recording: a NaN/inf in q or p or a NaN in an extra
            # (extras may hold +inf as a "not yet" marker) stops this block at this step, and
            # so does, at a record step, a non-finite U at a finite state (the chain left the
            # potential's domain): the first lane either way (status[b, 2] = 1 for U).
            bad = _first_bad_lane(Q, P, X, Dp, E, nl)
            why = 0
            if (n + 1) % record_every == 0:
                r = rec_start + (n + 1) // record_every - 1
                for lane in range(nl if bad < 0 else bad):
                    u = value_lane(pot_kind, pot_par, Q, lane, value_fn, tq)
                    if not math.isfinite(u):
                        bad = lane
                        why = 1
                        break
                    cc = c0 + lane
                    for d in range(D):
                        rec_q[cc, r, d] = Q[d, lane]
                    for d in range(Dp):
                        rec_p[cc, r, d] = P[d, lane]
                    for e in range(E):
                        rec_x[cc, r, e] = X[e, lane]
                    rec_u[cc, r] = u
            if bad >= 0:
                status[b, 0] = gs + 1
                status[b, 1] = c0 + bad
                status[b, 2] = why
                break
        for lane in range(nl):
            for d in range(D):
                q[c0 + lane, d] = Q[d, lane]
            for d in range(Dp):
                p[c0 + lane, d] = P[d, lane]
            for e in range(E):
                x[c0 + lane, e] = X[e, lane]
        # the block's buffers are alive until here, under their borrowed views
        _alive(Q), _alive(P), _alive(X), _alive(G), _alive(Z)
        _alive(tq), _alive(tmp), _alive(tmp2)


# Explicit signatures: user functions enter as first-class function types, so one compiled
# version serves every potential (a per-dispatcher specialization would be written to the
# on-disk cache index with a reference to the user's module, breaking every later load).
@nb.njit(_f1(_f2, types.int64, _f1, VALUE_FN), cache=CACHE, error_model="numpy")
def potential_values(q, pot_kind, pot_par, value_fn):  # type: ignore[no-untyped-def]
    """U for each row of ``q`` (C, D), with the kernel's own potential code."""
    C, D = q.shape
    out = np.empty(C)
    Q = np.empty((D, 1))
    tq = np.empty(D)
    for c in range(C):
        for d in range(D):
            Q[d, 0] = q[c, d]
        # np.int64(0), not 0: a literal argument would compile a second copy of value_lane
        out[c] = value_lane(pot_kind, pot_par, Q, np.int64(0), value_fn, tq)
    return out


@nb.njit(_f2(_f2, types.int64, _f1, GRAD_FN), cache=CACHE, error_model="numpy")
def potential_grads(q, pot_kind, pot_par, grad_fn):  # type: ignore[no-untyped-def]
    """∇U for each row of ``q`` (C, D), with the kernel's own potential code."""
    C, D = q.shape
    out = np.empty((C, D))
    Q = np.empty((D, _GRAD_LANES))
    G = np.empty((D, _GRAD_LANES))
    tq = np.empty(D)
    tg = np.empty(D)
    for c0 in range(0, C, _GRAD_LANES):
        nl = min(_GRAD_LANES, C - c0)
        for lane in range(nl):
            for d in range(D):
                Q[d, lane] = q[c0 + lane, d]
        grad_block(pot_kind, pot_par, Q, G, nl, grad_fn, tq, tg)
        for lane in range(nl):
            for d in range(D):
                out[c0 + lane, d] = G[d, lane]
    return out
