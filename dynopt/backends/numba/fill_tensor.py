r"""Standard normals for a flat CPU buffer from Philox: one draw per element, in parallel.

The optimizers that draw a whole vector of normals outside a fused kernel (ECDSep's rotation
noise) fill it here instead of with ``torch.randn``: ~11 ns per float32 normal with torch's CPU
generator against ~0.45 ns per normal and core for the float32 Box–Muller transform of
:mod:`.philox`.

Counter layout (key = the optimizer's 64-bit seed): ``(call, stream, draw_lo, draw_hi)``. The
buffer is cut into blocks of :data:`BLOCK` elements, as the fused kernels' noise
(:mod:`.segment_kernel`): in the block that starts at element ``b0`` and holds ``n`` elements,
with ``K = ⌈n/4⌉``, element ``b0 + r·K + j`` (``0 ≤ r < 4``, ``0 ≤ j < K``) takes word ``r`` of
call ``call0 + b0/4 + j`` (Box–Muller pairs words (0, 1) and (2, 3); the words of a ragged last
block that fall past its end are not used). This layout lets LLVM vectorize the transform over
``j``: element ``4j + r`` ← word ``r`` of call ``j`` did not vectorize (20 ns per normal and
core instead of ~1). In the terms of :func:`.philox.normals_for`, call ``c`` is chain ``c``
and its words are normals ``4·draw .. 4·draw + 3``: ``normals_for(seed, n_calls, 4,
stream=stream, first=4 * draw)[c, r]`` is the reference. Each value is a pure function of its
position, so the numbers do not depend on the thread count or on how the work is split, and
``(seed, stream, draw)`` is the whole generator state.

The float32 transform is used for both dtypes (noise kind ``"gaussian"``, the fused Langevin
kernels' default): a float64 buffer receives the float32 values, widened exactly.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .cache import CACHE
from .intrinsics import prefer_512_bit_vectors
from .philox import box_muller_f32, split_seed
from .segment_kernel import _normals

__all__ = ["BLOCK", "MAX_CALLS", "fill_normals"]

#: Elements per block (a multiple of 4; the fused kernels' block size).
BLOCK = 2048
#: Blocks per parallel task.
BLOCKS_PER_TASK = 16
#: Calls addressable by the counter word c0 (32 bits): at most 4·2³² normals per draw.
MAX_CALLS = 1 << 32
_MASK32 = np.uint64(0xFFFFFFFF)


@nb.njit(cache=CACHE, error_model="numpy")
def _fill_block(Z, K, call0, s, lo, hi, k0, k1):  # type: ignore[no-untyped-def]
    """``Z[r·K + j]`` ← word r of call ``call0 + j`` transformed, j < K (``Z`` holds ≥ 4K).

    Its own function (not inlined), so that :func:`.intrinsics.prefer_512_bit_vectors`
    applies to the loop."""
    prefer_512_bit_vectors()
    # the segment kernel's layout and transform, one definition (call0 < 2⁶⁴: int64 wraps as
    # the counter word's mask does)
    _normals(Z, K, 0, K, np.int64(call0), s, lo, hi, k0, k1, box_muller_f32)


@nb.njit(cache=CACHE, error_model="numpy")
def _fill_task(out, t, c0, s, lo, hi, k0, k1):  # type: ignore[no-untyped-def]
    """The full blocks of task ``t`` (:data:`BLOCKS_PER_TASK` blocks from block 16t)."""
    full = out.shape[0] // BLOCK
    per = BLOCK // 4
    for blk in range(t * BLOCKS_PER_TASK, min((t + 1) * BLOCKS_PER_TASK, full)):
        b0 = blk * BLOCK
        _fill_block(out[b0:b0 + BLOCK], per, c0 + np.uint64(blk * per), s, lo, hi, k0, k1)


@nb.njit(cache=CACHE, error_model="numpy")
def _fill_rest(out, c0, s, lo, hi, k0, k1):  # type: ignore[no-untyped-def]
    """The ragged last block (after the full ones), through a scratch of 4K elements."""
    n = out.shape[0]
    full = n // BLOCK
    rest = n - full * BLOCK
    if rest:
        K = (rest + 3) // 4
        Z = np.empty(4 * K, dtype=out.dtype)
        _fill_block(Z, K, c0 + np.uint64(full * (BLOCK // 4)), s, lo, hi, k0, k1)
        out[full * BLOCK:] = Z[:rest]


@nb.njit(parallel=True, cache=CACHE, error_model="numpy")
def _fill(out, call0, stream, draw, k0, k1):  # type: ignore[no-untyped-def]
    """The whole buffer, its tasks in parallel."""
    s = np.uint64(stream)
    lo = draw & _MASK32
    hi = draw >> np.uint64(32)
    c0 = np.uint64(call0)
    n_tasks = (out.shape[0] // BLOCK + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK
    for t in nb.prange(n_tasks):
        _fill_task(out, t, c0, s, lo, hi, k0, k1)
    _fill_rest(out, c0, s, lo, hi, k0, k1)


@nb.njit(cache=CACHE, error_model="numpy")
def _fill_serial(out, call0, stream, draw, k0, k1):  # type: ignore[no-untyped-def]
    """:func:`_fill` on the calling thread, for a buffer of at most one task: the same values
    (each a pure function of its position), without entering numba's thread pool."""
    s = np.uint64(stream)
    lo = draw & _MASK32
    hi = draw >> np.uint64(32)
    c0 = np.uint64(call0)
    _fill_task(out, 0, c0, s, lo, hi, k0, k1)
    _fill_rest(out, c0, s, lo, hi, k0, k1)


def fill_normals(out: np.ndarray, seed: int, stream: int, draw: int, call0: int = 0) -> None:
    """Fill the contiguous 1-D float32/float64 array ``out`` with standard normals.

    Args:
        out: The buffer (C-contiguous, 1-D, float32 or float64); every element is written.
        seed: The 64-bit key (the optimizer's seed).
        stream: The Philox stream (counter word c1; :mod:`.philox` lists the streams).
        draw: The draw index (counter words c2, c3), e.g. an optimizer's step counter.
        call0: The first call's index (counter word c0): where the buffer starts, in calls of
            4 normals, within a larger draw (0 ≤ call0; the buffer's calls end by 2³²).

    Raises:
        ValueError: If ``out`` is not a contiguous 1-D float32/float64 array, or its calls
            would run past the 2³² that the counter word c0 addresses.
    """
    if out.ndim != 1 or out.dtype not in (np.float32, np.float64) or (
            not out.flags.c_contiguous):
        raise ValueError(f"fill_normals: out must be a contiguous 1-D float32/float64 array, "
                         f"got {out.dtype} with shape {out.shape}")
    end = call0 + (out.shape[0] + 3) // 4
    if call0 < 0 or end > MAX_CALLS:
        raise ValueError(f"fill_normals: calls {call0} .. {end} are outside the counter's "
                         f"2**32 calls (4·2**32 normals per draw)")
    k0, k1 = split_seed(seed)
    # one task's worth (≤ 32,768 normals, ~15 µs on one core) runs on the calling thread: the
    # parallel region gained nothing there and, next to torch's own OpenMP pool (ECDSep's
    # step), each entry into numba's pool waited for threads that torch's kept spinning
    # (0.2-1.5 ms per call on 2 cores instead of ~15 µs)
    kernel = _fill_serial if out.shape[0] <= BLOCK * BLOCKS_PER_TASK else _fill
    kernel(out, np.int64(call0), np.int64(stream), np.uint64(int(draw) & 0xFFFFFFFFFFFFFFFF),
           k0, k1)
