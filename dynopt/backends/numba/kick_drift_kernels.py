"""Fused one-pass CPU kernels for the optimizers (float32 and float64).

HeavyBall's and BBI's updates share one map, p ← a·p − k·∇L, then θ ← θ + d·p (HeavyBall:
a = 1 − γh, k = d = h; BBI: a = r, k = h·kick, d = h·drift), and BBI also needs |p|² of the new
momentum. The kernel reads θ, the momentum and the gradient once and writes θ and the momentum
once: the memory traffic of a single SGD-with-momentum pass (≈20 bytes per float32 parameter),
where ``torch.optim.SGD``'s for-loop path makes three passes. Scalars are cast to the tensors'
dtype, so float32 runs in float32 arithmetic like torch, with torch's rounding: the foreach
path's ``mul_`` then ``add_(alpha=)`` is ``fma(g, −k, a·p)``, one rounding each
(:func:`.intrinsics.fma`), so the fused and foreach paths agree bit for bit; |p|² is
accumulated in float64.

One call updates a whole set of tensors of one dtype (a param group's bucket): the tensors are
addressed through their data addresses (``addr[0]`` θ, ``addr[1]`` the momenta, ``addr[2]`` the
gradients, one column per tensor), cut into :data:`REDUCE_BLOCK`-element blocks, the rows of a
work table ``(tensor, first element)`` (:func:`dynopt.optim.finite.block_layout`). On a small
model the cost of a call is most of what the update costs, and the optimizers called the kernel
once per tensor before (docs/benchmarks.md, "HeavyBall and BBI: one kernel call per bucket").

The update is written once (an inlined block function) and compiled twice: parallel over blocks
for large sets, serial for small ones (:func:`use_parallel`), because starting the thread team
costs more than updating a few thousand parameters (and much more on a loaded machine). The
|p|² reduction sums each block with eight running sums in a fixed order, then each tensor's
blocks in block order, so both kernels, with any thread count, return the same bits (and the
same as one call per tensor did). These are the fused paths of :class:`dynopt.optim.HeavyBall`
and :class:`dynopt.optim.BBI` (through :func:`dynopt.optim.fused.kick_drift`); the foreach and
single-tensor paths compute the same maps with torch.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numba import types

from .cache import CACHE
from .intrinsics import address_as_pointer, fma

__all__ = ["PARALLEL_MIN", "REDUCE_BLOCK", "bbi_kick_drift", "heavy_ball_step",
           "kick_drift_tensors", "use_parallel"]

#: Sets of tensors with at least this many elements in all use the parallel kernel.
PARALLEL_MIN = 1 << 17
#: Elements per block of the work table and of the |p|² reduction (fixed, so the sum does not
#: depend on the thread count).
REDUCE_BLOCK = 4096

_SIGS = [types.void(a, types.int64[:, ::1], types.int64[::1], types.int64[:, ::1], s, s, s,
                    types.boolean, types.float64[::1], types.float64[::1])
         for a, s in ((types.float32[::1], types.float32), (types.float64[::1], types.float64))]


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _element(i, theta, mom, grad, a, k, d):  # type: ignore[no-untyped-def]
    m = fma(grad[i], -k, mom[i] * a)  # torch's rounding: mul_, then add_(alpha=) as an fma
    mom[i] = m
    theta[i] = fma(m, d, theta[i])
    return m


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _square(m):  # type: ignore[no-untyped-def]
    mm = np.float64(m)
    return mm * mm


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _block(w, like, addr, numel, work, a, k, d, want_sums, partial):  # type: ignore[no-untyped-def]
    """Update the block of row ``w`` of the work table; with ``want_sums``, store its |p|² in
    ``partial[w]``: eight running sums in a fixed order (vectorizable without reassociation),
    combined pairwise."""
    ti = work[w, 0]
    lo = work[w, 1]
    nt = numel[ti]
    hi = min(lo + REDUCE_BLOCK, nt)
    theta = nb.carray(address_as_pointer(addr[0, ti], like), nt)
    mom = nb.carray(address_as_pointer(addr[1, ti], like), nt)
    grad = nb.carray(address_as_pointer(addr[2, ti], like), nt)
    if not want_sums:
        for i in range(lo, hi):
            _element(i, theta, mom, grad, a, k, d)
        return
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = lo
    while i + 8 <= hi:
        s0 += _square(_element(i, theta, mom, grad, a, k, d))
        s1 += _square(_element(i + 1, theta, mom, grad, a, k, d))
        s2 += _square(_element(i + 2, theta, mom, grad, a, k, d))
        s3 += _square(_element(i + 3, theta, mom, grad, a, k, d))
        s4 += _square(_element(i + 4, theta, mom, grad, a, k, d))
        s5 += _square(_element(i + 5, theta, mom, grad, a, k, d))
        s6 += _square(_element(i + 6, theta, mom, grad, a, k, d))
        s7 += _square(_element(i + 7, theta, mom, grad, a, k, d))
        i += 8
    while i < hi:
        s0 += _square(_element(i, theta, mom, grad, a, k, d))
        i += 1
    partial[w] = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _per_tensor(work, partial, sums):  # type: ignore[no-untyped-def]
    """``sums[t]`` = the sum of tensor t's block sums, in block order (0 without blocks)."""
    for t in range(sums.shape[0]):
        sums[t] = 0.0
    for w in range(work.shape[0]):
        sums[work[w, 0]] += partial[w]


