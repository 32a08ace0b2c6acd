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
from .intrinsics import address_as_pointer, max_masked

__all__ = ["BLOCK", "absmax_blocks", "absmax_blocks_serial", "copy_blocks"]

#: Elements per block of the work table.
BLOCK = 2048


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _absmax_block(w, like_bits, magnitude, g_ptr, numel, work, out):  # type: ignore[no-untyped-def]
    """``out[w]`` = the largest ``bits & magnitude`` over block ``w`` of the tensors.

    Reads the tensors as unsigned integers of their width (``like_bits``: uint32 for float32,
    uint64 for float64; ``like_bits`` holds one zero of that type) with the sign bit masked off
    (``magnitude``). For IEEE floats without sign, the integer order is the order of |x|, and
    every NaN/±inf has a pattern at least that of +inf; so the result is the bit pattern of
    max |x| when all elements are finite and at least +inf's otherwise. An integer max
    reduction in the tensors' own width (:func:`.intrinsics.max_masked`), which vectorizes (a
    floating-point one with NaN propagation would be sequential).
    """
    ti = work[w, 0]
    b0 = work[w, 1]
    nt = numel[ti]
    n = min(BLOCK, nt - b0)
    g = nb.carray(address_as_pointer(g_ptr[ti], like_bits), nt)[b0:b0 + n]
    top = like_bits[0]  # zero, of the width
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
