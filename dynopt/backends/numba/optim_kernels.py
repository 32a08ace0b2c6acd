"""Fused one-pass CPU kernels for the optimizers (float32 and float64, parallel over elements).

Each kernel reads θ, the momentum and the gradient once and writes θ and the momentum once: the
memory traffic of a single SGD-with-momentum pass (≈20 bytes per float32 parameter), where
``torch.optim.SGD``'s for-loop path makes three passes. The arrays are zero-copy numpy views of
the optimizer's CPU tensors. Scalars are cast to the arrays' dtype, so float32 runs in float32
arithmetic like torch; the BBI reduction accumulates |Π|² in float64.

These are the fused paths of :class:`dynopt.optim.HeavyBall` and :class:`dynopt.optim.BBI`; the
foreach and single-tensor paths compute the same maps with torch ops.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types

__all__ = ["bbi_kick_drift", "heavy_ball_step"]

_SIGS_HB = [types.void(a, a, a, s, s) for a, s in
            ((types.float32[::1], types.float32), (types.float64[::1], types.float64))]
_SIGS_BBI = [types.float64(a, a, a, s, s, s) for a, s in
             ((types.float32[::1], types.float32), (types.float64[::1], types.float64))]


@nb.njit(_SIGS_HB, parallel=True, cache=True, error_model="numpy", fastmath=False)
def heavy_ball_step(theta, mom, grad, c, h):  # type: ignore[no-untyped-def]
    """p ← c·p − h·g; θ ← θ + h·p (c = 1 − γh), in place."""
    for i in nb.prange(theta.shape[0]):
        m = c * mom[i] - h * grad[i]
        mom[i] = m
        theta[i] += h * m


@nb.njit(_SIGS_BBI, parallel=True, cache=True, error_model="numpy", fastmath=False)
def bbi_kick_drift(theta, mom, grad, r, a, d):  # type: ignore[no-untyped-def]
    """Π ← r·Π − a·g; θ ← θ + d·Π; returns |Π|² (float64) of the new Π."""
    acc = 0.0
    for i in nb.prange(theta.shape[0]):
        m = r * mom[i] - a * grad[i]
        mom[i] = m
        theta[i] += d * m
        mm = np.float64(m)
        acc += mm * mm
    return acc
