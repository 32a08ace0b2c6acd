r"""The fused CPU kernel of the optimizers: a segment of elementwise ops in one pass over memory.

An optimizer step is a list of :mod:`dynopt.program` ops. The elementwise ones (drift, kick,
Ornstein–Uhlenbeck, noise, friction scalings, overdamped steps) are run here for every element of
every parameter tensor of a (device, dtype) bucket in ONE parallel pass: the element range is cut
into blocks of :data:`BLOCK` elements, and for each block every op runs as a vectorized loop over
data that stays in L1, so each of θ, p, ∇L (and the LM noise memory) is read and written once per
segment. Reductions (the thermostat's Σp², see :mod:`dynopt.optim.executor`) end a segment: the
kernel then also returns per-block partial sums, in float64, in a fixed order.

Noise is generated inside the kernel with Philox-4x32-10 (:mod:`.philox`), so a normal is a pure
function of its counter and nothing depends on the number of threads or on the block schedule.
Counter layout (key = the optimizer's 64-bit seed):

=========  ==================================================================================
word       meaning
=========  ==================================================================================
c0         Philox call index within the tensor: ``b0/4 + j``
c1         the tensor's stream id (its position in the optimizer's parameter list)
c2, c3     low and high 32 bits of ``draw = 16·step + slot`` (``slot`` = index of the noise op
           among the step's noise ops; slot 15 is reserved for initial-state draws)
=========  ==================================================================================

Within a block that starts at element ``b0`` (a multiple of BLOCK) and holds ``n`` elements, with
``K = ⌈n/4⌉``, element ``b0 + r·K + j`` (``0 ≤ j < K``, ``0 ≤ r < 4``) takes word ``r`` of call
``b0/4 + j`` (Box–Muller pairs words (0, 1) and (2, 3)). So the same (seed, tensor, step, slot)
always gives the same noise, whatever the thread count.

Discrete noise (``kind=1``) needs far fewer random bits, so each 32-bit word gives two 16-bit
fields: with ``K = ⌈n/8⌉``, element ``b0 + r·K + j`` (``0 ≤ r < 8``) takes field ``r mod 2`` (low
half first) of word ``⌊r/2⌋`` of call ``b0/8 + j``. A field u gives +a if u < 10923, −a if
10923 ≤ u < 21846, else 0, with a² = 2¹⁶/(2·10923): odd moments vanish, E z² = 1 exactly and
E z⁴ = a² = 2.99991 (Gaussian: 3; the exact three-point rule ±√3 w.p. 1/6 has 3). This is half
the Philox work of the 32-bit rule, which is what makes discrete noise nearly free.

Rounding mirrors torch's CPU kernels (``x.add_(y, alpha=s)`` is ``fma(y, s, x)``, coefficients
are rounded to the tensor dtype first), so with zero noise amplitude the kernel reproduces the
torch paths bit for bit.

Speed. A Gaussian step is the noise arithmetic (about 1 ns per normal and core) plus one pass
over memory; on its own a core cannot do both at once, because while it computes normals it
issues no loads. So full blocks fill their noise in chunks of :data:`CHUNK` iterations, and
after each chunk prefetch a few cache lines of the block that comes next
(:func:`_prefetch_lines`): the next block's θ, p and ∇L arrive while this block's normals are
computed. The block function also asks LLVM for 512-bit vectors
(:func:`.intrinsics.prefer_512_bit_vectors`; X86 otherwise prefers 256-bit ones on AVX-512
CPUs), and the float32 transform does its integer steps on 32-bit lanes
(:func:`.philox.box_muller_f32`). Measured on 20M float32 parameters, 2 threads,
``nonfinite='ignore'``: 23.4 ms before, 16.6 with the prefetches, 14.9 with 512-bit vectors too,
12.2–13.0 with the 32-bit-lane transform and prefetches during the Philox loop as well
(``torch.optim.SGD(momentum=0.9, fused=True)``: 7.4–8.5 ms; Intel Xeon). On the AMD EPYC of
later rounds the noise's arithmetic does not overlap the memory traffic, prefetches or not
(docs/benchmarks.md, third and fourth rounds). None of these changes a value:
``tests/test_optim_noise_layout.py`` compares every element with the documented layout; the
float32 transform's fused multiply-adds (issue 14's fourth round) did change its values, by
about an ulp.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

from ...program import OpCode, noise_counts, skippable_amplitudes
from .block_memory import LINE, next_block
from .cache import CACHE
from .intrinsics import address_as_pointer, fma, prefer_512_bit_vectors, prefetch
from .philox import DISCRETE, GAUSSIAN_F64, NOISE_KINDS, box_muller, box_muller_f32, philox4x32

__all__ = ["BLOCK", "DISCRETE_VALUE", "INIT_SLOT", "LM_INIT", "NOISE_KINDS", "SCALE",
           "SERIAL_BELOW", "WORKSPACE", "run_segment", "run_segment_serial"]

#: Elements per block (a multiple of 4): the unit of the noise layout and of the op loops.
BLOCK = 2048
#: Iterations of the noise transform between two doses of prefetches (:func:`_prefetch_lines`).
#: Measured (float32 Langevin, 20M, unchecked): 16 → 14.7 ms, 32 → 12.8–13.3, 64 → 12.9–13.6;
#: 8 → 55 ms, because a chunk shorter than two vectors is not vectorized.
CHUNK = 32
#: Columns of the per-thread workspace ``zbuf``: BLOCK normals, then BLOCK Philox words.
WORKSPACE = 2 * BLOCK
#: Buckets with fewer elements run serially (a parallel launch costs more than the work).
SERIAL_BELOW = 1 << 16
#: Noise slot reserved for initial-state draws (the LM noise memory).
INIT_SLOT = 15
#: Kernel-only codes: p ← c₀ p (friction and Nosé–Hoover-chain scalings), and R_prev ← R.
SCALE = 100
LM_INIT = 101

_DRIFT = int(OpCode.DRIFT)
_KICK = int(OpCode.KICK)
_OU = int(OpCode.OU)
_GRAD_STEP = int(OpCode.GRAD_STEP)
_WIENER = int(OpCode.WIENER)
_LM_NOISE = int(OpCode.LM_NOISE)
_ADD_NOISE = int(OpCode.ADD_NOISE)
_OU_XI = int(OpCode.OU_XI)
#: Codes that read/write the momentum, the gradient, the LM noise memory (checked by callers).
MOMENTUM_CODES = frozenset({_DRIFT, _KICK, _OU, _ADD_NOISE, _OU_XI, SCALE})
GRADIENT_CODES = frozenset({_KICK, _GRAD_STEP})
PREV_CODES = frozenset({_LM_NOISE, LM_INIT})
#: Whether an op code draws normals: the op table's counts (:data:`dynopt.program.OPS`; each
#: fused op draws at most one vector), plus LM_INIT; indexable by every code above.
_DRAWS = np.zeros(LM_INIT + 1, dtype=np.int64)
_DRAWS[:max(OpCode) + 1] = noise_counts()
_DRAWS[LM_INIT] = 1
#: Which coefficient of a drawing op is its noise amplitude, or −1 where the draw is needed
#: whatever the amplitude (:func:`dynopt.program.skippable_amplitudes`; LM_INIT stores its draw).
#: An op whose amplitude is 0 for a tensor skips the draw there (a temperature annealed to 0 costs
#: what SGD does); its update is the noise-free one, so the values equal the drawn ones (up to
#: the sign of a zero).
_AMPLITUDE = np.full(LM_INIT + 1, -1, dtype=np.int64)
_AMPLITUDE[:max(OpCode) + 1] = skippable_amplitudes()
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK16 = np.uint64(0xFFFF)
_SH16 = np.uint64(16)
#: Discrete noise from 16-bit fields: P(+a) = P(−a) = 10923/2¹⁶, a² = 2¹⁶/(2·10923).
_P16 = np.uint64(10923)
_P16X2 = np.uint64(2 * 10923)
DISCRETE_VALUE = float(np.sqrt(65536.0 / (2.0 * 10923.0)))
_A64 = np.float64(DISCRETE_VALUE)
_A32 = np.float32(DISCRETE_VALUE)


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _discrete16(u: np.uint64) -> float:
    """±a with probability 10923/2¹⁶ each, else 0, from a 16-bit field (E z² = 1 exactly)."""
    return _A64 * (np.float64(u < _P16) - np.float64((u >= _P16) & (u < _P16X2)))


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _discrete16_f32(u: np.uint64) -> np.float32:
    """Float32 version of :func:`_discrete16`."""
    return _A32 * (np.float32(u < _P16) - np.float32((u >= _P16) & (u < _P16X2)))


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _normals(Z, K, j0, j1, call0, s, lo, hi, key0, key1, transform):  # type: ignore[no-untyped-def]
    """Normals of Philox calls ``call0 + j``, j in [j0, j1): word r of call j gives element
    r·K + j (``transform``, Box–Muller in float32 or float64, on the word pairs (0, 1) and
    (2, 3)); a float64 Z receives the float32 transform's values widened."""
    for j in range(j0, j1):
        a, b, c, d = philox4x32(np.uint64(call0 + j) & _MASK32, s, lo, hi, key0, key1)
        z0, z1 = transform(a, b)
        z2, z3 = transform(c, d)
        Z[j] = z0
        Z[K + j] = z1
        Z[2 * K + j] = z2
        Z[3 * K + j] = z3


