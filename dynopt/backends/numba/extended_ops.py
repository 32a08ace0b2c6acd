r"""The ops the kernel does not inline: adaptive Langevin's, Nosé–Hoover chains, braking, ECD.

:func:`run_extended_op` runs one such op on a block of lanes; :mod:`.kernel` calls it through a
function pointer (:data:`.kernel.EXTENDED_FN`), so this module is compiled the first time a
program uses one of :data:`.kernel.EXTENDED_CODES` and never for Hamiltonian, Langevin or
overdamped schemes. Measured on an empty cache (2-core machine): the kernel with every op inline
compiled in 29.0 s, with only the Hamiltonian/Langevin/overdamped ops inline in 12.0 s (the
import of :mod:`.kernel`); this module compiles in 9.2 s. The call costs one indirect jump per
op, step and block of up to :data:`.kernel.MAX_LANES` chains: an adaptive-Langevin ensemble of
10,000 chains runs 5 % faster than with its ops inline in blocks of 64 (wider blocks), one of 100
chains 11 % slower; a Nosé–Hoover-chain ensemble about 6 % slower than inline. The kernel passes
the arrays as views without a memory info (``kernel._borrowed``): numba would otherwise count
references to the block's eight buffers on every call (16 atomic writes and calls), which made
a 16-chain Nosé–Hoover run 25–40 % slower; the call itself (passing the arguments) costs about
55 ns (docs/benchmarks.md, "The extended-op call").

Semantics of each op: the table in :mod:`dynopt.program`; the kernel has already refreshed the
cached gradient ``G`` for ops that read it, and drops it after ops that move q.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ...program import NHC_STIFF, OpCode
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
from .kernel import EXTENDED_SIG
from .vecmath import exp as vexp

__all__ = ["run_extended_op"]

_FRICTION = int(OpCode.FRICTION)
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


@nb.njit(EXTENDED_SIG, cache=CACHE, error_model="numpy")
def run_extended_op(code, Q, P, X, G, Z, zb, nl, c0, step, fpar, f, ipar, i0, minv, sqrtm,  # type: ignore[no-untyped-def]
                    n_dof, pot_kind, pot_par, value_fn, tq, tmp, tmp2, key0, key1):
    """Op ``code`` (constants at ``fpar[f:]``, ``ipar[i0:]``) on lanes ``0 .. nl-1`` of a block
    whose first chain is ``c0``, at step ``step``; ``Z[zb:]`` holds the op's normals."""
    if code == _FRICTION:
        lane_ops.friction(P, X, tmp, fpar[f], ipar[i0], ipar[i0 + 1], nl)
    elif code == _THERMOSTAT:
        norm = n_dof if fpar[f + 2] > 0.5 else 1.0
        lane_ops.thermostat(P, X, tmp, minv, fpar[f], fpar[f + 1], norm, n_dof, ipar[i0], nl)
    elif code == _OU_XI:
        lane_ops.ou_xi(P, X, Z, zb, tmp, tmp2, sqrtm, fpar[f], fpar[f + 1], ipar[i0], nl)
    elif code == _NHC:
        _nhc_block(P, X, minv, f, i0, fpar, ipar, nl, n_dof, tmp, tmp2)
    elif code == _LIN_FRIC:
        linear_friction_block(P, X, nl, fpar[f], ipar[i0])
    elif code == _SC_KICK:
        scaled_kick_block(P, G, X, nl, fpar[f], ipar[i0])
    elif code == _SC_DRIFT:
        scaled_drift_block(Q, P, X, minv, nl, fpar[f], ipar[i0])
    elif code == _BBI_SHELL:
        bbi_shell_block(Q, P, X, G, nl, c0, step, fpar, f, ipar[i0], pot_kind, pot_par, value_fn,
                        tq, key0, key1)
    elif code == _ECD_SHELL:
        ecd_shell_block(Q, P, X, G, nl, fpar, f, ipar[i0], pot_kind, pot_par, value_fn, tq)
    elif code == _ECD_DRIFT:
        ecd_drift_block(Q, P, X, nl, fpar[f], fpar[f + 1], ipar[i0], tmp)
    elif code == _ROTATE:
        rotate_block(P, X, Z, zb, nl, fpar[f], ipar[i0])
    else:
        raise ValueError("run_extended_op: not an extended op code")
