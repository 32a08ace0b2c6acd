"""The energy-conserving-descent and port-Hamiltonian ops of the fused kernel, on a block of lanes.

Each function implements one op code of :mod:`dynopt.program` (see its semantics table) for the
``n_lanes`` chains of a block held in structure-of-arrays buffers ``Q[d, l]``, ``P[d, l]``,
``X[e, l]``, ``G[d, l]`` (the gradient at Q, filled by the kernel before the shell ops) and
``Z[row, l]`` (the step's normals). The scalar logic per lane (bounce decisions, energy shells)
mirrors :mod:`dynopt.backends.torch.energy_ops` line by line; the tests compare the two backends.

Bounce directions come from the run's Philox generator, stream :data:`STREAM_BOUNCE`, counter
``(chain, stream, step·⌈d/4⌉ + k)``: a pure function of (seed, chain, step), like all noise here.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .cache import CACHE
from .philox import _box_muller, philox4x32
from .potentials import value_lane

__all__ = ["STREAM_BOUNCE", "bbi_shell_block", "ecd_drift_block", "ecd_shell_block",
           "linear_friction_block", "rotate_block", "scaled_drift_block", "scaled_kick_block"]

#: Philox stream of the Born–Infeld bounce directions (0: dynamics noise, 1: momenta, 2: extras).
STREAM_BOUNCE = 3
_TWO_M32 = 2.0**-32


@nb.njit(cache=CACHE, error_model="numpy")
def linear_friction_block(P, X, nl, t, k):  # type: ignore[no-untyped-def]
    """LIN_FRIC: p ← (1 − t x[k]) p."""
    D = P.shape[0]
    for d in range(D):
        for lane in range(nl):
            P[d, lane] *= 1.0 - t * X[k, lane]


@nb.njit(cache=CACHE, error_model="numpy")
def scaled_kick_block(P, G, X, nl, t, k):  # type: ignore[no-untyped-def]
    """SC_KICK: p ← p − t x[k] ∇U."""
    D = P.shape[0]
    for d in range(D):
        for lane in range(nl):
            P[d, lane] -= t * X[k, lane] * G[d, lane]


@nb.njit(cache=CACHE, error_model="numpy")
def scaled_drift_block(Q, P, X, minv, nl, t, k):  # type: ignore[no-untyped-def]
    """SC_DRIFT: q ← q + t x[k] M⁻¹p."""
    D = Q.shape[0]
    for d in range(D):
        a = t * minv[d]
        for lane in range(nl):
            Q[d, lane] += a * X[k, lane] * P[d, lane]


@nb.njit(cache=CACHE, error_model="numpy")
def _bounce_lane(P, lane, chain, step, ps2, cube, key0, key1, u):  # type: ignore[no-untyped-def]
    """Give lane ``lane`` of P a random direction with squared norm ``ps2``."""
    D = P.shape[0]
    n_calls = (D + 3) // 4
    s = np.uint64(STREAM_BOUNCE)
    for c in range(n_calls):
        call = np.uint64(step * n_calls + c)
        a, b, cc, dd = philox4x32(np.uint64(chain), s, call & np.uint64(0xFFFFFFFF),
                                  call >> np.uint64(32), key0, key1)
        if cube > 0.5:
            v0 = np.float64(a) * _TWO_M32 - 0.5
            v1 = np.float64(b) * _TWO_M32 - 0.5
            v2 = np.float64(cc) * _TWO_M32 - 0.5
            v3 = np.float64(dd) * _TWO_M32 - 0.5
        else:
            v0, v1 = _box_muller(a, b)
            v2, v3 = _box_muller(cc, dd)
        u[4 * c] = v0
        u[4 * c + 1] = v1
        u[4 * c + 2] = v2
        u[4 * c + 3] = v3
    u2 = 0.0
    for d in range(D):
        u2 += u[d] * u[d]
    scale = math.sqrt(ps2 / u2) if u2 > 0.0 else 0.0
    for d in range(D):
        P[d, lane] = u[d] * scale


@nb.njit(cache=CACHE, error_model="numpy")
def bbi_shell_block(Q, P, X, G, nl, c0, step, fpar, f, o, pot_kind, pot_par, value_fn, tq,
                    key0, key1):  # type: ignore[no-untyped-def]
    """BBI_SHELL on every lane of the block (extras from offset ``o``, see BBI_EXTRAS)."""
    D = Q.shape[0]
    v0 = fpar[f]
    delta_e = fpar[f + 1]
    t0 = fpar[f + 2]
    n_b = fpar[f + 3]
    t1 = fpar[f + 4]
    eps1 = fpar[f + 5]
    eps2 = fpar[f + 6]
    project = fpar[f + 7] > 0.5
    cube = fpar[f + 8]
    u = np.empty(4 * ((D + 3) // 4))
    for lane in range(nl):
        v = value_lane(pot_kind, pot_par, Q, lane, value_fn, tq) - v0
        X[o + 1, lane] = v
        if not v > eps2:
            X[o + 2, lane] = 0.0
            X[o + 3, lane] = 0.0
            continue
        ps2 = 0.0
        for d in range(D):
            ps2 += P[d, lane] * P[d, lane]
        if X[o + 4, lane] == 0.0:  # first active step: fix the energy, start along −∇v
            E0 = v + delta_e
            X[o, lane] = E0
            X[o + 4, lane] = 1.0
            X[o + 8, lane] = np.inf
            if ps2 == 0.0:
                g2 = 0.0
                for d in range(D):
                    g2 += G[d, lane] * G[d, lane]
                target = E0 * E0 / v - v
                if g2 > 0.0 and target > 0.0:
                    a = math.sqrt(target / g2)
                    for d in range(D):
                        P[d, lane] = -a * G[d, lane]
                    ps2 = target
        E0 = X[o, lane]
        counter0 = X[o + 5, lane]
        counter = X[o + 6, lane]
        fixed = X[o + 7, lane]
        if (counter0 == t0 and fixed < n_b) or counter == t1:
            _bounce_lane(P, lane, c0 + lane, step, ps2, cube, key0, key1, u)
            if counter0 == t0:
                fixed += 1.0
                X[o + 7, lane] = fixed
                X[o + 5, lane] = 0.0 if fixed < n_b else counter0 + 1.0
            X[o + 6, lane] = 0.0
            X[o + 9, lane] += 1.0
            X[o + 2, lane] = 0.0
            X[o + 3, lane] = 0.0
            continue
        if project:
            correct = v * ((E0 / v) ** 2 - 1.0)
            if not (abs(ps2 - correct) < eps1 or correct < 0.0 or ps2 == 0.0):
                r = math.sqrt(correct / ps2)
                for d in range(D):
                    P[d, lane] *= r
        X[o + 2, lane] = 0.5 * (v / E0 + E0 / v)
        X[o + 3, lane] = v / E0
        X[o + 5, lane] = counter0 + 1.0
        if v < X[o + 8, lane]:
            X[o + 8, lane] = v
            X[o + 6, lane] = 0.0
        else:
            X[o + 6, lane] = counter + 1.0


@nb.njit(cache=CACHE, error_model="numpy")
def ecd_shell_block(Q, P, X, G, nl, fpar, f, o, pot_kind, pot_par, value_fn, tq):  # type: ignore[no-untyped-def]
    """ECD_SHELL on every lane of the block (extras from offset ``o``, see ECD_EXTRAS)."""
    D = Q.shape[0]
    f0 = fpar[f]
    eta = fpar[f + 1]
    s = fpar[f + 2]
    delta_e = fpar[f + 3]
    eps1 = fpar[f + 4]
    eps2 = fpar[f + 5]
    project = fpar[f + 6] > 0.5
    for lane in range(nl):
        fd = value_lane(pot_kind, pot_par, Q, lane, value_fn, tq) - f0
        X[o + 1, lane] = fd
        v = fd**eta if fd > 0.0 else 0.0
        if not (fd > 0.0 and v > eps2):
            X[o + 2, lane] = 0.0
            X[o + 3, lane] = 0.0
            continue
        ps2 = 0.0
        for d in range(D):
            ps2 += P[d, lane] * P[d, lane]
        if X[o + 4, lane] == 0.0:
            X[o, lane] = v * (s + delta_e)
            X[o + 4, lane] = 1.0
            if ps2 == 0.0:
                g2 = 0.0
                for d in range(D):
                    g2 += G[d, lane] * G[d, lane]
                if g2 > 0.0 and delta_e > 0.0:
                    a = math.sqrt(delta_e / g2)
                    for d in range(D):
                        P[d, lane] = -a * G[d, lane]
                    ps2 = delta_e
        if project:
            target = X[o, lane] / v - s
            if not (abs(target - ps2) < eps1 or target < 0.0 or ps2 == 0.0):
                c = math.sqrt(target / ps2)
                for d in range(D):
                    P[d, lane] *= c
        X[o + 2, lane] = eta / fd
        X[o + 3, lane] = 1.0


@nb.njit(cache=CACHE, error_model="numpy")
def ecd_drift_block(Q, P, X, nl, t, s, k, tmp):  # type: ignore[no-untyped-def]
    """ECD_DRIFT: q ← q + x[k] · 2t p / (s + |p|²); nothing where s + |p|² = 0 (s = 0, p = 0:
    the 0/0 was NaN)."""
    D = Q.shape[0]
    for lane in range(nl):
        tmp[lane] = 0.0
    for d in range(D):
        for lane in range(nl):
            tmp[lane] += P[d, lane] * P[d, lane]
    for lane in range(nl):
        den = s + tmp[lane]
        tmp[lane] = X[k, lane] * 2.0 * t / den if den > 0.0 else 0.0
    for d in range(D):
        for lane in range(nl):
            Q[d, lane] += tmp[lane] * P[d, lane]


@nb.njit(cache=CACHE, error_model="numpy")
def rotate_block(P, X, Z, zb, nl, nu, k):  # type: ignore[no-untyped-def]
    """ROTATE: p ← |p| u/|u|, u = p/|p| + ν R, where x[k] ≠ 0 and p ≠ 0 (ν = 0: no-op)."""
    D = P.shape[0]
    if nu == 0.0:
        return
    for lane in range(nl):
        if X[k, lane] == 0.0:
            continue
        p2 = 0.0
        for d in range(D):
            p2 += P[d, lane] * P[d, lane]
        if p2 == 0.0:
            continue
        pn = math.sqrt(p2)
        u2 = 0.0
        for d in range(D):
            v = P[d, lane] / pn + nu * Z[zb + d, lane]
            P[d, lane] = v
            u2 += v * v
        scale = pn / math.sqrt(u2)
        for d in range(D):
            P[d, lane] *= scale
