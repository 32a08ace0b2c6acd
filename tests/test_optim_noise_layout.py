"""The fused optimizer kernel's noise, element by element, against the counter layout that
:mod:`dynopt.backends.numba.segment_kernel` documents (read directly, one Philox call at a time).

The kernel fills full blocks through chunked loops that prefetch the next block's memory
(:func:`segment_kernel._fill_noise`) and ragged blocks through a separate function; a wrong chunk
bound, a skipped chunk, an off-by-one in the ragged path or a prefetch that wrote instead of
hinting would change some element here, and the moment tests might not notice.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from dynopt.backends.numba import segment_kernel as k
from dynopt.backends.numba.philox import (
    DISCRETE,
    GAUSSIAN,
    GAUSSIAN_F64,
    box_muller,
    box_muller_f32,
    philox4x32,
)
from dynopt.program import OpCode

U = np.uint64
KEY0, KEY1, STEP, SLOT = U(0x1234ABCD), U(0x9), 5, 3


def _expected(n: int, dtype: type, kind: int, stream: int) -> np.ndarray:
    """The documented layout: block b0 (n_b elements), K = ⌈n_b/4⌉ (Gaussian) or ⌈n_b/8⌉
    (discrete); element b0 + r·K + j takes word r of call b0/4 + j (Gaussian, Box–Muller on the
    pairs (0, 1), (2, 3): the float32 transform, widened in float64, except for "gaussian-f64"
    in float64) or field r mod 2 of word ⌊r/2⌋ of call b0/8 + j (discrete)."""
    draw = U(16 * STEP + SLOT)
    lo, hi = draw & U(0xFFFFFFFF), draw >> U(32)
    out = np.full(n, np.nan)
    bm = box_muller if (dtype is np.float64 and kind == GAUSSIAN_F64) else box_muller_f32
    a = float(np.float32(k.DISCRETE_VALUE) if dtype is np.float32 else k.DISCRETE_VALUE)
    for b0 in range(0, n, k.BLOCK):
        nb_ = min(k.BLOCK, n - b0)
        if kind != DISCRETE:
            K = (nb_ + 3) // 4
            for j in range(K):
                w = philox4x32(U(b0 // 4 + j), U(stream), lo, hi, KEY0, KEY1)
                z = (*bm(w[0], w[1]), *bm(w[2], w[3]))
                for r in range(4):
                    if r * K + j < nb_:
                        out[b0 + r * K + j] = z[r]
        else:
            K = (nb_ + 7) // 8
            for j in range(K):
                w = philox4x32(U(b0 // 8 + j), U(stream), lo, hi, KEY0, KEY1)
                for r in range(8):
                    u = (int(w[r // 2]) >> (16 * (r % 2))) & 0xFFFF
                    if r * K + j < nb_:
                        out[b0 + r * K + j] = a * ((u < 10923) - (10923 <= u < 21846))
    return out


def _kernel(numels: list[int], dtype: type, kind: int, serial: bool) -> list[np.ndarray]:
    """p ← 0·p + 1·R on zero buffers for several tensors at once (one work table)."""
    tdt = torch.float32 if dtype is np.float32 else torch.float64
    ps = [torch.zeros(n, dtype=tdt) for n in numels]
    ths = [torch.zeros(n, dtype=tdt) for n in numels]
    grads = [torch.zeros(n, dtype=tdt) for n in numels]  # prefetched, never written
    work = np.array([(t, b) for t, n in enumerate(numels) for b in range(0, n, k.BLOCK)],
                    dtype=np.int64)
    coef = np.zeros((1, len(numels), 2), dtype=dtype)
    coef[0, :, 1] = 1.0
    fn = k.run_segment_serial if serial else k.run_segment
    fn(np.zeros(1, dtype=dtype), np.array([int(OpCode.OU)]), np.array([SLOT]), coef,
       np.array([t.data_ptr() for t in ths]), np.array([t.data_ptr() for t in ps]),
       np.array([t.data_ptr() for t in grads]), np.zeros(len(numels), dtype=np.int64),
       np.array(numels), np.array([10 + i for i in range(len(numels))]), work, KEY0, KEY1, STEP,
       kind, False, np.zeros(work.shape[0]),
       np.full((numba.config.NUMBA_NUM_THREADS, k.WORKSPACE), np.nan, dtype=dtype))
    assert all(not t.any() for t in ths + grads)  # untouched: θ (no op) and the gradients
    return [p.numpy().astype(np.float64) for p in ps]


@pytest.mark.parametrize("serial", [False, True], ids=["parallel", "serial"])
@pytest.mark.parametrize("kind", [GAUSSIAN, DISCRETE, GAUSSIAN_F64],
                         ids=["gaussian", "discrete", "gaussian-f64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_kernel_noise_is_the_documented_layout_bit_for_bit(dtype, kind, serial):
    # full blocks, a ragged last block, a tensor smaller than a block, one of 1 element
    numels = [2 * k.BLOCK + 5, k.BLOCK, 77, 1, 3 * k.BLOCK]
    got = _kernel(numels, dtype, kind, serial)
    for i, (n, z) in enumerate(zip(numels, got, strict=True)):
        ref = _expected(n, dtype, kind, 10 + i)
        assert np.array_equal(z, ref), (n, int(np.argmax(z != ref)))
