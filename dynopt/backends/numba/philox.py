r"""Counter-based random numbers for the fused kernels: Philox-4x32-10 and vectorizable transforms.

Why counter-based: a normal is a pure function of ``(seed, chain, index)``, so results do not
depend on the number of threads, on how a run is chunked (progress bars, resume) or on the block
size, and a state needs no generator to save: ``(seed, step)`` is the whole RNG state.

Why custom transforms: without Intel SVML, numba cannot vectorize ``log``/``cos``, and
``np.random`` inside ``prange`` runs at ~70 M normals/s here (design.md §4). The Box–Muller
transform below uses only arithmetic, bit casts and ``sqrt``: a log from the float exponent plus
an atanh series (relative error ≤ 2e-15) and sin/cos from the top two bits of a 32-bit word
(quadrant) plus Taylor polynomials on [−π/4, π/4] (absolute error ≤ 3e-14). LLVM vectorizes it
(512-bit vectors where the CPU has them: :func:`fill_lanes` asks for them with
:func:`.intrinsics.prefer_512_bit_vectors`), measured ~0.9 G normals/s per core in float64.

Philox-4x32-10 (Salmon, Moraes, Dror, Shaw, SC'11, "Parallel random numbers: as easy as 1, 2,
3") maps a 128-bit counter and a 64-bit key to four 32-bit words; it passes BigCrush. Counter
layout used by dynopt: ``(chain, stream, call_lo, call_hi)``; key = the 64-bit seed. Call ``k``
of a chain yields that chain's normals ``4k .. 4k+3``. Streams: 0 the step noise of schemes
with one noise op per step, 16 + k that of schemes with k ≠ 1 (so a run resumed with another
scheme never re-reads normals), 1 initial momenta, 2 initial extras, 3 BBI bounces, 4 event
bounces, 5 the rotation noise of the ECDSep optimizer on CPU
(:data:`dynopt.optim.ecd_sep.ROTATION_STREAM`; counter ``(call, 5, step_lo, step_hi)``: the
call is the element's position in the flat bucket, in calls of four normals, and the step the
optimizer's step counter; layout in :mod:`.fill_tensor`). (The fused optimizer kernels key
their own counters by tensor, :mod:`.segment_kernel`.)

Float32 variants (:func:`box_muller_f32`, :func:`discrete_f32`) do the same transforms in single
precision with twice the SIMD width. For the same Philox words they return the float64 values to
within 2.5e-4 absolute: the uniform is rounded to 24 bits, which moves ρ by up to about 2⁻²⁵/ρ
and so only matters for small |z|. The worst case is the top 2⁷ of the 2³² words, whose float32
uniform rounds to 1, so ρ = 0 where the float64 transform gives up to 2⁻¹² ≈ 2.44e-4 (odds
3·10⁻⁸ per normal). Where |z| > 1 the difference is below 1e-6 (measured on 2·10⁷ random draws:
largest 3.7e-5, largest for |z| > 1e-3 2.4e-5, for |z| > 1 6.3e-7).

The float32 polynomials are evaluated with fused multiply-adds (:func:`.intrinsics.fma`, one
rounding each): LLVM does not contract a multiply and an add without fast-math flags, and the
transform took 0.53 ns per normal and core with them separate, 0.45 fused (AMD EPYC,
``python benchmarks/noise_generators.py``).

Which transform a kernel uses is the noise kind (:data:`NOISE_KINDS`): ``"gaussian"`` (the
default) computes every normal with the float32 transform, also in float64 kernels, which
widen it; ``"gaussian-f64"`` uses the float64 transform in float64 kernels (float32 kernels have
only the one). The float32 transform is 4–5× cheaper (docs/benchmarks.md, "What the kernels'
noise costs"), which made the float64 ensemble kernel 1.3–1.4× faster; both draw from the same
words, and no statistic of the invariant-measure tests can tell them apart.

Uniforms have 32 bits: u₁ ∈ (0, 1] in steps of 2⁻³², so |z| ≤ 6.66; the mass of a standard
normal beyond that (3e-11) is never produced.

The optional *discrete* noise takes ±√3 with probability 1/6 each and 0 with probability 2/3:
it matches the Gaussian moments up to order five, enough for weak order two (Milstein &
Tretyakov, *Stochastic Numerics for Mathematical Physics*, §2.2), at a fraction of the cost.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np
from numba import types

from .cache import CACHE
from .intrinsics import (
    exponent_mantissa_f32,
    f64_as_u64,
    fma,
    prefer_512_bit_vectors,
    quarter_turn_f32,
    u64_as_f64,
    word_plus_one_f32,
)

__all__ = ["DISCRETE", "FILL_FN", "FILL_SIG", "GAUSSIAN", "GAUSSIAN_F64", "NOISE_KINDS",
           "box_muller", "box_muller_f32", "discrete", "discrete_f32", "fill_for", "fill_lanes",
           "fill_with", "normals_for", "philox4x32"]

#: Noise kinds of the kernels: normals by the float32 transform (widened in float64 kernels),
#: the three-point discrete variable, normals by the float64 transform.
GAUSSIAN = 0
DISCRETE = 1
GAUSSIAN_F64 = 2
#: The user's ``noise=`` names and their kernel codes.
NOISE_KINDS = {"gaussian": GAUSSIAN, "discrete": DISCRETE, "gaussian-f64": GAUSSIAN_F64}

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_SH32 = np.uint64(32)
_LN2 = math.log(2.0)
_SQRT3 = math.sqrt(3.0)
_ONE_SIXTH = np.uint64(715827883)  # ceil(2**32 / 6)
_ONE_THIRD = np.uint64(1431655766)  # ceil(2**32 / 3)


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def philox4x32(
    c0: np.uint64, c1: np.uint64, c2: np.uint64, c3: np.uint64, k0: np.uint64, k1: np.uint64
) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """Philox-4x32 with 10 rounds; 32-bit words are carried in uint64 values."""
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        h0 = p0 >> _SH32
        h1 = p1 >> _SH32
        c0 = (h1 ^ c1 ^ k0) & _MASK32
        c1 = p1 & _MASK32
        c2 = (h0 ^ c3 ^ k1) & _MASK32
        c3 = p0 & _MASK32
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _log_unit(b: np.uint64) -> float:
    """log(b · 2⁻³²) for b in [1, 2³²], vectorizable."""
    x = np.float64(b) * 2.0**-32
    bits = f64_as_u64(x)
    e = np.float64(np.int64(bits >> np.uint64(52)) - 1023)
    m = u64_as_f64((bits & np.uint64(0x000FFFFFFFFFFFFF)) | np.uint64(0x3FF0000000000000))
    big = np.float64(m > 1.4142135623730951)
    m = m * (1.0 - 0.5 * big)
    e = e + big
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    poly = 1.0 / 15.0 + s2 * (1.0 / 17.0)
    poly = 1.0 / 13.0 + s2 * poly
    poly = 1.0 / 11.0 + s2 * poly
    poly = 1.0 / 9.0 + s2 * poly
    poly = 1.0 / 7.0 + s2 * poly
    poly = 1.0 / 5.0 + s2 * poly
    poly = 1.0 / 3.0 + s2 * poly
    poly = 1.0 + s2 * poly
    return e * _LN2 + 2.0 * s * poly


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _cos_sin_uniform(k: np.uint64) -> tuple[float, float]:
    """(cos φ, sin φ) for φ uniform on the circle, from a 32-bit word (quadrant + polynomial)."""
    quadrant = k >> np.uint64(30)
    r = np.float64(k & np.uint64(0x3FFFFFFF)) * 2.0**-30
    t = (r - 0.5) * 1.5707963267948966
    t2 = t * t
    s = t * (1.0 + t2 * (-1.0 / 6.0 + t2 * (1.0 / 120.0 + t2 * (-1.0 / 5040.0 + t2 * (
        1.0 / 362880.0 + t2 * (-1.0 / 39916800.0 + t2 * (1.0 / 6227020800.0)))))))
    c = 1.0 + t2 * (-0.5 + t2 * (1.0 / 24.0 + t2 * (-1.0 / 720.0 + t2 * (1.0 / 40320.0 + t2 * (
        -1.0 / 3628800.0 + t2 * (1.0 / 479001600.0 + t2 * (-1.0 / 87178291200.0)))))))
    swap = np.float64(quadrant & np.uint64(1))
    sign_c = 1.0 - 2.0 * np.float64((quadrant ^ (quadrant >> np.uint64(1))) & np.uint64(1))
    sign_s = 1.0 - 2.0 * np.float64(quadrant >> np.uint64(1))
    return sign_c * (c + swap * (s - c)), sign_s * (s + swap * (c - s))


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _box_muller(a: np.uint64, b: np.uint64) -> tuple[float, float]:
    rho = np.sqrt(-2.0 * _log_unit(a + np.uint64(1)))
    c, s = _cos_sin_uniform(b)
    return rho * c, rho * s


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _discrete(a: np.uint64) -> float:
    return _SQRT3 * (np.float64(a < _ONE_SIXTH) - np.float64((a >= _ONE_SIXTH) & (a < _ONE_THIRD)))


# --- float32 variants ------------------------------------------------------------------------
_F32_LN2 = np.float32(_LN2)
_F32_SQRT2 = np.float32(math.sqrt(2.0))
_F32_2M32 = np.float32(2.0**-32)
_F32_HALF_PI = np.float32(math.pi / 2.0)
_F32_SQRT3 = np.float32(_SQRT3)
_F32 = np.float32


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _log_unit_f32(a: np.uint64) -> np.float32:
    """log((a + 1)·2⁻³²) in float32 for a 32-bit word a (as the float64 path), vectorizable.

    The integer steps run on 32-bit lanes (:func:`.intrinsics.word_plus_one_f32`,
    :func:`.intrinsics.exponent_mantissa_f32`), so the whole transform vectorizes at the
    float32 width; the values are those of the 64-bit-integer formulation, bit for bit.
    """
    x = word_plus_one_f32(a) * _F32_2M32
    e, m = exponent_mantissa_f32(x)
    big = m > _F32_SQRT2
    m = np.float32(0.5) * m if big else m
    e = e + np.float32(1.0) if big else e
    s = (m - _F32(1.0)) / (m + _F32(1.0))
    s2 = s * s
    poly = fma(s2, _F32(1.0 / 9.0), _F32(1.0 / 7.0))
    poly = fma(s2, poly, _F32(1.0 / 5.0))
    poly = fma(s2, poly, _F32(1.0 / 3.0))
    poly = fma(s2, poly, _F32(1.0))
    return fma(e, _F32_LN2, (s + s) * poly)


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _cos_sin_uniform_f32(k: np.uint64) -> tuple[np.float32, np.float32]:
    """(cos φ, sin φ) in float32 for φ uniform on the circle, from a 32-bit word."""
    r, swap, neg_c, neg_s = quarter_turn_f32(k)
    t = (r - _F32(0.5)) * _F32_HALF_PI
    t2 = t * t
    s = fma(t2, _F32(1.0 / 362880.0), _F32(-1.0 / 5040.0))
    s = fma(t2, s, _F32(1.0 / 120.0))
    s = fma(t2, s, _F32(-1.0 / 6.0))
    s = fma(t * t2, s, t)
    c = fma(t2, _F32(-1.0 / 3628800.0), _F32(1.0 / 40320.0))
    c = fma(t2, c, _F32(-1.0 / 720.0))
    c = fma(t2, c, _F32(1.0 / 24.0))
    c = fma(t2, c, _F32(-0.5))
    c = fma(t2, c, _F32(1.0))
    cc = s if swap else c
    ss = c if swap else s
    return (-cc if neg_c else cc), (-ss if neg_s else ss)


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def box_muller_f32(a: np.uint64, b: np.uint64) -> tuple[np.float32, np.float32]:
    """Two float32 standard normals from two 32-bit words (Box–Muller)."""
    rho = np.sqrt(_F32(-2.0) * _log_unit_f32(a))
    c, s = _cos_sin_uniform_f32(b)
    return rho * c, rho * s


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def discrete_f32(a: np.uint64) -> np.float32:
    """The three-point variable (±√3 w.p. 1/6 each, else 0) in float32 from a 32-bit word."""
    return _F32_SQRT3 * (np.float32(a < _ONE_SIXTH) - np.float32((a >= _ONE_SIXTH)
                                                                 & (a < _ONE_THIRD)))


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _box_muller_lanes(Z, U, r, n_lanes, transform):  # type: ignore[no-untyped-def]
    """``Z[r + j, l]`` for j = 0..3 from the words ``U[:, l]`` by ``transform`` on the word
    pairs (0, 1) and (2, 3); one loop per pair, which LLVM vectorizes over the lanes."""
    for lane in range(n_lanes):
        z0, z1 = transform(U[0, lane], U[1, lane])
        Z[r, lane] = z0
        Z[r + 1, lane] = z1
    for lane in range(n_lanes):
        z2, z3 = transform(U[2, lane], U[3, lane])
        Z[r + 2, lane] = z2
        Z[r + 3, lane] = z3


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def fill_with(Z, U, chain0, n_lanes, call_first, n_calls, stream, k0, k1, kind, transform):  # type: ignore[no-untyped-def]
    """Write normals ``4·call_first ..`` of chains ``chain0 .. chain0+n_lanes-1`` into ``Z``.

    ``Z[4c + j, l]`` receives normal ``4(call_first + c) + j`` of chain ``chain0 + l``: the
    discrete variable if ``kind`` is :data:`DISCRETE`, else Box–Muller by ``transform``. ``U``
    is a ``(4, n_lanes)`` uint64 scratch array: the bits and the transform run as separate lane
    loops, which LLVM vectorizes better than one fused loop. Compiled into :func:`fill_lanes`
    (the float32 transform) and :func:`.fill_f64.fill_lanes_f64` (the float64 one).
    """
    prefer_512_bit_vectors()
    s = np.uint64(stream)
    for c in range(n_calls):
        call = np.uint64(call_first + c)
        lo = call & _MASK32
        hi = call >> _SH32
        r = 4 * c
        for lane in range(n_lanes):
            a, b, cc, d = philox4x32(np.uint64(chain0 + lane), s, lo, hi, k0, k1)
            U[0, lane] = a
            U[1, lane] = b
            U[2, lane] = cc
            U[3, lane] = d
        if kind != DISCRETE:
            _box_muller_lanes(Z, U, r, n_lanes, transform)
        else:
            for j in range(4):
                for lane in range(n_lanes):
                    Z[r + j, lane] = _discrete(U[j, lane])


#: ``fill(Z, U, chain0, n_lanes, call_first, n_calls, stream, key0, key1, kind)``: the noise
#: fill of the ensemble kernel, which takes it as a function pointer (:func:`fill_for`).
FILL_SIG = types.void(types.float64[:, ::1], types.uint64[:, ::1], types.int64, types.int64,
                      types.int64, types.int64, types.int64, types.uint64, types.uint64,
                      types.int64)
FILL_FN = types.FunctionType(FILL_SIG)


@nb.njit(FILL_SIG, cache=CACHE, error_model="numpy")
def fill_lanes(Z, U, chain0, n_lanes, call_first, n_calls, stream, k0, k1, kind):  # type: ignore[no-untyped-def]
    """:func:`fill_with` the float32 transform: kinds :data:`GAUSSIAN` and :data:`DISCRETE`."""
    fill_with(Z, U, chain0, n_lanes, call_first, n_calls, stream, k0, k1, kind, box_muller_f32)


def fill_for(kind: int) -> Any:
    """The fill function of noise kind ``kind``: :func:`fill_lanes`, or for
    :data:`GAUSSIAN_F64` :func:`.fill_f64.fill_lanes_f64`, compiled on its first import (so the
    ensemble kernel, which calls the fill through a pointer, does not compile the float64
    transform unless a run asks for it: 1–2 s of the first run on an empty cache)."""
    if kind == GAUSSIAN_F64:
        from .fill_f64 import fill_lanes_f64

        return fill_lanes_f64
    if kind not in (GAUSSIAN, DISCRETE):
        raise ValueError(f"unknown noise kind code {kind!r}; expected one of "
                         f"{sorted(NOISE_KINDS.values())}")
    return fill_lanes


def split_seed(seed: int) -> tuple[np.uint64, np.uint64]:
    """The two 32-bit key words of a 64-bit seed."""
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(s & 0xFFFFFFFF), np.uint64(s >> 32)


def normals_for(
    seed: int, n_chains: int, n_per_chain: int, *, stream: int = 0, kind: int = GAUSSIAN,
    first: int = 0,
) -> np.ndarray:
    """Normals ``first .. first+n_per_chain-1`` of each chain's stream, shape (chains, n).

    The same numbers the kernels consume; used for initial conditions and by the tests.
    """
    k0, k1 = split_seed(seed)
    call_first = first // 4
    offset = first - 4 * call_first
    n_calls = (offset + n_per_chain + 3) // 4
    Z = np.empty((4 * n_calls, max(n_chains, 1)))
    U = np.empty((4, max(n_chains, 1)), dtype=np.uint64)
    fill_for(kind)(Z, U, 0, n_chains, call_first, n_calls, stream, k0, k1, kind)
    return np.ascontiguousarray(Z[offset:offset + n_per_chain, :n_chains].T)


# --- public aliases ------------------------------------------------------------------------------
box_muller = _box_muller
discrete = _discrete