def _fill_noise(Z, W, n, call0, stream, draw, key0, key1, kind, ahead):  # type: ignore[no-untyped-def]
    """Write the block's ``n`` normals into ``Z[:n]`` (dtype-specific, see the overload).

    ``W`` is a word scratch of ``BLOCK`` unsigned integers of Z's width (the discrete rule's).
    Gaussian normals come from one loop doing the Philox words and the transform
    (:func:`_normals`): the float32 transform (noise ``"gaussian"``, every dtype; a float64 Z
    receives the widened values) or the float64 one (``"gaussian-f64"`` in float64). Until
    issue 14's fourth round the float32 path ran words and transform as two loops, since numba
    typed its integer steps as 64-bit and a fused loop ran at half the SIMD width (16.1 against
    21.4 ms on 20M normals); with the transform's integer steps on 32-bit lanes
    (:func:`.philox.box_muller_f32`) the two layouts measured within noise of each other in the
    optimizer step (AMD EPYC), and one loop serves both dtypes. Same values either way.

    ``ahead`` is the next block's memory (:func:`_ahead`): on full blocks the Gaussian loops
    run in chunks of :data:`CHUNK` iterations and each chunk ends with a few prefetches of
    those cache lines, so the next block's loads overlap this block's arithmetic (see
    :func:`_prefetch_lines`). Values do not depend on it.
    """
    raise NotImplementedError  # pragma: no cover - replaced by the overload inside numba


