r"""The elementwise ops of :mod:`dynopt.program` on a block of chains, one function each.

Each function updates the structure-of-arrays buffers of the interpreter in
:mod:`.kernel` (``Q[d, l]``, ``P[d, l]``, extras ``X[e, l]``, the gradient ``G[d, l]``, the
noise buffer ``Z[zb + d, l]``) for the first ``nl`` lanes, as one vectorizable loop over lanes
per coordinate. They are inlined into the interpreter (``inline="always"``), so splitting the
ops into functions costs nothing at run time; the ops with more state (Nosé–Hoover chains, the
energy-conserving shells) live in :mod:`.kernel` and :mod:`.energy_ops`.

| op | update | symbols |
|---|---|---|
| DRIFT | q ← q + t M⁻¹ p | ``t``, ``minv`` |
| KICK | p ← p − t ∇U(q) | ``t``, ``G`` |
| OU | p ← c p + s √M ξ | ``c``, ``s``, ``sqrtm`` |
| GRAD_STEP | q ← q − s ∇U(q) | ``s`` |
| WIENER | q ← q + s ξ | ``s`` |
| LM_NOISE | q ← q + s (ξ_prev + ξ); ξ_prev ← ξ | ``X[xo + d]`` holds ξ_prev |
| FRICTION | p ← e^{−tξ} p (η ← η + tξ) | ``X[xo]`` = ξ, ``X[eo]`` = η |
| ADD_NOISE | p ← p + s √M ξ | |
| THERMOSTAT | ξ ← ξ + a (pᵀM⁻¹p − b·N)/norm | ``a``, ``b_tau``, ``norm`` |
| OU_XI | p ← e^{−ξt} p + σ √((1 − e^{−2ξt})/(2ξ)) √M ξ | ``t``, ``sigma`` |
"""

from __future__ import annotations

import math

import numba as nb

from .cache import CACHE
from .potentials import grad_block
from .vecmath import exp as vexp

__all__ = ["add_noise", "drift", "friction", "grad_step", "gradient", "kick", "lm_noise", "ou",
           "ou_xi", "thermostat", "wiener"]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def gradient(grad_ok, pot_kind, pot_par, Q, G, nl, grad_fn, tq, tg):  # type: ignore[no-untyped-def]
    """G ← ∇U(Q) unless G already holds it (no op moved Q since it was computed); returns
    True (the new cache flag). The one place of the interpreter's gradient cache."""
    if not grad_ok:
        grad_block(pot_kind, pot_par, Q, G, nl, grad_fn, tq, tg)
    return True


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def drift(Q, P, minv, t, nl):  # type: ignore[no-untyped-def]
    for d in range(Q.shape[0]):
        a = t * minv[d]
        for lane in range(nl):
            Q[d, lane] += a * P[d, lane]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def kick(P, G, t, nl):  # type: ignore[no-untyped-def]
    for d in range(G.shape[0]):
        for lane in range(nl):
            P[d, lane] -= t * G[d, lane]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def ou(P, Z, zb, c, s, sqrtm, nl):  # type: ignore[no-untyped-def]
    for d in range(sqrtm.shape[0]):
        sd = s * sqrtm[d]
        for lane in range(nl):
            P[d, lane] = c * P[d, lane] + sd * Z[zb + d, lane]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def grad_step(Q, G, s, nl):  # type: ignore[no-untyped-def]
    for d in range(Q.shape[0]):
        for lane in range(nl):
            Q[d, lane] -= s * G[d, lane]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def wiener(Q, Z, zb, s, nl):  # type: ignore[no-untyped-def]
    for d in range(Q.shape[0]):
        for lane in range(nl):
            Q[d, lane] += s * Z[zb + d, lane]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def lm_noise(Q, X, Z, zb, xo, s, nl):  # type: ignore[no-untyped-def]
    for d in range(Q.shape[0]):
        for lane in range(nl):
            z = Z[zb + d, lane]
            Q[d, lane] += s * (X[xo + d, lane] + z)
            X[xo + d, lane] = z


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def friction(P, X, tmp, t, xo, eo, nl):  # type: ignore[no-untyped-def]
    for lane in range(nl):
        tmp[lane] = vexp(-t * X[xo, lane])
    for d in range(P.shape[0]):
        for lane in range(nl):
            P[d, lane] *= tmp[lane]
    if eo >= 0:
        for lane in range(nl):
            X[eo, lane] += t * X[xo, lane]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def add_noise(P, Z, zb, s, sqrtm, nl):  # type: ignore[no-untyped-def]
    for d in range(sqrtm.shape[0]):
        sd = s * sqrtm[d]
        for lane in range(nl):
            P[d, lane] += sd * Z[zb + d, lane]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def thermostat(P, X, tmp, minv, a, b_tau, norm, n_dof, xo, nl):  # type: ignore[no-untyped-def]
    for lane in range(nl):
        tmp[lane] = 0.0
    for d in range(minv.shape[0]):
        for lane in range(nl):
            tmp[lane] += P[d, lane] * P[d, lane] * minv[d]
    for lane in range(nl):
        X[xo, lane] += a * (tmp[lane] - b_tau * n_dof) / norm


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def ou_xi(P, X, Z, zb, tmp, tmp2, sqrtm, t, sigma, xo, nl):  # type: ignore[no-untyped-def]
    for lane in range(nl):
        xi = X[xo, lane]
        # (1 - e^{-2ξt}) / (2ξ), continuous at ξ = 0 (value t)
        u = 2.0 * xi * t
        var = t if abs(u) < 1e-12 else -math.expm1(-u) / (2.0 * xi)
        tmp[lane] = sigma * math.sqrt(var)
        tmp2[lane] = math.exp(-xi * t)
    for d in range(sqrtm.shape[0]):
        for lane in range(nl):
            P[d, lane] = tmp2[lane] * P[d, lane] + tmp[lane] * sqrtm[d] * Z[zb + d, lane]
