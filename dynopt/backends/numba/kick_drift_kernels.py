"""Fused one-pass CPU kernels for the optimizers (float32 and float64).

Each kernel reads θ, the momentum and the gradient once and writes θ and the momentum once: the
memory traffic of a single SGD-with-momentum pass (≈20 bytes per float32 parameter), where
``torch.optim.SGD``'s for-loop path makes three passes. The arrays are zero-copy numpy views of
the optimizer's CPU tensors. Scalars are cast to the arrays' dtype, so float32 runs in float32
arithmetic like torch, with torch's rounding: the foreach path's ``mul_`` then
``add_(alpha=)`` is ``fma(g, −a, c·p)``, one rounding each (:func:`.intrinsics.fma`), so the
fused and foreach paths agree bit for bit; the BBI reduction accumulates |Π|² in float64.

Each update is written once (an inlined element function) and compiled twice: parallel over
elements for large tensors, serial for small ones (:func:`use_parallel`), because starting the
thread team costs more than updating a few thousand parameters (and much more on a loaded
machine). The BBI reduction is blocked (:data:`REDUCE_BLOCK`) so both kernels, with any thread
count, return the same bits. These are the fused paths of :class:`dynopt.optim.HeavyBall` and
:class:`dynopt.optim.BBI`; the foreach and single-tensor paths compute the same maps with torch.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numba import types

from .cache import CACHE
from .intrinsics import fma

__all__ = ["PARALLEL_MIN", "bbi_kick_drift", "heavy_ball_step", "use_parallel"]

#: Tensors with at least this many elements use the parallel kernels.
PARALLEL_MIN = 1 << 17

_SIGS_HB = [types.void(a, a, a, s, s) for a, s in
            ((types.float32[::1], types.float32), (types.float64[::1], types.float64))]
_SIGS_BBI = [types.float64(a, a, a, s, s, s) for a, s in
             ((types.float32[::1], types.float32), (types.float64[::1], types.float64))]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _hb_element(i, theta, mom, grad, c, h):  # type: ignore[no-untyped-def]
    m = fma(grad[i], -h, mom[i] * c)  # torch's rounding: mul_, then add_(alpha=) as an fma
    mom[i] = m
    theta[i] = fma(m, h, theta[i])


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _bbi_element(i, theta, mom, grad, r, a, d):  # type: ignore[no-untyped-def]
    m = fma(grad[i], -a, mom[i] * r)
    mom[i] = m
    theta[i] = fma(m, d, theta[i])
    mm = np.float64(m)
    return mm * mm


@nb.njit(_SIGS_HB, parallel=True, cache=CACHE, error_model="numpy")
def _hb_parallel(theta, mom, grad, c, h):  # type: ignore[no-untyped-def]
    for i in nb.prange(theta.shape[0]):
        _hb_element(i, theta, mom, grad, c, h)


@nb.njit(_SIGS_HB, cache=CACHE, error_model="numpy")
def _hb_serial(theta, mom, grad, c, h):  # type: ignore[no-untyped-def]
    for i in range(theta.shape[0]):
        _hb_element(i, theta, mom, grad, c, h)


#: Elements per block of the |Π|² reduction (fixed, so the sum does not depend on threads).
REDUCE_BLOCK = 4096


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _bbi_block(b, theta, mom, grad, r, a, d, partial):  # type: ignore[no-untyped-def]
    """Update block ``b`` and store its |Π|² in ``partial[b]``: eight running sums in a fixed
    order (vectorizable without reassociation), combined pairwise."""
    lo = b * REDUCE_BLOCK
    hi = min(lo + REDUCE_BLOCK, theta.shape[0])
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = lo
    while i + 8 <= hi:
        s0 += _bbi_element(i, theta, mom, grad, r, a, d)
        s1 += _bbi_element(i + 1, theta, mom, grad, r, a, d)
        s2 += _bbi_element(i + 2, theta, mom, grad, r, a, d)
        s3 += _bbi_element(i + 3, theta, mom, grad, r, a, d)
        s4 += _bbi_element(i + 4, theta, mom, grad, r, a, d)
        s5 += _bbi_element(i + 5, theta, mom, grad, r, a, d)
        s6 += _bbi_element(i + 6, theta, mom, grad, r, a, d)
        s7 += _bbi_element(i + 7, theta, mom, grad, r, a, d)
        i += 8
    while i < hi:
        s0 += _bbi_element(i, theta, mom, grad, r, a, d)
        i += 1
    partial[b] = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


# The |Π|² reduction is a sum of per-block partial sums, each computed by one thread in a fixed
# order and combined in block order afterwards: the result is the same with any number of threads
# and in the serial kernel (BBI's fused path was thread-count dependent with a prange reduction).
@nb.njit(_SIGS_BBI, parallel=True, cache=CACHE, error_model="numpy")
def _bbi_parallel(theta, mom, grad, r, a, d):  # type: ignore[no-untyped-def]
    n_blocks = (theta.shape[0] + REDUCE_BLOCK - 1) // REDUCE_BLOCK
    partial = np.empty(n_blocks)
    for b in nb.prange(n_blocks):
        _bbi_block(b, theta, mom, grad, r, a, d, partial)
    acc = 0.0
    for b in range(n_blocks):
        acc += partial[b]
    return acc


@nb.njit(_SIGS_BBI, cache=CACHE, error_model="numpy")
def _bbi_serial(theta, mom, grad, r, a, d):  # type: ignore[no-untyped-def]
    n_blocks = (theta.shape[0] + REDUCE_BLOCK - 1) // REDUCE_BLOCK
    partial = np.empty(n_blocks)
    for b in range(n_blocks):
        _bbi_block(b, theta, mom, grad, r, a, d, partial)
    acc = 0.0
    for b in range(n_blocks):
        acc += partial[b]
    return acc


def _check(theta: np.ndarray, mom: np.ndarray, grad: np.ndarray) -> None:
    """The kernels do no bounds checks: the three arrays must be 1-D, contiguous, of one
    float32/float64 dtype and one length (ValueError naming the mismatch otherwise)."""
    for name, a in (("theta", theta), ("momentum", mom), ("grad", grad)):
        if not isinstance(a, np.ndarray) or a.ndim != 1 or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be a contiguous 1-D numpy array")
        if a.dtype != theta.dtype or a.dtype not in (np.float32, np.float64):
            raise ValueError(f"{name} has dtype {a.dtype}; theta, momentum and grad must share "
                             "one dtype, float32 or float64")
        if a.shape[0] != theta.shape[0]:
            raise ValueError(f"{name} has {a.shape[0]} elements but theta has {theta.shape[0]}")
        if not a.flags.writeable and name != "grad":
            raise ValueError(f"{name} must be writeable")


def use_parallel(n: int) -> bool:
    """Whether an ``n``-element update takes the parallel kernel."""
    return n >= PARALLEL_MIN and nb.get_num_threads() > 1


def heavy_ball_step(theta: np.ndarray, mom: np.ndarray, grad: np.ndarray, c: Any,
                    h: Any) -> None:
    """p ← c·p − h·g; θ ← θ + h·p (c = 1 − γh), in place."""
    _check(theta, mom, grad)
    (_hb_parallel if use_parallel(theta.shape[0]) else _hb_serial)(theta, mom, grad, c, h)


def bbi_kick_drift(theta: np.ndarray, mom: np.ndarray, grad: np.ndarray, r: Any, a: Any,
                   d: Any) -> float:
    """Π ← r·Π − a·g; θ ← θ + d·Π; returns |Π|² (float64) of the new Π."""
    _check(theta, mom, grad)
    kernel = _bbi_parallel if use_parallel(theta.shape[0]) else _bbi_serial
    return float(kernel(theta, mom, grad, r, a, d))
