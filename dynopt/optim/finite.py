"""Are all gradients finite? One fused read pass, for every optimizer's pre-update check.

Large CPU models (float32/float64, contiguous) are scanned by a parallel numba kernel that reads
the gradients as integers and counts elements whose exponent bits are all set (NaN or ±inf): an
integer reduction, which vectorizes. Everything else (CUDA, other dtypes, small models) uses one
``torch._foreach_norm`` per (device, dtype) bucket, which stays on the device until one
``bool()`` per bucket.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

__all__ = ["FAST_ABOVE", "all_finite"]

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
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
