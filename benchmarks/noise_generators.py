"""What the noise of the fused kernels costs, part by part, and the generators weighed (issue 14).

Part 1, one core, a 2048-element block repeated (so the data stays in L1 and only the arithmetic
is timed), ns per 32-bit word or per value:

* counter-based words: dynopt's Philox-4x32-10; the same family with 7 rounds (the fewest that
  pass BigCrush in Salmon et al., SC'11, with no safety margin); Threefry-4x32-20, the family's
  member without multiplications (checked against Random123's known answer); a SplitMix64
  counter hash (one 64-bit output, two words, per counter); per-lane xoshiro256++ streams keyed
  by Philox per block and per-lane xoshiro128++ streams on 32-bit lanes, 256 lanes as in the
  ensemble kernel (the "fast generator keyed by a counter-based hash" option);
* transforms: dynopt's Box–Muller in float32 and float64, the 16-bit discrete rule, and the
  fast path of a 128-layer ziggurat (Marsaglia & Tsang 2000) with the share of words it
  rejects;
* the optimizer kernel's float32 fill (:func:`segment_kernel._fill_noise`: one loop doing
  words and transform) and the same fill as two loops, words then transform (the kernel's
  layout from issue 14's first round to its fourth; same values bit for bit).

Part 2, two threads, 20M float32 elements in 20 tensors through the optimizer kernel
(:func:`dynopt.backends.numba.segment_kernel.run_segment`), ms per pass: an OU op with Gaussian
noise, with discrete noise, with amplitude 0 (draw skipped), and a noise-free scaling (the same
memory traffic).

    python benchmarks/noise_generators.py [--quick] [--update-docs]
"""

from __future__ import annotations

import math
import time

import numba as nb
import numpy as np
from _common import command, markdown_table, parse_args, write_section

from dynopt.backends.numba import segment_kernel as sk
from dynopt.backends.numba.intrinsics import prefer_512_bit_vectors
from dynopt.backends.numba.philox import box_muller, box_muller_f32, philox4x32
from dynopt.program import OpCode

BLOCK = 2048
M32 = np.uint64(0xFFFFFFFF)
_U = np.uint64


def _philox_rounds(rounds: int):  # type: ignore[no-untyped-def]
    """Philox-4x32 with ``rounds`` rounds (the library's function has 10), for the comparison."""

    @nb.njit(inline="always", error_model="numpy")
    def philox(c0, c1, c2, c3, k0, k1):  # type: ignore[no-untyped-def]
        for _ in range(rounds):
            p0 = _U(0xD2511F53) * c0
            p1 = _U(0xCD9E8D57) * c2
            h0 = p0 >> _U(32)
            h1 = p1 >> _U(32)
            c0 = (h1 ^ c1 ^ k0) & M32
            c1 = p1 & M32
            c2 = (h0 ^ c3 ^ k1) & M32
            c3 = p0 & M32
            k0 = (k0 + _U(0x9E3779B9)) & M32
            k1 = (k1 + _U(0xBB67AE85)) & M32
        return c0, c1, c2, c3

    return philox


def _words_kernel(philox):  # type: ignore[no-untyped-def]
    @nb.njit(error_model="numpy")
    def words(W, key):  # type: ignore[no-untyped-def]
        prefer_512_bit_vectors()  # as the kernels do
        K = W.shape[0] // 4
        for j in range(K):
            a, b, c, d = philox(_U(j), _U(3), _U(5), _U(0), key, _U(7))
            W[j] = np.uint32(a)
            W[K + j] = np.uint32(b)
            W[2 * K + j] = np.uint32(c)
            W[3 * K + j] = np.uint32(d)

    return words


@nb.njit(inline="always", error_model="numpy")
def _mix64(z):  # type: ignore[no-untyped-def]
    z = (z ^ (z >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U(27))) * _U(0x94D049BB133111EB)
    return z ^ (z >> _U(31))


@nb.njit(error_model="numpy")
def _splitmix_words(W, key):  # type: ignore[no-untyped-def]
    prefer_512_bit_vectors()  # as the kernels do
    K = W.shape[0] // 2
    for j in range(K):
        x = _mix64(key + _U(j) * _U(0x9E3779B97F4A7C15))
        W[j] = np.uint32(x & M32)
        W[K + j] = np.uint32(x >> _U(32))


