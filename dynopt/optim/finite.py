"""Largest magnitude of a set of tensors, and are they all finite? One fused read pass.

Used by every optimizer's pre-update checks: the gradients must be finite, and their largest
magnitude feeds the overflow bound of :mod:`dynopt.optim.bound`. Large CPU models
(float32/float64, contiguous) are scanned by a parallel numba kernel that reads the tensors as
integers with the sign bit masked off and takes the largest pattern (for IEEE floats the integer
order is the order of |x|, and NaN/±inf lie at or above +inf's pattern): an integer reduction,
which vectorizes (serially below :data:`FAST_ABOVE` elements, where waking the thread pool costs
more than the scan). Everything else (CUDA, other dtypes, non-contiguous tensors, and any set
under ``NUMBA_DISABLE_JIT=1``, where the kernels cannot run) uses one
``torch._foreach_norm(·, inf)`` (max |x|, NaN-propagating, never overflows) per bucket, which
stays on the device until one ``float()``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from ._paths import mark_written, numba_jit_enabled

__all__ = ["FAST_ABOVE", "abs_max", "all_finite", "block_layout", "copy_all"]

#: Sets with at least this many CPU elements use the parallel numba scan (and copy).
FAST_ABOVE = 1 << 18

#: (a one-element array of the unsigned type of the width (the kernel's type argument),
#: magnitude mask, float type) per dtype.
_BITS = {torch.float32: (np.zeros(1, np.uint32), np.uint32(0x7FFFFFFF), np.float32),
         torch.float64: (np.zeros(1, np.uint64), np.uint64(0x7FFFFFFFFFFFFFFF), np.float64)}


@functools.lru_cache(maxsize=64)
def block_layout(numels: tuple[int, ...], block: int) -> tuple[np.ndarray, np.ndarray]:
    """(numel per tensor, work table of (tensor, block start) rows of ``block`` elements, in
    tensor order; an empty tensor has no row), cached: the layout of the raw-memory kernels."""
    numel = np.array(numels, dtype=np.int64)
    counts = (numel + block - 1) // block
    tensor = np.repeat(np.arange(len(numels), dtype=np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    start = (np.arange(tensor.size, dtype=np.int64) - first) * block
    return numel, np.ascontiguousarray(np.stack([tensor, start], axis=1))


def _layout(numels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`block_layout` with the block passes' :data:`~dynopt.backends.numba.block_memory.
    BLOCK`."""
    from ..backends.numba.block_memory import BLOCK

    return block_layout(numels, BLOCK)


@torch.compiler.disable  # numba on raw memory: runs eagerly inside a compiled step
def _numba_abs_max(ts: list[Tensor], numels: tuple[int, ...]) -> float:
    from ..backends.numba.block_memory import absmax_blocks, absmax_blocks_serial

    like, magnitude, real = _BITS[ts[0].dtype]
    numel, work = _layout(numels)
    out = np.empty(work.shape[0], dtype=like.dtype)
    ptrs = np.array([t.data_ptr() for t in ts], dtype=np.int64)
    kernel = absmax_blocks if sum(numels) >= FAST_ABOVE else absmax_blocks_serial
    kernel(like, magnitude, ptrs, numel, work, out)
    top = float(out.max().view(real))
    return top if math.isfinite(top) else math.inf


def abs_max(ts: list[Tensor]) -> float:
    """max |x| over every element of ``ts`` (one device and dtype, floating point); ``inf`` if
    any element is NaN or ±inf, 0.0 for no elements."""
    ts = [t for t in ts if t.numel()]
    if not ts:
        return 0.0
    t0 = ts[0]
    if (t0.is_cpu and t0.dtype in _BITS  # t.is_cpu: no device object (this runs every step)
            and all(t.is_contiguous() and not t.is_sparse for t in ts) and numba_jit_enabled()):
        return _numba_abs_max(ts, tuple(t.numel() for t in ts))
    top = float(torch.stack(torch._foreach_norm(ts, math.inf)).max())
    return top if math.isfinite(top) else math.inf


def all_finite(grads: list[Tensor]) -> bool:
    """True if every element of ``grads`` (one device and dtype) is finite."""
    return abs_max(grads) < math.inf


_WIDTH = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def copy_all(dst: list[Tensor], src: list[Tensor]) -> None:
    """``dst[i].copy_(src[i])`` for same-shape, same-dtype tensors: large contiguous CPU sets in
    one parallel numba pass (:func:`~dynopt.backends.numba.block_memory.copy_blocks`), the rest
    with torch."""
    fast: dict[int, list[tuple[Tensor, Tensor]]] = {}
    for d, s in zip(dst, src, strict=True):
        if (d.device.type == "cpu" and s.device.type == "cpu" and d.is_contiguous()
                and s.is_contiguous() and d.element_size() in _WIDTH and d.dtype == s.dtype
                and not d.is_sparse and d.numel() > 0):
            fast.setdefault(d.element_size(), []).append((d, s))
        else:
            d.copy_(s)
    for width, pairs in fast.items():
        if sum(d.numel() for d, _ in pairs) < FAST_ABOVE or not numba_jit_enabled():
            for d, s in pairs:
                d.copy_(s)
            continue
        from ..backends.numba.block_memory import copy_blocks

        numel, work = _layout(tuple(d.numel() for d, _ in pairs))
        copy_blocks(np.zeros(1, dtype=_WIDTH[width]),
                    np.array([s.data_ptr() for _, s in pairs], dtype=np.int64),
                    np.array([d.data_ptr() for d, _ in pairs], dtype=np.int64), numel, work)
        mark_written([d for d, _ in pairs])  # raw-memory writes, as copy_ would count
