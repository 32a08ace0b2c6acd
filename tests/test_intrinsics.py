"""The LLVM-level helpers of :mod:`dynopt.backends.numba.intrinsics`: exact results where they
compute, and the promised IR where they only hint (prefetch, vector width)."""

from __future__ import annotations

import os
import subprocess
import sys

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
from dynopt.backends.numba.philox import box_muller_f32


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


EDGE_WORDS = np.array([0, 1, 2, 2**23 - 1, 2**23, 2**24 - 1, 2**24, 2**24 + 1, 2**29, 2**30 - 1,
                       2**30, 2**30 + 1, 2**31 - 1, 2**31, 3 * 2**30, 2**32 - 2, 2**32 - 1],
                      dtype=np.uint64)


def _fma32(a: np.ndarray, b: object, c: object) -> np.ndarray:
    """float32 a·b + c with one rounding: the product of two float32 values is exact in the
    64-bit significand of x86's long double, and so is the sum for the operands here (the
    double rounding through long double could differ from one rounding only for a sum that needs
    more than 64 bits and lands on a float32 halfway point)."""
    assert np.finfo(np.longdouble).nmant >= 63, "needs x87 extended precision"
    exact = np.asarray(a, np.longdouble) * np.longdouble(b) + np.longdouble(c)
    return exact.astype(np.float32)


def _reference_box_muller_f32(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 transform of dynopt.backends.numba.philox, in numpy, with 64-bit integer
    steps (the formulation the 32-bit-lane intrinsics replace) and its polynomials as fused
    multiply-adds."""
    f = np.float32
    x = (a.astype(np.int64) + 1).astype(f) * f(2.0**-32)
    bits = x.view(np.uint32)
    e = ((bits >> 23).astype(np.int32) - 127).astype(f)
    m = ((bits & 0x007FFFFF) | 0x3F800000).astype(np.uint32).view(f)
    big = m > f(np.sqrt(2.0))
    m = np.where(big, f(0.5) * m, m)
    e = np.where(big, e + f(1.0), e)
    s = (m - f(1)) / (m + f(1))
    s2 = s * s
    poly = _fma32(s2, f(1 / 9), f(1 / 7))
    poly = _fma32(s2, poly, f(1 / 5))
    poly = _fma32(s2, poly, f(1 / 3))
    poly = _fma32(s2, poly, f(1))
    lg = _fma32(e, f(np.log(2.0)), (s + s) * poly)
    rho = np.sqrt(f(-2) * lg)
    q = b >> np.uint64(30)
    r = (b & np.uint64(0x3FFFFFFF)).astype(np.int64).astype(f) * f(2.0**-30)
    t = (r - f(0.5)) * f(np.pi / 2)
    t2 = t * t
    sn = _fma32(t2, f(1 / 362880), f(-1 / 5040))
    for coef in (1 / 120, -1 / 6):
        sn = _fma32(t2, sn, f(coef))
    sn = _fma32(t * t2, sn, t)
    c = _fma32(t2, f(-1 / 3628800), f(1 / 40320))
    for coef in (-1 / 720, 1 / 24, -0.5, 1.0):
        c = _fma32(t2, c, f(coef))
    swap = (q & np.uint64(1)) != 0
    neg_c = ((q ^ (q >> np.uint64(1))) & np.uint64(1)) != 0
    neg_s = (q >> np.uint64(1)) != 0
    cc = np.where(swap, sn, c)
    ss = np.where(swap, c, sn)
    return rho * np.where(neg_c, -cc, cc), rho * np.where(neg_s, -ss, ss)


@nb.njit(cache=False, error_model="numpy")
def _box_muller_f32_all(a, b):  # type: ignore[no-untyped-def]
    z0 = np.empty(a.size, np.float32)
    z1 = np.empty(a.size, np.float32)
    for i in range(a.size):
        z0[i], z1[i] = box_muller_f32(a[i], b[i])
    return z0, z1


def test_float32_box_muller_equals_the_64_bit_integer_formulation_bit_for_bit():
    """The 32-bit-lane integer steps (word_plus_one_f32, exponent_mantissa_f32,
    quarter_turn_f32) change no value: every word pair of a grid of edge words (the wrap at
    2³² − 1, the float32 rounding boundaries 2²⁴ ± 1, the quadrant edges) and 200,000 random
    pairs give the numpy reference's float32 bits. Catches a dropped wrap guard (a = 2³² − 1
    would give log 0), a signed/unsigned mix-up in the quadrant, or an off-by-one exponent."""
    rng = np.random.default_rng(5)
    a = np.concatenate([np.repeat(EDGE_WORDS, EDGE_WORDS.size),
                        rng.integers(0, 2**32, 200_000, dtype=np.uint64)])
    b = np.concatenate([np.tile(EDGE_WORDS, EDGE_WORDS.size),
                        rng.integers(0, 2**32, 200_000, dtype=np.uint64)])
    got = _box_muller_f32_all(a, b)
    want = _reference_box_muller_f32(a, b)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.view(np.uint32), w.view(np.uint32))
    assert np.isfinite(got[0]).all() and np.abs(got[0]).max() < 6.67


_PROBE = """
import numba as nb
from dynopt.backends.numba.intrinsics import prefer_512_bit_vectors

@nb.njit(cache=False)
def f(x):
    prefer_512_bit_vectors()
    return x + 1

f(1)
print('"prefer-vector-width"="512"' in next(iter(f.inspect_llvm().values())))
"""


def _run_with(width: str | None, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DYNOPT_VECTOR_WIDTH"}
    if width is not None:
        env["DYNOPT_VECTOR_WIDTH"] = width
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_vector_width_setting_switches_the_hint_and_the_cache_key():
    """DYNOPT_VECTOR_WIDTH=256 drops the attribute, and selects another cache directory (so
    kernels compiled with the hint are not reused without it); a bad value is refused with a
    message naming the variable and the value."""
    on = _run_with(None, _PROBE)
    off = _run_with("256", _PROBE)
    assert on.stdout.strip().splitlines()[-1] == "True", on.stderr
    assert off.stdout.strip().splitlines()[-1] == "False", off.stderr
    key = "from dynopt.backends.numba.cache import cache_key; print(cache_key())"
    assert _run_with("256", key).stdout != _run_with("512", key).stdout
    bad = _run_with("1024", "import dynopt.backends.numba.intrinsics")
    assert bad.returncode != 0 and "DYNOPT_VECTOR_WIDTH must be 256 or 512, got '1024'" in bad.stderr
