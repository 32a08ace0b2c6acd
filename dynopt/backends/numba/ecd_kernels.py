"""Fused CPU kernels of the :class:`dynopt.optim.ECDSep` step (float32 and float64).

ECDSep's map needs two passes over the parameters, because the drift coefficient
2Δt/(s + |p|²) depends on the global |p|² *after* the kick:

1. :func:`ecd_kick` — p ← r·p₀ − a·f with f = ∇ℓ + wd·θ and p₀ = p, or p₀ = −c·f on the first
   step (the start along −∇F̃); returns |p|² of the new p.
2. :func:`ecd_drift_rotate` — θ ← θ + d·p, then, with rotation noise, p ← p/|p| + ν·z (the
   direction before the final rescale); returns |p|² of what it wrote.

The rotation's last factor |p_old|/|u| is one multiply per element, left to ``torch._foreach_mul_``.
The normals ``z`` come from the optimizer's torch generator, so every path draws the same numbers.
Reductions accumulate in float64 over fixed blocks (:data:`~.kick_drift_kernels.REDUCE_BLOCK`), so a
result does not depend on the number of threads. The single-tensor and foreach paths of the
optimizer compute the same map with torch ops.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numba import types

from .cache import CACHE
from .kick_drift_kernels import REDUCE_BLOCK, _check, use_parallel

__all__ = ["ecd_drift_rotate", "ecd_kick"]

_SIGS_KICK = [types.float64(a, a, a, s, s, s, s) for a, s in
              ((types.float32[::1], types.float32), (types.float64[::1], types.float64))]
_SIGS_DRIFT = [types.float64(a, a, a, s, s, s, types.boolean) for a, s in
               ((types.float32[::1], types.float32), (types.float64[::1], types.float64))]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _kick_element(i, theta, mom, grad, c, r, a, wd):  # type: ignore[no-untyped-def]
    f = grad[i] + wd * theta[i] if wd != 0 else grad[i]
    m0 = -c * f if c != 0 else mom[i]
    m = r * m0 - a * f
    mom[i] = m
    mm = np.float64(m)
    return mm * mm


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _drift_element(i, theta, mom, z, d, pn, nu, rotate):  # type: ignore[no-untyped-def]
    m = mom[i]
    theta[i] += d * m
    if rotate:
        m = m / pn + nu * z[i]
        mom[i] = m
    mm = np.float64(m)
    return mm * mm


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _kick_block(b, theta, mom, grad, c, r, a, wd, partial):  # type: ignore[no-untyped-def]
    lo = b * REDUCE_BLOCK
    hi = min(lo + REDUCE_BLOCK, theta.shape[0])
    s0 = s1 = s2 = s3 = 0.0
    i = lo
    while i + 4 <= hi:
        s0 += _kick_element(i, theta, mom, grad, c, r, a, wd)
        s1 += _kick_element(i + 1, theta, mom, grad, c, r, a, wd)
        s2 += _kick_element(i + 2, theta, mom, grad, c, r, a, wd)
        s3 += _kick_element(i + 3, theta, mom, grad, c, r, a, wd)
        i += 4
    while i < hi:
        s0 += _kick_element(i, theta, mom, grad, c, r, a, wd)
        i += 1
    partial[b] = (s0 + s1) + (s2 + s3)


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _drift_block(b, theta, mom, z, d, pn, nu, rotate, partial):  # type: ignore[no-untyped-def]
    lo = b * REDUCE_BLOCK
    hi = min(lo + REDUCE_BLOCK, theta.shape[0])
    s0 = s1 = s2 = s3 = 0.0
    i = lo
    while i + 4 <= hi:
        s0 += _drift_element(i, theta, mom, z, d, pn, nu, rotate)
        s1 += _drift_element(i + 1, theta, mom, z, d, pn, nu, rotate)
        s2 += _drift_element(i + 2, theta, mom, z, d, pn, nu, rotate)
        s3 += _drift_element(i + 3, theta, mom, z, d, pn, nu, rotate)
        i += 4
    while i < hi:
        s0 += _drift_element(i, theta, mom, z, d, pn, nu, rotate)
        i += 1
    partial[b] = (s0 + s1) + (s2 + s3)


@nb.njit(cache=CACHE)
def _ordered_sum(partial):  # type: ignore[no-untyped-def]
    """Σ partial[b] in block order (the same with any thread count)."""
    acc = 0.0
    for b in range(partial.shape[0]):
        acc += partial[b]
    return acc


@nb.njit(_SIGS_KICK, parallel=True, cache=CACHE, error_model="numpy")
def _kick_parallel(theta, mom, grad, c, r, a, wd):  # type: ignore[no-untyped-def]
    partial = np.empty((theta.shape[0] + REDUCE_BLOCK - 1) // REDUCE_BLOCK)
    for b in nb.prange(partial.shape[0]):
        _kick_block(b, theta, mom, grad, c, r, a, wd, partial)
    return _ordered_sum(partial)


@nb.njit(_SIGS_KICK, cache=CACHE, error_model="numpy")
def _kick_serial(theta, mom, grad, c, r, a, wd):  # type: ignore[no-untyped-def]
    partial = np.empty((theta.shape[0] + REDUCE_BLOCK - 1) // REDUCE_BLOCK)
    for b in range(partial.shape[0]):
        _kick_block(b, theta, mom, grad, c, r, a, wd, partial)
    return _ordered_sum(partial)


@nb.njit(_SIGS_DRIFT, parallel=True, cache=CACHE, error_model="numpy")
def _drift_parallel(theta, mom, z, d, pn, nu, rotate):  # type: ignore[no-untyped-def]
    partial = np.empty((theta.shape[0] + REDUCE_BLOCK - 1) // REDUCE_BLOCK)
    for b in nb.prange(partial.shape[0]):
        _drift_block(b, theta, mom, z, d, pn, nu, rotate, partial)
    return _ordered_sum(partial)


@nb.njit(_SIGS_DRIFT, cache=CACHE, error_model="numpy")
def _drift_serial(theta, mom, z, d, pn, nu, rotate):  # type: ignore[no-untyped-def]
    partial = np.empty((theta.shape[0] + REDUCE_BLOCK - 1) // REDUCE_BLOCK)
    for b in range(partial.shape[0]):
        _drift_block(b, theta, mom, z, d, pn, nu, rotate, partial)
    return _ordered_sum(partial)


def ecd_kick(theta: np.ndarray, mom: np.ndarray, grad: np.ndarray, c: Any, r: Any, a: Any,
             wd: Any) -> float:
    """p ← r·p₀ − a·(∇ℓ + wd·θ), p₀ = −c·(∇ℓ + wd·θ) if c ≠ 0 else p; returns the new |p|²."""
    _check(theta, mom, grad)
    kernel = _kick_parallel if use_parallel(theta.shape[0]) else _kick_serial
    return float(kernel(theta, mom, grad, c, r, a, wd))


def ecd_drift_rotate(theta: np.ndarray, mom: np.ndarray, z: np.ndarray | None, d: Any, pn: Any,
                     nu: Any) -> float:
    """θ ← θ + d·p; with ``z``, p ← p/pn + ν·z. Returns |p|² of the momentum it leaves."""
    rotate = z is not None
    zz = z if z is not None else mom  # not read without rotation
    _check(theta, mom, zz)
    kernel = _drift_parallel if use_parallel(theta.shape[0]) else _drift_serial
    return float(kernel(theta, mom, zz, d, pn, nu, rotate))