@overload(_fill_noise)
def _fill_noise_impl(Z, W, n, call0, stream, draw, key0, key1, kind, ahead):  # type: ignore[no-untyped-def]
    def impl(Z, W, n, call0, stream, draw, key0, key1, kind, ahead):  # type: ignore[no-untyped-def]
        if n == BLOCK:  # a literal trip count: tighter loops, and room for the prefetches
            _fill_body(Z, W, BLOCK, call0, stream, draw, key0, key1, kind, ahead)
        else:  # a tensor's ragged last block
            _fill_body(Z, W, n, call0, stream, draw, key0, key1, kind, (0, 0, 0, 0, 0))

    return impl


def _fill_body(Z, W, n, call0, stream, draw, key0, key1, kind, ahead):  # type: ignore[no-untyped-def]
    """:func:`_fill_noise` for a given ``n`` (see the overload).

    Compiled as its own function, not inlined: inlining overloads made numba's type inference
    of the block function take 27 s instead of 9 s (the first optimizer step on an empty cache).
    ``prefer_literal=True`` compiles the full-block call with ``n`` = BLOCK as a constant.
    """
    raise NotImplementedError  # pragma: no cover - replaced by the overload inside numba


@overload(_fill_body, prefer_literal=True)
def _fill_body_impl(Z, W, n, call0, stream, draw, key0, key1, kind, ahead):  # type: ignore[no-untyped-def]
    single = Z.dtype == types.float32
    dc = _discrete16_f32 if single else _discrete16
    word = np.uint32 if single else np.uint64

    def impl(Z, W, n, call0, stream, draw, key0, key1, kind, ahead):  # type: ignore[no-untyped-def]
        prefer_512_bit_vectors()  # its own function: the block's attribute does not reach it
        lo = draw & _MASK32
        hi = draw >> np.uint64(32)
        s = np.uint64(stream)
        if kind != DISCRETE:
            wide = kind == GAUSSIAN_F64 and not single  # the float64 transform, else float32
            K = (n + 3) // 4
            full = K % CHUNK == 0  # full blocks: a prefetch dose after every chunk
            per = _lines_per_chunk(ahead, K // CHUNK) if full else 0
            size = CHUNK if full else K
            for j0 in range(0, K, size):
                if wide:
                    _normals(Z, K, j0, j0 + size, call0, s, lo, hi, key0, key1, box_muller)
                else:
                    _normals(Z, K, j0, j0 + size, call0, s, lo, hi, key0, key1, box_muller_f32)
                if full:
                    _prefetch_lines(ahead, (j0 // CHUNK) * per, per)
        else:
            # word q of call call0/2 + j goes to W[q·K8 + j]; its low and high 16-bit fields
            # make the values of elements 2q·K8 + j and (2q + 1)·K8 + j
            K8 = (n + 7) // 8
            c8 = call0 // 2
            for j in range(K8):
                a, b, c, d = philox4x32(np.uint64(c8 + j) & _MASK32, s, lo, hi, key0, key1)
                W[j] = word(a)
                W[K8 + j] = word(b)
                W[2 * K8 + j] = word(c)
                W[3 * K8 + j] = word(d)
            for q in range(4):
                for j in range(q * K8, (q + 1) * K8):
                    u = np.uint64(W[j])
                    Z[j + q * K8] = dc(u & _MASK16)
                    Z[j + (q + 1) * K8] = dc(u >> _SH16)

    return impl


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _ahead(w, work, numel, th_ptr, p_ptr, g_ptr, prev_ptr, itemsize):  # type: ignore[no-untyped-def]
    """The next block's memory (:func:`.block_memory.next_block`): addresses of its θ, p, ∇L
    and LM memory (0 where the tensor has none) and its cache lines per array."""
    ti, off, lines = next_block(w, work, numel, itemsize)

    def at(ptr):  # type: ignore[no-untyped-def]
        return ptr + off if ptr != 0 else 0

    return (at(th_ptr[ti]), at(p_ptr[ti]), at(g_ptr[ti]), at(prev_ptr[ti]), lines)


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _lines_per_chunk(ahead, chunks):  # type: ignore[no-untyped-def]
    """Cache lines of each array to prefetch after each of ``chunks`` chunks."""
    return (ahead[4] + chunks - 1) // chunks


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _prefetch_lines(ahead, first, count):  # type: ignore[no-untyped-def]
    """Prefetch lines ``[first, first + count)`` of each array in ``ahead`` (θ, p, LM memory
    for writing, ∇L for reading).

    Why in small doses: one core has only ~16 outstanding cache misses, so a burst of a whole
    block's 384 prefetches stalls the core until most have landed (measured: no gain). A few
    lines after every chunk of arithmetic keep the memory busy while the core computes: the
    float32 Langevin step on 20M parameters fell from 23.4 to 16.6 ms (2 threads). Discrete
    noise does not prefetch: its fill is too short to hide a block's loads (measured: slower).
    """
    th, p, g, prev, lines = ahead
    for line in range(first, min(first + count, lines)):
        off = LINE * line
        prefetch(th + off, True)
        if g != 0:
            prefetch(g + off, False)
        if p != 0:
            prefetch(p + off, True)
        if prev != 0:
            prefetch(prev + off, True)


def _noise_buffers(scratch):  # type: ignore[no-untyped-def]
    """(normals, words): the two halves of a thread's workspace, the second as unsigned words."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload inside numba


@overload(_noise_buffers, inline="always")
def _noise_buffers_impl(scratch):  # type: ignore[no-untyped-def]
    word = np.uint32 if scratch.dtype == types.float32 else np.uint64

    def impl(scratch):  # type: ignore[no-untyped-def]
        return scratch[:BLOCK], scratch[BLOCK:WORKSPACE].view(word)

    return impl


@nb.njit(cache=CACHE, error_model="numpy")
def _block(  # type: ignore[no-untyped-def]
    w, like, codes, slots, coef, th_ptr, p_ptr, g_ptr, prev_ptr, numel, stream, work, key0,
    key1, step, kind, want_k2, k2_out, scratch,
):
    """Run every op on block ``w`` of the work table (see :func:`run_segment`).

    ``scratch`` is this thread's ``2·BLOCK`` workspace: the normals, then the Philox words.
    """
    prefer_512_bit_vectors()
    n_ops = codes.shape[0]
    Z, W = _noise_buffers(scratch)
    ahead = _ahead(w, work, numel, th_ptr, p_ptr, g_ptr, prev_ptr, like.itemsize)
    ti = work[w, 0]
    b0 = work[w, 1]
    nt = numel[ti]
    n = min(BLOCK, nt - b0)
    th = nb.carray(address_as_pointer(th_ptr[ti], like), nt)[b0:b0 + n]
    p = nb.carray(address_as_pointer(p_ptr[ti], like), nt if p_ptr[ti] != 0 else 0)[b0:b0 + n]
    g = nb.carray(address_as_pointer(g_ptr[ti], like), nt if g_ptr[ti] != 0 else 0)[b0:b0 + n]
    r = nb.carray(address_as_pointer(prev_ptr[ti], like), nt if prev_ptr[ti] != 0 else 0)[
        b0:b0 + n]
    for k in range(n_ops):
        code = codes[k]
        c0 = coef[k, ti, 0]
        c1 = coef[k, ti, 1]
        quiet = False
        if _DRAWS[code]:
            field = _AMPLITUDE[code]
            quiet = field >= 0 and coef[k, ti, field] == 0
            if not quiet:
                draw = np.uint64(step) * np.uint64(16) + np.uint64(slots[k])
                _fill_noise(Z, W, n, b0 // 4, stream[ti], draw, key0, key1, kind, ahead)
        if code == _DRIFT:
            for e in range(n):
                th[e] = fma(p[e], c0, th[e])
        elif code == _KICK:
            for e in range(n):
                p[e] = fma(g[e], c0, p[e])
        elif code == _OU:
            if quiet:
                for e in range(n):
                    p[e] = c0 * p[e]
            else:
                for e in range(n):
                    p[e] = fma(Z[e], c1, c0 * p[e])
        elif code == _GRAD_STEP:
            for e in range(n):
                th[e] = fma(g[e], c0, th[e])
        elif code == _WIENER and not quiet:
            for e in range(n):
                th[e] = fma(Z[e], c0, th[e])
        elif code == _LM_NOISE:
            for e in range(n):
                th[e] = fma(r[e] + Z[e], c0, th[e])
                r[e] = Z[e]
        elif code == _ADD_NOISE and not quiet:
            for e in range(n):
                p[e] = fma(Z[e], c0, p[e])
        elif code == _OU_XI:
            if quiet:
                for e in range(n):
                    p[e] = c0 * p[e]
            else:
                for e in range(n):
                    p[e] = c0 * p[e] + c1 * Z[e]
        elif code == SCALE:
            for e in range(n):
                p[e] = c0 * p[e]
        elif code == LM_INIT:
            for e in range(n):
                r[e] = Z[e]
    if want_k2:  # Σp² in float64 with 8 independent partial sums (so it vectorizes)
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        n8 = n - n % 8
        for e in range(0, n8, 8):
            v0, v1 = np.float64(p[e]), np.float64(p[e + 1])
            v2, v3 = np.float64(p[e + 2]), np.float64(p[e + 3])
            v4, v5 = np.float64(p[e + 4]), np.float64(p[e + 5])
            v6, v7 = np.float64(p[e + 6]), np.float64(p[e + 7])
            a0 += v0 * v0
            a1 += v1 * v1
            a2 += v2 * v2
            a3 += v3 * v3
            a4 += v4 * v4
            a5 += v5 * v5
            a6 += v6 * v6
            a7 += v7 * v7
        for e in range(n8, n):
            v = np.float64(p[e])
            a0 += v * v
        k2_out[w] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _check_workspace(zbuf):  # type: ignore[no-untyped-def]
    if zbuf.shape[1] < WORKSPACE:
        raise ValueError("run_segment: zbuf needs WORKSPACE = 2·BLOCK columns per thread")


@nb.njit(parallel=True, cache=CACHE, error_model="numpy")
def run_segment(  # type: ignore[no-untyped-def]
    like, codes, slots, coef, th_ptr, p_ptr, g_ptr, prev_ptr, numel, stream, work, key0, key1,
    step, kind, want_k2, k2_out, zbuf,
):
    """Run ops ``codes`` over every block listed in ``work``, in parallel over blocks.

    Args:
        like: A 1-element array of the bucket's dtype (float32 or float64): selects the
            specialization and the pointee type of the addresses.
        codes: Op codes (:class:`~dynopt.program.OpCode` values, :data:`SCALE`, :data:`LM_INIT`).
        slots: Noise slot of each op (used by noise ops only).
        coef: ``(n_ops, n_tensors, 2)`` coefficients in the bucket's dtype (see the table in
            :mod:`dynopt.optim.fused`).
        th_ptr, p_ptr, g_ptr, prev_ptr: Data addresses of parameters, momenta, gradients and LM
            noise memories (0 where absent), contiguous, one per tensor.
        numel: Elements per tensor.
        stream: Philox stream id per tensor.
        work: ``(n_blocks, 2)`` rows ``(tensor, first element)``.
        key0, key1: The seed's two 32-bit halves.
        step: The optimizer step (noise counter).
        kind: 0 Gaussian, 1 discrete.
        want_k2: Whether to return Σp² per block (after the last op) in ``k2_out``.
        k2_out: ``(n_blocks,)`` float64 output.
        zbuf: ``(n_threads, WORKSPACE)`` noise workspace in the bucket's dtype (normals, words).
    """
    _check_workspace(zbuf)
    for w in nb.prange(work.shape[0]):
        _block(w, like, codes, slots, coef, th_ptr, p_ptr, g_ptr, prev_ptr, numel, stream, work,
               key0, key1, step, kind, want_k2, k2_out, zbuf[nb.get_thread_id()])


@nb.njit(cache=CACHE, error_model="numpy")
def run_segment_serial(  # type: ignore[no-untyped-def]
    like, codes, slots, coef, th_ptr, p_ptr, g_ptr, prev_ptr, numel, stream, work, key0, key1,
    step, kind, want_k2, k2_out, zbuf,
):
    """:func:`run_segment` on the calling thread (for small models: no thread wake-up)."""
    _check_workspace(zbuf)
    for w in range(work.shape[0]):
        _block(w, like, codes, slots, coef, th_ptr, p_ptr, g_ptr, prev_ptr, numel, stream, work,
               key0, key1, step, kind, want_k2, k2_out, zbuf[0])