# The |p|² reduction is a sum of per-block partial sums, each computed by one thread in a fixed
# order and combined in block order afterwards: the result is the same with any number of threads
# and in the serial kernel (BBI's fused path was thread-count dependent with a prange reduction).
@nb.njit(_SIGS, parallel=True, cache=CACHE, error_model="numpy")
def _parallel(like, addr, numel, work, a, k, d, want_sums, partial, sums):  # type: ignore[no-untyped-def]
    for w in nb.prange(work.shape[0]):
        _block(w, like, addr, numel, work, a, k, d, want_sums, partial)
    if want_sums:
        _per_tensor(work, partial, sums)


@nb.njit(_SIGS, cache=CACHE, error_model="numpy")
def _serial(like, addr, numel, work, a, k, d, want_sums, partial, sums):  # type: ignore[no-untyped-def]
    for w in range(work.shape[0]):
        _block(w, like, addr, numel, work, a, k, d, want_sums, partial)
    if want_sums:
        _per_tensor(work, partial, sums)


def use_parallel(n: int) -> bool:
    """Whether an update of ``n`` elements in all takes the parallel kernel."""
    return n >= PARALLEL_MIN and nb.get_num_threads() > 1


_NONE = np.empty(0)


def kick_drift_tensors(like: np.ndarray, addr: np.ndarray, numel: np.ndarray, work: np.ndarray,
                       total: int, a: Any, k: Any, d: Any, want_sums: bool) -> np.ndarray:
    """p ← a·p − k·∇L; θ ← θ + d·p, in place, for every tensor of ``addr``; returns each
    tensor's |p|² (float64) of the new p if ``want_sums`` (else an empty array).

    No checks: the caller guarantees that every address holds ``numel[t]`` contiguous, writeable
    elements of ``like``'s dtype (one element of it), that ``work`` is the :data:`REDUCE_BLOCK`
    work table of ``numel``, ``total`` its element count, and that ``a``, ``k``, ``d`` have
    ``like``'s dtype.
    """
    partial = np.empty(work.shape[0]) if want_sums else _NONE
    sums = np.empty(numel.shape[0]) if want_sums else _NONE
    kernel = _parallel if use_parallel(total) else _serial
    kernel(like, addr, numel, work, a, k, d, want_sums, partial, sums)
    return sums


def _one(theta: np.ndarray, mom: np.ndarray, grad: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The arguments of :func:`kick_drift_tensors` for three 1-D arrays, which must be
    contiguous, of one float32/float64 dtype and one length, θ and the momentum writeable
    (ValueError naming the mismatch otherwise)."""
    for name, arr in (("theta", theta), ("momentum", mom), ("grad", grad)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1 or not arr.flags.c_contiguous:
            raise ValueError(f"{name} must be a contiguous 1-D numpy array")
        if arr.dtype != theta.dtype or arr.dtype not in (np.float32, np.float64):
            raise ValueError(f"{name} has dtype {arr.dtype}; theta, momentum and grad must "
                             "share one dtype, float32 or float64")
        if arr.shape[0] != theta.shape[0]:
            raise ValueError(f"{name} has {arr.shape[0]} elements but theta has "
                             f"{theta.shape[0]}")
        if not arr.flags.writeable and name != "grad":
            raise ValueError(f"{name} must be writeable")
    from ...optim.finite import block_layout

    n = theta.shape[0]
    numel, work = block_layout((n,), REDUCE_BLOCK)
    addr = np.array([[arr.ctypes.data] for arr in (theta, mom, grad)], dtype=np.int64)
    return np.zeros(1, dtype=theta.dtype), addr, numel, work, n


def heavy_ball_step(theta: np.ndarray, mom: np.ndarray, grad: np.ndarray, c: Any,
                    h: Any) -> None:
    """p ← c·p − h·g; θ ← θ + h·p (c = 1 − γh), in place, on three checked 1-D arrays."""
    like, addr, numel, work, n = _one(theta, mom, grad)
    kick_drift_tensors(like, addr, numel, work, n, c, h, h, False)


def bbi_kick_drift(theta: np.ndarray, mom: np.ndarray, grad: np.ndarray, r: Any, a: Any,
                   d: Any) -> float:
    """Π ← r·Π − a·g; θ ← θ + d·Π on three checked 1-D arrays; returns |Π|² (float64) of the
    new Π."""
    like, addr, numel, work, n = _one(theta, mom, grad)
    return float(kick_drift_tensors(like, addr, numel, work, n, r, a, d, True)[0])
