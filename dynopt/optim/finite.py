"""Are all gradients finite? One fused read pass, for every optimizer's pre-update check.

Large CPU models (float32/float64, contiguous) are scanned by a parallel numba kernel that reads
the gradients as integers and counts elements whose exponent bits are all set (NaN or ±inf): an
integer reduction, which vectorizes. Everything else (CUDA, other dtypes, small models) uses one
``torch._foreach_norm`` per (device, dtype) bucket, which stays on the device until one
``bool()`` per bucket. A finite norm proves every element finite; a non-finite norm does not prove
the opposite (the norm of large finite values overflows: above about 1.8e19 in float32, 1.3e154
in float64), so it is confirmed element by element before a gradient is called non-finite.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

__all__ = ["FAST_ABOVE", "all_finite", "copy_all"]

#: Models with at least this many CPU gradient elements use the numba scan.
FAST_ABOVE = 1 << 18

_BITS = {torch.float32: (np.uint32, np.uint32(0x7F800000)),
         torch.float64: (np.uint64, np.uint64(0x7FF0000000000000))}


@functools.lru_cache(maxsize=32)
def _layout(numels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numel per tensor, work table of (tensor, block start) rows, output buffer), cached."""
    from ..backends.numba.optim_kernel import BLOCK

    numel = np.array(numels, dtype=np.int64)
    counts = (numel + BLOCK - 1) // BLOCK
    tensor = np.repeat(np.arange(len(numels), dtype=np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    start = (np.arange(tensor.size, dtype=np.int64) - first) * BLOCK
    return numel, np.ascontiguousarray(np.stack([tensor, start], axis=1)), np.empty(
        tensor.size, dtype=np.int64)


@torch.compiler.disable  # numba on raw memory: runs eagerly inside a compiled step
def _numba_all_finite(grads: list[Tensor]) -> bool:
    from ..backends.numba.optim_kernel import nonfinite_blocks

    like, exponent = _BITS[grads[0].dtype]
    numel, work, out = _layout(tuple(g.numel() for g in grads))
    ptrs = np.array([g.data_ptr() for g in grads], dtype=np.int64)
    nonfinite_blocks(np.zeros(1, dtype=like), exponent, ptrs, numel, work, out)
    return not out.any()


def all_finite(grads: list[Tensor]) -> bool:
    """True if every element of ``grads`` (one device and dtype) is finite."""
    if not grads:
        return True
    g0 = grads[0]
    if (g0.device.type == "cpu" and g0.dtype in _BITS
            and sum(g.numel() for g in grads) >= FAST_ABOVE
            and all(g.is_contiguous() and not g.is_sparse for g in grads)):
        return _numba_all_finite(grads)
    if bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
        return True
    return all(bool(torch.isfinite(g).all()) for g in grads)  # the norm may have overflowed


_WIDTH = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def copy_all(dst: list[Tensor], src: list[Tensor]) -> None:
    """``dst[i].copy_(src[i])`` for same-shape, same-dtype tensors: large contiguous CPU sets in
    one parallel numba pass (:func:`~dynopt.backends.numba.optim_kernel.copy_blocks`), the rest
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
        if sum(d.numel() for d, _ in pairs) < FAST_ABOVE:
            for d, s in pairs:
                d.copy_(s)
            continue
        from ..backends.numba.optim_kernel import copy_blocks

        numel, work, _ = _layout(tuple(d.numel() for d, _ in pairs))
        copy_blocks(np.zeros(1, dtype=_WIDTH[width]),
                    np.array([s.data_ptr() for _, s in pairs], dtype=np.int64),
                    np.array([d.data_ptr() for d, _ in pairs], dtype=np.int64), numel, work)
