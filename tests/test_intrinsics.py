"""The LLVM-level helpers of :mod:`dynopt.backends.numba.intrinsics`: exact results where they
compute, and the promised IR where they only hint (prefetch, vector width)."""

from __future__ import annotations

import numba as nb
import numpy as np
import pytest

from dynopt.backends.numba.intrinsics import (
    f32_as_u32,
    fma,
    max_masked,
    prefer_512_bit_vectors,
    prefetch,
    u32_as_f32,
)


@nb.njit(cache=False)
def _hinted_sum(x, lookahead):  # type: ignore[no-untyped-def]
    prefer_512_bit_vectors()
    s = 0.0
    base = x.ctypes.data
    for i in range(x.size):
        prefetch(base + 8 * (i + lookahead), False)  # past the end too: a hint never faults
        prefetch(0, True)
        s += x[i]
    return s


def test_prefetch_and_vector_width_are_hints_only():
    """Same values as without the hints, also when prefetching unmapped addresses; and the
    vector-width attribute reaches the compiled function's IR (catches an intrinsic that
    silently stopped emitting it)."""
    x = np.arange(1000, dtype=np.float64)
    assert _hinted_sum(x, 10**9) == x.sum()
    ir = next(iter(_hinted_sum.inspect_llvm().values()))
    assert '"prefer-vector-width"="512"' in ir
    assert "llvm.prefetch" in ir


def test_prefetch_refuses_a_non_literal_mode():
    @nb.njit(cache=False)
    def bad(a, w):  # type: ignore[no-untyped-def]
        prefetch(a, w)

    with pytest.raises(nb.core.errors.TypingError):
        bad(0, True)


@nb.njit(cache=False)
def _fma32(a, b, c):  # type: ignore[no-untyped-def]
    return fma(a, b, c)


def test_fma_rounds_once():
    # (1 + 2⁻²³)(1 − 2⁻²³) − 1 = −2⁻⁴⁶: lost by a rounded product, kept by a fused one
    a, b, c = np.float32(1 + 2**-23), np.float32(1 - 2**-23), np.float32(-1.0)
    assert _fma32(a, b, c) == np.float32(-(2.0**-46))
    assert np.float32(a * b) + c == 0.0


@nb.njit(cache=False)
def _masked_max32(x, mask):  # type: ignore[no-untyped-def]
    top = np.uint32(0)
    for v in x:
        top = max_masked(top, f32_as_u32(v), mask)
    return u32_as_f32(top)


def test_max_masked_is_the_largest_magnitude():
    x = np.array([1.5, -3.25, 2.0, -0.0], dtype=np.float32)
    assert _masked_max32(x, np.uint32(0x7FFFFFFF)) == np.float32(3.25)