@nb.njit(inline="always", error_model="numpy")
def _rotl(x, k):  # type: ignore[no-untyped-def]
    return (x << _U(k)) | (x >> _U(64 - k))


@nb.njit(error_model="numpy")
def _xoshiro_words(W, key):  # type: ignore[no-untyped-def]
    prefer_512_bit_vectors()  # as the kernels do
    lanes = 8
    S = np.empty((4, lanes), dtype=np.uint64)
    for lane in range(lanes):  # each lane's 256-bit state from two Philox calls
        a, b, c, d = philox4x32(_U(2 * lane), _U(3), _U(5), _U(0), key, _U(7))
        S[0, lane] = a | (b << _U(32))
        S[1, lane] = c | (d << _U(32))
        a, b, c, d = philox4x32(_U(2 * lane + 1), _U(3), _U(5), _U(0), key, _U(7))
        S[2, lane] = a | (b << _U(32))
        S[3, lane] = c | (d << _U(32))
    for t in range(W.shape[0] // (2 * lanes)):
        for lane in range(lanes):
            s0, s1, s2, s3 = S[0, lane], S[1, lane], S[2, lane], S[3, lane]
            x = _rotl(s0 + s3, 23) + s0
            W[2 * (t * lanes + lane)] = np.uint32(x & M32)
            W[2 * (t * lanes + lane) + 1] = np.uint32(x >> _U(32))
            tt = s1 << _U(17)
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= tt
            S[0, lane], S[1, lane], S[2, lane], S[3, lane] = s0, s1, s2, _rotl(s3, 45)


#: Threefry-4x32 rotation constants (Salmon et al., SC'11, Table 4), by round mod 8.
_THREEFRY_ROT = ((10, 26), (11, 21), (13, 27), (23, 5), (6, 20), (17, 11), (25, 10), (18, 20))


def _threefry_source(rounds: int) -> str:
    """Source of Threefry-4x32-``rounds`` on uint32 words, its rounds written out (constant
    rotations, so LLVM emits vector rotates): the multiplication-free member of the family."""
    ks = ("k0", "k1", "k2", "k3", "k4")
    lines = ["def threefry(c0, c1, c2, c3, k0, k1, k2, k3):",
             "    k4 = U32(U32(0x1BD11BDA) ^ k0 ^ k1 ^ k2 ^ k3)",
             "    x0, x1, x2, x3 = U32(c0 + k0), U32(c1 + k1), U32(c2 + k2), U32(c3 + k3)"]
    for r in range(rounds):
        a, b = _THREEFRY_ROT[r % 8]
        (p, q), (u, v) = (("x0", "x1"), ("x2", "x3")) if r % 2 == 0 else (("x0", "x3"),
                                                                          ("x2", "x1"))
        for (s, t), rot in (((p, q), a), ((u, v), b)):
            lines.append(f"    {s} = U32({s} + {t})")
            lines.append(f"    {t} = U32(U32(U32({t} << U32({rot})) | U32({t} >> U32({32 - rot})))"
                         f" ^ {s})")
        if r % 4 == 3:  # key injection
            n = (r + 1) // 4
            lines.append("    " + "; ".join(f"x{i} = U32(x{i} + {ks[(n + i) % 5]})"
                                            for i in range(4)) + f"; x3 = U32(x3 + U32({n}))")
    lines.append("    return x0, x1, x2, x3")
    return "\n".join(lines)


def _threefry(rounds: int):  # type: ignore[no-untyped-def]
    namespace = {"U32": np.uint32}
    exec(_threefry_source(rounds), namespace)  # our own generated source
    return nb.njit(inline="always", error_model="numpy")(namespace["threefry"])


_threefry20 = _threefry(20)


@nb.njit(error_model="numpy")
def _threefry_words(W4, key):  # type: ignore[no-untyped-def]
    """Threefry-4x32-20 words of calls j into ``W4[:, j]`` (``W4``: a (4, K) uint32 view), its
    arguments uint32 throughout: LLVM then keeps the rounds on 32-bit lanes (vector rotates;
    with 64-bit counter arguments, as Philox takes them, it widened every lane to 64 bits and
    ran at half the speed)."""
    prefer_512_bit_vectors()  # as the kernels do
    u = np.uint32
    for j in range(W4.shape[1]):
        a, b, c, d = _threefry20(u(j), u(3), u(5), u(0), key, u(7), u(0), u(0))
        W4[0, j] = a
        W4[1, j] = b
        W4[2, j] = c
        W4[3, j] = d


@nb.njit(inline="always", error_model="numpy")
def _rotl32(x, r):  # type: ignore[no-untyped-def]
    return np.uint32(np.uint32(x << np.uint32(r)) | np.uint32(x >> np.uint32(32 - r)))


@nb.njit(error_model="numpy")
def _xoshiro128_words(W, S):  # type: ignore[no-untyped-def]
    """xoshiro128++ (Blackman & Vigna) in 32-bit lanes: one stream per column of S (4, lanes),
    its state in L1 between words, as a per-chain stream in the ensemble kernel would be."""
    prefer_512_bit_vectors()  # as the kernels do
    lanes = S.shape[1]
    for i in range(W.shape[0] // lanes):
        for lane in range(lanes):
            s0, s1, s2, s3 = S[0, lane], S[1, lane], S[2, lane], S[3, lane]
            W[i * lanes + lane] = np.uint32(_rotl32(np.uint32(s0 + s3), 7) + s0)
            t = np.uint32(s1 << np.uint32(9))
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= t
            S[0, lane], S[1, lane], S[2, lane], S[3, lane] = s0, s1, s2, _rotl32(s3, 11)


def _check_threefry() -> None:
    """Random123's known answer for Threefry-4x32-20 at counter 0, key 0."""
    zero = np.uint32(0)
    got = nb.njit(lambda z: _threefry20(z, z, z, z, z, z, z, z))(zero)
    assert tuple(int(x) for x in got) == (0x9C6CA96A, 0xE17EAE66, 0xFC10ECD4, 0x5256A7D8), got


def _ziggurat_tables(n: int = 128, r: float = 3.442619855899, v: float = 9.91256303526217e-3,
                     m1: float = 2.0**24) -> tuple[np.ndarray, np.ndarray]:
    """Marsaglia & Tsang's (2000) normal ziggurat of ``n`` layers for 24-bit magnitudes:
    (k, w) with layer i's fast-path bound k[i] and scale w[i] = x_i / 2²⁴ (layer 0: the base
    strip with the tail)."""
    k = np.zeros(n)
    w = np.zeros(n)
    x = t = r
    q = v / math.exp(-0.5 * x * x)
    k[0], w[0], w[n - 1] = (x / q) * m1, q / m1, x / m1
    for i in range(n - 2, 0, -1):
        x = math.sqrt(-2.0 * math.log(v / x + math.exp(-0.5 * x * x)))
        k[i + 1] = (x / t) * m1
        t = x
        w[i] = x / m1
    return k.astype(np.uint32), w.astype(np.float32)


@nb.njit(error_model="numpy")
def _ziggurat_fast(Z, W, k, w):  # type: ignore[no-untyped-def]
    """The ziggurat's fast path on 32-bit words with separate bits (Doornik's fix): 7 for the
    layer, 1 for the sign, 24 for the magnitude; NaN where the word would take the slow path
    (wedges and tail, not implemented here: the fast path alone is a lower bound of the cost)."""
    prefer_512_bit_vectors()  # as the kernels do
    for j in range(W.shape[0]):
        word = W[j]
        i = word & np.uint32(127)
        u = word >> np.uint32(8)
        x = np.float32(u) * w[i]
        x = -x if (word >> np.uint32(7)) & np.uint32(1) else x
        Z[j] = x if u < k[i] else np.float32(np.nan)


def _transform_kernel(box_muller_fn):  # type: ignore[no-untyped-def]
    """A loop applying ``box_muller_fn`` to the word pairs (W[j], W[H + j])."""

    @nb.njit(error_model="numpy")
    def transform(Z, W):  # type: ignore[no-untyped-def]
        prefer_512_bit_vectors()  # as the kernels do
        H = W.shape[0] // 2
        for j in range(H):
            z0, z1 = box_muller_fn(_U(W[j]), _U(W[H + j]))
            Z[j] = z0
            Z[H + j] = z1

    return transform


_bm32 = _transform_kernel(box_muller_f32)
_bm64 = _transform_kernel(box_muller)


@nb.njit(error_model="numpy")
def _kernel_fill_f32(Z, W, key):  # type: ignore[no-untyped-def]
    """The optimizer kernel's own fill (:func:`segment_kernel._fill_noise`), float32 Gaussian."""
    prefer_512_bit_vectors()  # as the kernels do
    sk._fill_noise(Z, W, Z.shape[0], 0, 3, _U(5), key, _U(7), 0, (0, 0, 0, 0, 0))


@nb.njit(error_model="numpy")
def _two_loops_f32(Z, W, key):  # type: ignore[no-untyped-def]
    """The same normals as :func:`_kernel_fill_f32` from two loops: the Philox words into W
    (64-bit lanes), then the transform (32-bit lanes)."""
    prefer_512_bit_vectors()  # as the kernels do
    K = Z.shape[0] // 4
    for j in range(K):
        a, b, c, d = philox4x32(_U(j), _U(3), _U(5), _U(0), key, _U(7))
        W[j], W[K + j], W[2 * K + j], W[3 * K + j] = a, b, c, d
    for base in (0, 2 * K):
        for j in range(base, base + K):
            z0, z1 = box_muller_f32(W[j], W[K + j])
            Z[j] = z0
            Z[K + j] = z1


def _ns_per(fn, args, count: int, reps: int) -> float:  # type: ignore[no-untyped-def]
    """Best of 5 rounds of ``reps`` calls, in ns per produced item."""
    fn(*args)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(*args)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best / count * 1e9


def _segment_ms(kind: int, amplitude: float, code: int, reps: int) -> float:
    """Median ms of one run_segment pass over 20M float32 elements (20 tensors, 2 threads)."""
    n_t, numel = 20, 1_000_000
    th = [np.zeros(numel, np.float32) for _ in range(n_t)]
    p = [np.ones(numel, np.float32) for _ in range(n_t)]
    ptr = [np.array([x.ctypes.data for x in a], np.int64) for a in (th, p)]
    work = np.array([(t, b) for t in range(n_t) for b in range(0, numel, sk.BLOCK)], np.int64)
    coef = np.zeros((1, n_t, 2), np.float32)
    coef[..., 0] = 0.9
    coef[..., 1] = amplitude
    zbuf = np.zeros((nb.config.NUMBA_NUM_THREADS, sk.WORKSPACE), np.float32)
    args = (np.zeros(1, np.float32), np.array([code], np.int64), np.zeros(1, np.int64), coef,
            ptr[0], ptr[1], ptr[1], np.zeros(n_t, np.int64), np.full(n_t, numel, np.int64),
            np.arange(n_t, dtype=np.int64), work, _U(1), _U(2))
    sk.run_segment(*args, 0, kind, False, np.zeros(len(work)), zbuf)
    times = []
    for step in range(1, reps + 1):
        t0 = time.perf_counter()
        sk.run_segment(*args, step, kind, False, np.zeros(len(work)), zbuf)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    reps = 300 if args.quick else 3000
    nb.set_num_threads(2)
    W = np.zeros(BLOCK, np.uint32)
    Z32 = np.zeros(BLOCK, np.float32)
    Z64 = np.zeros(BLOCK, np.float64)
    key = _U(12345)
    _check_threefry()
    zig = _ziggurat_tables()
    Wr = np.random.default_rng(2).integers(0, 2**32, BLOCK, dtype=np.uint64).astype(np.uint32)
    big = np.random.default_rng(3).integers(0, 2**32, 1 << 22, dtype=np.uint64).astype(np.uint32)
    zbig = np.empty(big.size, np.float32)
    _ziggurat_fast(zbig, big, *zig)
    zig_slow = 100.0 * float(np.isnan(zbig).mean())
    xo_state = np.random.default_rng(1).integers(1, 2**32, size=(4, 256), dtype=np.uint64)
    xo_state = xo_state.astype(np.uint32)
    part1 = [
        ("Philox-4x32-10 words (dynopt)", "ns/word",
         _ns_per(_words_kernel(philox4x32), (W, key), BLOCK, reps)),
        ("Philox-4x32-7 words", "ns/word",
         _ns_per(_words_kernel(_philox_rounds(7)), (W, key), BLOCK, reps)),
        ("SplitMix64 counter hash words", "ns/word", _ns_per(_splitmix_words, (W, key), BLOCK,
                                                            reps)),
        ("xoshiro256++ per-lane streams (8 lanes, Philox-keyed) words", "ns/word",
         _ns_per(_xoshiro_words, (W, key), BLOCK, reps)),
        ("xoshiro128++ per-lane streams (256 lanes, 32-bit) words", "ns/word",
         _ns_per(_xoshiro128_words, (W, xo_state), BLOCK, reps)),
        ("Threefry-4x32-20 words (no multiplications)", "ns/word",
         _ns_per(_threefry_words, (W.reshape(4, -1), np.uint32(key)), BLOCK, reps)),
        ("Box–Muller float32 (from words)", "ns/normal", _ns_per(_bm32, (Z32, W), BLOCK, reps)),
        ("Box–Muller float64 (from words)", "ns/normal", _ns_per(_bm64, (Z64, W), BLOCK, reps)),
        ("ziggurat fast path, float32, 128 layers (from words; a lower bound)", "ns/normal",
         _ns_per(_ziggurat_fast, (Z32, Wr, *zig), BLOCK, reps)),
        ("ziggurat: words taking the slow path (random words)", "%", zig_slow),
        ("float32 Gaussian fill, the kernel's (one loop, now)", "ns/normal",
         _ns_per(_kernel_fill_f32, (Z32, W, key), BLOCK, reps)),
        ("float32 Gaussian fill, two loops (before)", "ns/normal",
         _ns_per(_two_loops_f32, (Z32, W, key), BLOCK, reps)),
    ]
    seg_reps = 5 if args.quick else 15
    ou = int(OpCode.OU)
    part2 = [
        ("OU, Gaussian noise", _segment_ms(0, 0.1, ou, seg_reps)),
        ("OU, discrete noise", _segment_ms(1, 0.1, ou, seg_reps)),
        ("OU, amplitude 0 (draw skipped)", _segment_ms(0, 0.0, ou, seg_reps)),
        ("p ← c·p, no noise (same memory traffic)", _segment_ms(0, 0.0, sk.SCALE, seg_reps)),
    ]
    for label, unit, v in part1:
        print(f"{label:62s} {v:7.3f} {unit}")
    for label, v in part2:
        print(f"{label:62s} {v:7.2f} ms")
    if args.update_docs:
        t1 = markdown_table(["part (one core, data in L1)", "cost", "unit"],
                            [[lbl, f"{v:.3f}", u] for lbl, u, v in part1])
        t2 = markdown_table(["optimizer kernel pass, 20M float32, 2 threads", "median ms"],
                            [[lbl, f"{v:.2f}"] for lbl, v in part2])
        write_section(
            "noise-generators", "What the kernels' noise costs, and the generators weighed",
            command("noise_generators", args), t1 + "\n\n" + t2,
            notes=("Every part is compiled as the kernels are, with 512-bit vectors "
                   "(intrinsics.prefer_512_bit_vectors). The float32 transform's integer steps "
                   "run on 32-bit lanes (intrinsics.word_plus_one_f32 and friends) and its "
                   "polynomials are fused multiply-adds (intrinsics.fma); with both, one loop "
                   "of words and transform and two loops cost about the same (the kernel's "
                   "loop runs in chunks between prefetch doses, which costs a little here; "
                   "the two-loop row has no chunks), and in the optimizer step the two "
                   "layouts were within this machine's noise, so the kernel has one loop for "
                   "both transforms (same values bit for bit). "
                   "The isolated float64 transform is slower "
                   "with 512-bit vectors than the 1.8 ns it took with 256-bit ones, while the "
                   "integrate() kernel's fill_lanes is faster with them (ensemble +15-20 %); "
                   "the kernels keep them. A zero amplitude skips the draw. The generator stays "
                   "Philox-4x32-10: the alternatives cut the word cost by at most the amount "
                   "in the first rows (Threefry, without multiplications, costs what Philox "
                   "does; a per-lane stream keeps its state in memory between words, which "
                   "costs about what Philox's arithmetic does), and the known-answer vectors, "
                   "BigCrush record and counter layout stay as they are. The transform is the "
                   "larger part: the float64 kernels now use the float32 one too (noise kinds "
                   "section). The ziggurat, the usual cheaper exact transform, loses here: its "
                   "fast path alone costs more than Box–Muller, because LLVM keeps its table "
                   "lookups scalar on this CPU (it judges gathers too costly), and its slow "
                   "path (wedges, tail: more words per normal, which a counter-based layout "
                   "must then reserve) would come on top. See docs/architecture.md, "
                   "\"Noise\"."))


if __name__ == "__main__":
    main()
