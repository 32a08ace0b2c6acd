"""The fused numba kernel: one compiled interpreter of :mod:`dynopt.program` ops for all schemes.

Loop order (chains are independent, so they are the parallel and the vector dimension):

    prange over blocks of LANES chains
        load the block into structure-of-arrays buffers Q[d, l], P[d, l], X[e, l]
        for each step
            every few steps: fill the noise buffer for the coming steps (Philox, vectorized)
            for each op of the program: one vectorized loop over lanes
            check that Q, P are finite and X is not NaN (else record the step, stop the block)
            every ``record_every`` steps: write q, p, extras, U to the output arrays
        store the block back

The op interpreter dispatches on the op code once per op per step per block, so its cost is
amortized over ``LANES`` chains; a new splitting string is just a new op list, never new code.
The kernel has an explicit signature (user potentials enter as first-class function pointers),
so it compiles once and is cached on disk.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import types

from ...program import NHC_STIFF, OpCode, noise_counts
from . import lane_ops
from .cache import CACHE
from .energy_ops import (
    bbi_shell_block,
    ecd_drift_block,
    ecd_shell_block,
    linear_friction_block,
    rotate_block,
    scaled_drift_block,
    scaled_kick_block,
)
from .philox import fill_lanes
from .potentials import GRAD_FN, VALUE_FN, grad_block, value_lane
from .vecmath import exp as vexp

__all__ = ["LANES", "potential_values", "run_block_kernel"]

#: Chains per block (the vector width of the op loops).
LANES = 64
#: Target number of normals per lane generated per fill of the noise buffer.
_NOISE_CHUNK = 64

_DRIFT = int(OpCode.DRIFT)
_KICK = int(OpCode.KICK)
_OU = int(OpCode.OU)
_GRAD_STEP = int(OpCode.GRAD_STEP)
_WIENER = int(OpCode.WIENER)
_LM_NOISE = int(OpCode.LM_NOISE)
_FRICTION = int(OpCode.FRICTION)
_ADD_NOISE = int(OpCode.ADD_NOISE)
_THERMOSTAT = int(OpCode.THERMOSTAT)
_OU_XI = int(OpCode.OU_XI)
_NHC = int(OpCode.NHC)
_LIN_FRIC = int(OpCode.LIN_FRIC)
_SC_KICK = int(OpCode.SC_KICK)
_SC_DRIFT = int(OpCode.SC_DRIFT)
_BBI_SHELL = int(OpCode.BBI_SHELL)
_ECD_SHELL = int(OpCode.ECD_SHELL)
_ECD_DRIFT = int(OpCode.ECD_DRIFT)
_ROTATE = int(OpCode.ROTATE)
#: Noise vectors per op code, from the op table (:data:`dynopt.program.OPS`).
_NORMALS = noise_counts()

_f1 = types.float64[::1]
_f2 = types.float64[:, ::1]
_f3 = types.float64[:, :, ::1]
_i1 = types.int64[::1]
_i2 = types.int64[:, ::1]

_SIGNATURE = types.void(
    _f2, _f2, _f2,  # q, p, x
    _f1, _f1,  # minv, sqrtm
    _i1, _i1, _f1, _i1, _i1,  # codes, fstart, fpar, istart, ipar
    types.int64, _f1, VALUE_FN, GRAD_FN,  # potential kind, params, user functions
    types.uint64, types.uint64, types.int64,  # key0, key1, noise kind
    types.int64, types.int64, types.int64, types.int64,  # step0, n_steps, record_every, rec_start
    _f3, _f3, _f3, _f2,  # rec_q, rec_p, rec_x, rec_u
    _i2,  # status (block, [step, chain])
)


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _nhc_velocity(X, xo, j, m, ts, K2, q1, kT, n_dof, fpar, f, nl):  # type: ignore[no-untyped-def]
    """Half-update (duration ts/2) of chain velocity v_j on all lanes: scale, kick, scale."""
    q_j = q1 if j == 0 else fpar[f + 3 + (j - 1)]
    q_prev = q1 if j == 1 else (fpar[f + 3 + (j - 2)] if j > 1 else 0.0)
    for lane in range(nl):
        if j == 0:
            g = (K2[lane] - n_dof * kT) / q_j
        else:
            g = (q_prev * X[xo + j - 1, lane] ** 2 - kT) / q_j
        if j < m - 1:
            e = vexp(-0.25 * ts * X[xo + j + 1, lane])
            X[xo + j, lane] = (X[xo + j, lane] * e + 0.5 * ts * g) * e
        else:
            X[xo + j, lane] += 0.5 * ts * g


@nb.njit(cache=CACHE, error_model="numpy")
def _nhc_sweep(X, f, i0, fpar, ipar, nl, n_dof, K2, S, W, forward):  # type: ignore[no-untyped-def]
    """One propagation of the chain for time t on all lanes: the op's Suzuki–Yoshida substeps,
    or (``forward``) as many forward substeps of weight 1/k. Accumulates the momentum scale in
    ``S`` and, in ``W``, max |ts·v_j| over the backward (ts < 0) substeps (NaN-propagating)."""
    t = fpar[f]
    kT = fpar[f + 1]
    q1 = fpar[f + 2] * n_dof
    m = ipar[i0]
    n_sub = ipar[i0 + 1]
    n_sy = ipar[i0 + 2]
    xo = ipar[i0 + 3]
    eo = ipar[i0 + 4]
    wbase = f + 3 + (m - 1)
    n_w = 1 if forward else n_sy
    n_s = n_sub * n_sy if forward else n_sub
    for lane in range(nl):
        S[lane] = 1.0
        W[lane] = 0.0
    for a in range(n_w):
        w = 1.0 if forward else fpar[wbase + a]
        for _ in range(n_s):
            ts = w * t / n_s
            for j in range(m - 1, -1, -1):  # top-down half update of the chain velocities
                _nhc_velocity(X, xo, j, m, ts, K2, q1, kT, n_dof, fpar, f, nl)
            for lane in range(nl):  # momentum scaling
                s = vexp(-ts * X[xo, lane])
                S[lane] *= s
                K2[lane] *= s * s
            for j in range(m):  # chain positions
                for lane in range(nl):
                    X[eo + j, lane] += ts * X[xo + j, lane]
            for j in range(m):  # bottom-up half update
                _nhc_velocity(X, xo, j, m, ts, K2, q1, kT, n_dof, fpar, f, nl)
            if ts < 0.0:
                for j in range(m):
                    for lane in range(nl):
                        v = -ts * abs(X[xo + j, lane])
                        if W[lane] == W[lane] and not v <= W[lane]:
                            W[lane] = v


@nb.njit(cache=CACHE, error_model="numpy")
def _nhc_block(P, X, minv, f, i0, fpar, ipar, nl, n_dof, K2, S):  # type: ignore[no-untyped-def]
    """Nosé–Hoover-chain propagation of a block (see the NHC entry in dynopt.program).

    ``K2`` and ``S`` are per-lane scratch arrays (pᵀM⁻¹p and the accumulated momentum scale);
    every loop runs over lanes innermost so that it vectorizes. Lanes whose backward
    Suzuki–Yoshida substep was stiff (|ts·v_j| > NHC_STIFF, or a non-finite scale) are redone
    with forward substeps, exactly as :func:`dynopt.backends.torch.ops.nhc_` does.
    """
    D = P.shape[0]
    m = ipar[i0]
    xo = ipar[i0 + 3]
    eo = ipar[i0 + 4]
    for lane in range(nl):
        K2[lane] = 0.0
    for d in range(D):
        for lane in range(nl):
            K2[lane] += P[d, lane] * P[d, lane] * minv[d]
    save = np.empty((2 * m + 1, nl))
    for lane in range(nl):
        save[2 * m, lane] = K2[lane]
    for j in range(m):
        for lane in range(nl):
            save[j, lane] = X[xo + j, lane]
            save[m + j, lane] = X[eo + j, lane]
    W = np.empty(nl)
    _nhc_sweep(X, f, i0, fpar, ipar, nl, n_dof, K2, S, W, False)
    stiff = False
    for lane in range(nl):
        if not (W[lane] <= NHC_STIFF and np.isfinite(S[lane])):
            stiff = True
    if stiff:
        ok = np.empty(nl, dtype=np.bool_)
        keep = np.empty((2 * m + 1, nl))
        for lane in range(nl):
            ok[lane] = W[lane] <= NHC_STIFF and np.isfinite(S[lane])
            keep[2 * m, lane] = S[lane]
            K2[lane] = save[2 * m, lane]
        for j in range(m):
            for lane in range(nl):
                keep[j, lane] = X[xo + j, lane]
                keep[m + j, lane] = X[eo + j, lane]
                X[xo + j, lane] = save[j, lane]
                X[eo + j, lane] = save[m + j, lane]
        _nhc_sweep(X, f, i0, fpar, ipar, nl, n_dof, K2, S, W, True)
        for lane in range(nl):
            if ok[lane]:
                S[lane] = keep[2 * m, lane]
                for j in range(m):
                    X[xo + j, lane] = keep[j, lane]
                    X[eo + j, lane] = keep[m + j, lane]
    for d in range(D):
        for lane in range(nl):
            P[d, lane] *= S[lane]


@nb.njit(_SIGNATURE, parallel=True, cache=CACHE, error_model="numpy")
def run_block_kernel(  # type: ignore[no-untyped-def]
    q, p, x, minv, sqrtm, codes, fstart, fpar, istart, ipar, pot_kind, pot_par, value_fn,
    grad_fn, key0, key1, noise_kind, step0, n_steps, record_every, rec_start, rec_q, rec_p, rec_x,
    rec_u, status,
):
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
    if status.shape[0] < (C + LANES - 1) // LANES or status.shape[1] < 2:
        raise ValueError("run_block_kernel: status needs (n_blocks, 2) entries")
    if n_steps // record_every > 0:
        last = rec_start + n_steps // record_every
        if (rec_q.shape[0] != C or rec_q.shape[1] < last or rec_q.shape[2] != D
                or rec_p.shape[0] != C or rec_p.shape[1] < last or rec_p.shape[2] != Dp
                or rec_x.shape[0] != C or rec_x.shape[1] < last or rec_x.shape[2] != E
                or rec_u.shape[0] != C or rec_u.shape[1] < last):
            raise ValueError("run_block_kernel: record arrays too small for this run")
    n_noise_ops = 0
    for k in range(n_ops):
        c = codes[k]
        if Dp == 0 and c != _GRAD_STEP and c != _WIENER and c != _LM_NOISE:
            raise ValueError("run_block_kernel: a momentum op on a state without momenta")
        n_noise_ops += _NORMALS[c]
    S = n_noise_ops * D  # normals per lane per step
    K = max(1, _NOISE_CHUNK // max(S, 1))  # steps per noise fill
    z_rows = 4 * ((K * S + 3) // 4 + 1) if S > 0 else 4
    n_blocks = (C + LANES - 1) // LANES
    n_dof = np.float64(D)
    for b in nb.prange(n_blocks):
        c0 = b * LANES
        nl = min(LANES, C - c0)
        Q = np.empty((D, LANES))
        P = np.empty((max(Dp, 1), LANES))
        X = np.empty((max(E, 1), LANES))
        G = np.zeros((D, LANES))
        Z = np.empty((z_rows, LANES))
        Ubits = np.empty((4, LANES), dtype=np.uint64)
        tmp = np.empty(LANES)
        tmp2 = np.empty(LANES)
        tq = np.empty(D)
        tg = np.empty(D)
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
            if S > 0 and n % K == 0:
                steps_here = min(K, n_steps - n)
                first = gs * S
                call_first = first // 4
                n_calls = (first + steps_here * S + 3) // 4 - call_first
                fill_lanes(Z, Ubits, c0, nl, call_first, n_calls, 0, key0, key1, noise_kind)
                z_offset = first - 4 * call_first
            zb = z_offset + (n % K) * S
            for k in range(n_ops):
                code = codes[k]
                f = fstart[k]
                i0 = istart[k]
                if code == _DRIFT:
                    lane_ops.drift(Q, P, minv, fpar[f], nl)
                    grad_ok = False
                elif code == _KICK:
                    grad_ok = lane_ops.gradient(grad_ok, pot_kind, pot_par, Q, G, nl, grad_fn, tq,
                                                tg)
                    lane_ops.kick(P, G, fpar[f], nl)
                elif code == _OU:
                    lane_ops.ou(P, Z, zb, fpar[f], fpar[f + 1], sqrtm, nl)
                    zb += D
                elif code == _GRAD_STEP:
                    lane_ops.gradient(grad_ok, pot_kind, pot_par, Q, G, nl, grad_fn, tq, tg)
                    lane_ops.grad_step(Q, G, fpar[f], nl)
                    grad_ok = False
                elif code == _WIENER:
                    lane_ops.wiener(Q, Z, zb, fpar[f], nl)
                    zb += D
                    grad_ok = False
                elif code == _LM_NOISE:
                    lane_ops.lm_noise(Q, X, Z, zb, ipar[i0], fpar[f], nl)
                    zb += D
                    grad_ok = False
                elif code == _FRICTION:
                    lane_ops.friction(P, X, tmp, fpar[f], ipar[i0], ipar[i0 + 1], nl)
                elif code == _ADD_NOISE:
                    lane_ops.add_noise(P, Z, zb, fpar[f], sqrtm, nl)
                    zb += D
                elif code == _THERMOSTAT:
                    norm = n_dof if fpar[f + 2] > 0.5 else 1.0
                    lane_ops.thermostat(P, X, tmp, minv, fpar[f], fpar[f + 1], norm, n_dof,
                                        ipar[i0], nl)
                elif code == _OU_XI:
                    lane_ops.ou_xi(P, X, Z, zb, tmp, tmp2, sqrtm, fpar[f], fpar[f + 1], ipar[i0],
                                   nl)
                    zb += D
                elif code == _NHC:
                    _nhc_block(P, X, minv, f, i0, fpar, ipar, nl, n_dof, tmp, tmp2)
                elif code == _LIN_FRIC:
                    linear_friction_block(P, X, nl, fpar[f], ipar[i0])
                elif code == _SC_KICK:
                    grad_ok = lane_ops.gradient(grad_ok, pot_kind, pot_par, Q, G, nl, grad_fn, tq,
                                                tg)
                    scaled_kick_block(P, G, X, nl, fpar[f], ipar[i0])
                elif code == _SC_DRIFT:
                    scaled_drift_block(Q, P, X, minv, nl, fpar[f], ipar[i0])
                    grad_ok = False
                elif code == _BBI_SHELL:
                    grad_ok = lane_ops.gradient(grad_ok, pot_kind, pot_par, Q, G, nl, grad_fn, tq,
                                                tg)
                    bbi_shell_block(Q, P, X, G, nl, c0, gs, fpar, f, ipar[i0], pot_kind,
                                    pot_par, value_fn, tq, key0, key1)
                elif code == _ECD_SHELL:
                    grad_ok = lane_ops.gradient(grad_ok, pot_kind, pot_par, Q, G, nl, grad_fn, tq,
                                                tg)
                    ecd_shell_block(Q, P, X, G, nl, fpar, f, ipar[i0], pot_kind, pot_par,
                                    value_fn, tq)
                elif code == _ECD_DRIFT:
                    ecd_drift_block(Q, P, X, nl, fpar[f], fpar[f + 1], ipar[i0], tmp)
                    grad_ok = False
                elif code == _ROTATE:
                    rotate_block(P, X, Z, zb, nl, fpar[f], ipar[i0])
                    zb += D
            # divergence check, before recording: a NaN/inf in q or p or a NaN in an extra
            # (extras may hold +inf as a "not yet" marker) stops this block at this step.
            # v * 0.0 is 0 for finite v and NaN otherwise; the lane loops vectorize.
            for lane in range(nl):
                tmp[lane] = 0.0
            for d in range(D):
                for lane in range(nl):
                    tmp[lane] += Q[d, lane] * 0.0
            for d in range(Dp):
                for lane in range(nl):
                    tmp[lane] += P[d, lane] * 0.0
            for e in range(E):
                for lane in range(nl):
                    if X[e, lane] != X[e, lane]:
                        tmp[lane] = math.nan
            bad = -1
            for lane in range(nl):
                if tmp[lane] != 0.0:
                    bad = lane
                    break
            if bad >= 0:
                status[b, 0] = gs + 1
                status[b, 1] = c0 + bad
                break
            if (n + 1) % record_every == 0:
                r = rec_start + (n + 1) // record_every - 1
                for lane in range(nl):
                    cc = c0 + lane
                    for d in range(D):
                        rec_q[cc, r, d] = Q[d, lane]
                    for d in range(Dp):
                        rec_p[cc, r, d] = P[d, lane]
                    for e in range(E):
                        rec_x[cc, r, e] = X[e, lane]
                    rec_u[cc, r] = value_lane(pot_kind, pot_par, Q, lane, value_fn, tq)
        for lane in range(nl):
            for d in range(D):
                q[c0 + lane, d] = Q[d, lane]
            for d in range(Dp):
                p[c0 + lane, d] = P[d, lane]
            for e in range(E):
                x[c0 + lane, e] = X[e, lane]


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
        out[c] = value_lane(pot_kind, pot_par, Q, 0, value_fn, tq)
    return out


@nb.njit(_f2(_f2, types.int64, _f1, GRAD_FN), cache=CACHE, error_model="numpy")
def potential_grads(q, pot_kind, pot_par, grad_fn):  # type: ignore[no-untyped-def]
    """∇U for each row of ``q`` (C, D), with the kernel's own potential code."""
    C, D = q.shape
    out = np.empty((C, D))
    Q = np.empty((D, LANES))
    G = np.empty((D, LANES))
    tq = np.empty(D)
    tg = np.empty(D)
    for c0 in range(0, C, LANES):
        nl = min(LANES, C - c0)
        for lane in range(nl):
            for d in range(D):
                Q[d, lane] = q[c0 + lane, d]
        grad_block(pot_kind, pot_par, Q, G, nl, grad_fn, tq, tg)
        for lane in range(nl):
            for d in range(D):
                out[c0 + lane, d] = G[d, lane]
    return out
