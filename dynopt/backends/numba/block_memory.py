"""Raw-memory block passes over sets of tensors: the largest magnitude and a copy.

Both read the tensors as unsigned integers of their width through their data addresses and run
in parallel over the rows of a work table ``(tensor, first element)`` of :data:`BLOCK`-element
blocks: :func:`absmax_blocks` for :func:`dynopt.optim.finite.abs_max` (the gradient check and the
overflow bound of :mod:`dynopt.optim.bound`), :func:`copy_blocks` for the step snapshot of
:mod:`dynopt.optim.rollback`.
"""

from __future__ import annotations

import numba as nb

from .cache import CACHE
from .intrinsics import address_as_pointer, max_masked, prefetch

__all__ = ["BLOCK", "LINE", "absmax_blocks", "absmax_blocks_serial", "copy_blocks", "next_block"]

#: Elements per block of the work table.
BLOCK = 2048
#: Bytes per cache line (the unit of :func:`.intrinsics.prefetch`).
LINE = 64
#: Elements scanned between two doses of prefetches in :func:`_absmax_block`.
_SCAN_CHUNK = 256


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def next_block(w, work, numel, itemsize):  # type: ignore[no-untyped-def]
    """Where block ``w + 1`` of a work table is: (tensor, byte offset, cache lines), or
    (0, 0, 0) after the last block.

    With prange's static schedule, block ``w + 1`` is the next one the same thread runs (or,
    at the end of its range, another thread's first). The block passes prefetch it a few cache
    lines at a time while they work on block ``w``: one core has only ~16 cache misses in
    flight, so its own loads leave the memory idle part of the time, and a burst of a whole
    block's prefetches would stall the core instead (measured: no gain).
    """
    if w + 1 >= work.shape[0]:
        return 0, 0, 0
    ti = work[w + 1, 0]
    b0 = work[w + 1, 1]
    return ti, b0 * itemsize, (min(BLOCK, numel[ti] - b0) * itemsize + LINE - 1) // LINE


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _absmax_block(w, like_bits, magnitude, g_ptr, numel, work, out):  # type: ignore[no-untyped-def]
    """``out[w]`` = the largest ``bits & magnitude`` over block ``w`` of the tensors.

    Reads the tensors as unsigned integers of their width (``like_bits``: uint32 for float32,
    uint64 for float64; ``like_bits`` holds one zero of that type) with the sign bit masked off
    (``magnitude``). For IEEE floats without sign, the integer order is the order of |x|, and
    every NaN/±inf has a pattern at least that of +inf; so the result is the bit pattern of
    max |x| when all elements are finite and at least +inf's otherwise. An integer max
    reduction in the tensors' own width (:func:`.intrinsics.max_masked`), which vectorizes (a
    floating-point one with NaN propagation would be sequential). Full blocks prefetch the
    next block as they go (:func:`next_block`; 60 float32 tensors of 1M, 2 threads: 8.5 ms
    instead of 11.0).
    """
    ti = work[w, 0]
    b0 = work[w, 1]
    nt = numel[ti]
    n = min(BLOCK, nt - b0)
    g = nb.carray(address_as_pointer(g_ptr[ti], like_bits), nt)[b0:b0 + n]
    top = like_bits[0]  # zero, of the width
    if n == BLOCK:  # chunks, each followed by a dose of the next block's prefetches
        t1, off, lines = next_block(w, work, numel, g.itemsize)
        ahead = g_ptr[t1] + off
        per = (lines + BLOCK // _SCAN_CHUNK - 1) // (BLOCK // _SCAN_CHUNK)
        for e0 in range(0, BLOCK, _SCAN_CHUNK):
            for e in range(e0, e0 + _SCAN_CHUNK):
                top = max_masked(top, g[e], magnitude)
            first = (e0 // _SCAN_CHUNK) * per
            for line in range(first, min(first + per, lines)):
                prefetch(ahead + LINE * line, False)
    else:
        for e in range(n):
            top = max_masked(top, g[e], magnitude)
    out[w] = top


@nb.njit(parallel=True, cache=CACHE, error_model="numpy")
def absmax_blocks(like_bits, magnitude, g_ptr, numel, work, out):  # type: ignore[no-untyped-def]
    """:func:`_absmax_block` for every row of ``work``, in parallel over blocks."""
    for w in nb.prange(work.shape[0]):
        _absmax_block(w, like_bits, magnitude, g_ptr, numel, work, out)


@nb.njit(cache=CACHE, error_model="numpy")
def absmax_blocks_serial(like_bits, magnitude, g_ptr, numel, work, out):  # type: ignore[no-untyped-def]
    """:func:`absmax_blocks` on the calling thread (small sets: no thread wake-up)."""
    for w in range(work.shape[0]):
        _absmax_block(w, like_bits, magnitude, g_ptr, numel, work, out)


@nb.njit(parallel=True, cache=CACHE, error_model="numpy")
def copy_blocks(like_bits, src_ptr, dst_ptr, numel, work):  # type: ignore[no-untyped-def]
    """Copy every block of the work table from ``src_ptr`` tensors to ``dst_ptr`` tensors.

    Elements are moved as unsigned integers of their width (``like_bits``), in parallel over
    blocks: the optimizers' step snapshot (:mod:`dynopt.optim.rollback`), where torch's CPU
    ``_foreach_copy_`` contends with the numba thread pool.
    """
    for w in nb.prange(work.shape[0]):
        ti = work[w, 0]
        b0 = work[w, 1]
        nt = numel[ti]
        n = min(BLOCK, nt - b0)
        src = nb.carray(address_as_pointer(src_ptr[ti], like_bits), nt)[b0:b0 + n]
        dst = nb.carray(address_as_pointer(dst_ptr[ti], like_bits), nt)[b0:b0 + n]
        for e in range(n):
            dst[e] = src[e]
