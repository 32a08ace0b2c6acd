r"""The noise of the fused optimizer kernel: zero-amplitude skips and a statistical battery.

Default tier (fast):

* an op whose noise amplitude is 0 for a tensor skips its draw and runs its noise-free update
  (OU, OU_XI: p ← c₀p; WIENER, ADD_NOISE: nothing), exactly, in float32 and float64, while a
  tiny amplitude on another tensor of the same segment changes the result (a kernel that always
  skips fails) and draws the same normals as the reference at that (stream, step, slot);
* LM_NOISE draws whatever its amplitude (its memory keeps the draw for the next step);
* the workspace guard, the extreme Philox word's normal against ``NORMAL_BOUND``, the
  τ = 0 Langevin ≡ SGD-with-momentum identity on the parallel fused kernel (≥ 2¹⁶ elements);
* the Gaussian moments of order 6 and the within-call correlations of ``philox.normals_for``
  (orders 1–4 and the lag-1 correlation are in tests/test_philox.py).

Slow tier (``-m slow``): ≥ 10⁹ Gaussian draws of the kernel for each of float32, float64 (the
default float32 transform, widened) and float64 with ``"gaussian-f64"``, and 10⁸ draws of its
16-bit discrete rule, streamed in chunks of 2²² elements (one optimizer step each).

Exact Gaussian moments used throughout: E z²ᵏ = (2k − 1)!!, so Var zᵏ = E z²ᵏ − (E zᵏ)²:

=====  ======  =============  =========================
k      E zᵏ    E z²ᵏ          Var zᵏ
=====  ======  =============  =========================
1      0       1              1
2      1       3              2
3      0       15             15
4      3       105            96
6      15      10395          10170
=====  ======  =============  =========================
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch
from scipy.special import erfc
from scipy.stats import chi2

from dynopt.backends.numba import segment_kernel as k
from dynopt.backends.numba.philox import (
    DISCRETE,
    GAUSSIAN,
    GAUSSIAN_F64,
    box_muller,
    box_muller_f32,
    normals_for,
    split_seed,
)
from dynopt.diagnostics import batch_means_se
from dynopt.optim import Langevin
from dynopt.optim.bound import NORMAL_BOUND
from dynopt.program import OpCode

KEY = split_seed(0x5EED_0F_D1CE)
#: E zᵏ of a standard normal for the powers the battery accumulates (odd ones vanish).
EXACT = {1: 0.0, 2: 1.0, 3: 0.0, 4: 3.0, 6: 15.0, 8: 105.0, 12: 10395.0}
#: Two-sided tail mass of 4.5 standard deviations: the false-alarm rate of every check here.
ALPHA = float(erfc(4.5 / math.sqrt(2.0)))
NOISE_CODES = [OpCode.OU, OpCode.WIENER, OpCode.ADD_NOISE, OpCode.OU_XI]
KERNELS = {"serial": k.run_segment_serial, "parallel": k.run_segment}


def _ptrs(arrays: list[np.ndarray | None]) -> np.ndarray:
    return np.array([0 if a is None else a.ctypes.data for a in arrays], dtype=np.int64)


def _segment(kernel, codes, slots, coef, th, p, prev, streams, step, *, kind=GAUSSIAN,
             zbuf=None) -> np.ndarray:
    """Run one segment of ``codes`` over the tensors ``th[i]`` (with ``p[i]``, ``prev[i]``, None
    where absent); returns the workspace so a caller can see whether it was written."""
    dtype = th[0].dtype
    numel = np.array([t.size for t in th], dtype=np.int64)
    work = np.array([(i, b) for i, n in enumerate(numel) for b in range(0, n, k.BLOCK)],
                    dtype=np.int64)
    if zbuf is None:
        zbuf = np.full((numba.config.NUMBA_NUM_THREADS, k.WORKSPACE), np.nan, dtype=dtype)
    kernel(np.zeros(1, dtype=dtype), np.asarray(codes, dtype=np.int64),
           np.asarray(slots, dtype=np.int64), np.asarray(coef, dtype=dtype), _ptrs(th),
           _ptrs(p), np.zeros(len(th), dtype=np.int64), _ptrs(prev), numel,
           np.asarray(streams, dtype=np.int64), work, KEY[0], KEY[1], step, kind, False,
           np.zeros(len(work)), zbuf)
    return zbuf


def _noise(n: int, dtype: type, stream: int, step: int, slot: int, kind: int = GAUSSIAN
           ) -> np.ndarray:
    """The kernel's raw noise for one tensor at (stream, step, slot): p ← 0·p + 1·R."""
    p = np.zeros(n, dtype=dtype)
    _segment(k.run_segment_serial, [int(OpCode.OU)], [slot], [[[0.0, 1.0]]], [np.zeros_like(p)],
             [p], [None], [stream], step, kind=kind)
    return p


# --- default tier: zero-amplitude skips ---------------------------------------------------------

STEP, SLOT = 5, 3
SIZES = (2 * k.BLOCK + 37, k.BLOCK + 5, 3 * k.BLOCK)  # ragged and whole last blocks
STREAMS = (4, 1, 2)
TINY = 2.0**-20  # a power of two: the products are exact and each update rounds once


def _coefficients(code: OpCode) -> list[list[float]]:
    """(c₀, c₁) of three tensors: amplitude 0 (friction 0.9), a tiny amplitude (friction ½), and
    amplitude 1 with the *other* coefficient 0 (so a kernel that reads the wrong field fails)."""
    if code in (OpCode.OU, OpCode.OU_XI):  # amplitude in c₁
        return [[0.9, 0.0], [0.5, TINY], [0.0, 1.0]]
    return [[0.0, 0.0], [TINY, 0.0], [1.0, 0.0]]  # WIENER, ADD_NOISE: amplitude in c₀


def _expected(code: OpCode, c: list[float], th: np.ndarray, p: np.ndarray, z: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """The op's update in numpy (one rounding per update, as the kernel's fma when the products
    are exact); ``z`` = 0 gives the noise-free update."""
    c0, c1 = (th.dtype.type(v) for v in c)
    if code in (OpCode.OU, OpCode.OU_XI):
        return th, c0 * p + c1 * z
    if code == OpCode.WIENER:
        return th + c0 * z, p
    return th, p + c0 * z  # ADD_NOISE


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code", NOISE_CODES, ids=lambda c: c.name)
def test_zero_amplitude_runs_the_noise_free_update(code, dtype, kernel):
    """Tensor 0 (amplitude 0): exactly the noise-free update; tensor 1 (amplitude 2⁻²⁰): the
    update with the reference normals of its (stream, step, slot), exactly, and different from
    the noise-free one almost everywhere; tensor 2 (amplitude 1, other coefficient 0): exactly
    the reference normals."""
    rng = np.random.default_rng(int(code))
    th0 = [rng.uniform(-1, 1, n).astype(dtype) for n in SIZES]
    p0 = [rng.uniform(-1, 1, n).astype(dtype) for n in SIZES]
    th, p = [t.copy() for t in th0], [t.copy() for t in p0]
    coef = _coefficients(code)
    _segment(KERNELS[kernel], [int(code)], [SLOT], np.array(coef)[None], th, p,
             [None] * 3, STREAMS, STEP)
    for i, (n, s) in enumerate(zip(SIZES, STREAMS, strict=True)):
        z = _noise(n, dtype, s, STEP, SLOT) if i else np.zeros(n, dtype=dtype)
        want_th, want_p = _expected(code, coef[i], th0[i], p0[i], z)
        np.testing.assert_array_equal(th[i], want_th, err_msg=f"tensor {i}: θ")
        np.testing.assert_array_equal(p[i], want_p, err_msg=f"tensor {i}: p")
    quiet_th, quiet_p = _expected(code, coef[1], th0[1], p0[1], np.zeros(SIZES[1], dtype))
    changed = (th[1] != quiet_th) | (p[1] != quiet_p)
    assert changed.mean() > 0.9, changed.mean()  # the tiny amplitude is not skipped


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code", NOISE_CODES, ids=lambda c: c.name)
def test_zero_amplitude_segment_draws_nothing(code, dtype, kernel):
    """Every tensor at amplitude 0: the workspace (filled with NaN) is never written, so the
    draw was skipped, and nothing reads it (a NaN normal times 0 would be NaN)."""
    rng = np.random.default_rng(1)
    th0 = [rng.uniform(-1, 1, n).astype(dtype) for n in SIZES[:2]]
    p0 = [rng.uniform(-1, 1, n).astype(dtype) for n in SIZES[:2]]
    th, p = [t.copy() for t in th0], [t.copy() for t in p0]
    coef = np.array([_coefficients(code)[0]] * 2)[None]
    zbuf = _segment(KERNELS[kernel], [int(code)], [SLOT], coef, th, p, [None] * 2, STREAMS[:2],
                    STEP)
    assert np.isnan(zbuf).all()
    for i in range(2):
        want_th, want_p = _expected(code, coef[0, i], th0[i], p0[i], np.zeros_like(p0[i]))
        np.testing.assert_array_equal(th[i], want_th)
        np.testing.assert_array_equal(p[i], want_p)


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lm_noise_draws_at_zero_amplitude(dtype, kernel):
    """LM_NOISE θ ← fma(R_prev + R, s, θ), R_prev ← R: with s = 0, θ is unchanged and the memory
    holds the normals an OU(0, 1) op draws at the same (stream, step, slot); with s = 2⁻²⁰ the
    same normals move θ."""
    rng = np.random.default_rng(2)
    sizes, streams = SIZES[:2], STREAMS[:2]
    th0 = [rng.uniform(-1, 1, n).astype(dtype) for n in sizes]
    r0 = [rng.standard_normal(n).astype(dtype) for n in sizes]
    th, r = [t.copy() for t in th0], [t.copy() for t in r0]
    _segment(KERNELS[kernel], [int(OpCode.LM_NOISE)], [SLOT], [[[0.0, 0.0], [TINY, 0.0]]], th,
             [None] * 2, r, streams, STEP)
    for i, (n, s) in enumerate(zip(sizes, streams, strict=True)):
        z = _noise(n, dtype, s, STEP, SLOT)
        np.testing.assert_array_equal(r[i], z)
        assert not np.array_equal(z, _noise(n, dtype, s, STEP, 0))  # the slot is in the counter
    np.testing.assert_array_equal(th[0], th0[0])
    np.testing.assert_array_equal(th[1], th0[1] + dtype(TINY) * (r0[1] + r[1]))


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_workspace_of_one_block_is_refused(kernel):
    """The float32 Philox words need the second BLOCK columns: a BLOCK-wide zbuf raises."""
    p = np.zeros(100, dtype=np.float32)
    zbuf = np.zeros((numba.config.NUMBA_NUM_THREADS, k.BLOCK), dtype=np.float32)
    with pytest.raises(ValueError, match="WORKSPACE"):
        _segment(KERNELS[kernel], [int(OpCode.OU)], [0], [[[0.0, 1.0]]], [np.zeros_like(p)], [p],
                 [None], [0], 0, zbuf=zbuf)
    assert not p.any()


def test_extreme_word_normal_is_within_the_bound():
    """|ξ| is largest for the smallest radius word (u = 2⁻³²) at an angle word whose polynomial
    cos is 1 (the centre of a quadrant): 8√(ln 2) = 6.66035 in both widths, within
    NORMAL_BOUND = 6.67, the bound :mod:`dynopt.optim.bound` proves finiteness with. Words near
    the quadrant edges and the next radius words give no more."""
    centre = [(q << 30) | (1 << 29) for q in range(4)]
    angles = [b + d for b in centre for d in (-3, -1, 0, 1, 3)]
    angles += [(q << 30) + d for q in range(4) for d in (0, 1)] + [(q << 30) - 1 for q in (1, 4)]
    peak = 8.0 * math.sqrt(math.log(2.0))
    for bm in (box_muller, box_muller_f32):
        tops = [max(abs(float(v)) for v in bm(np.uint64(a), np.uint64(b)))
                for a in (0, 1, 2, 1000) for b in angles]
        assert max(tops) <= NORMAL_BOUND
        assert max(tops) == pytest.approx(peak, abs=2e-4)  # the bound is nearly attained
        z0, _ = bm(np.uint64(0), np.uint64(centre[0]))
        assert float(z0) == pytest.approx(peak, abs=2e-4)


def test_zero_temperature_fused_parallel_is_sgd_with_momentum(monkeypatch):
    """τ = 0 on the default (fused) path of a float32 tensor of 2¹⁶ + 3 elements, which runs the
    parallel kernel: bit for bit the foreach path, and torch.optim.SGD(lr = η, momentum = c)
    from step 1 on, with c = e^{−γh} = 0.9, η = h²(1 + c)/2, its buffer started at −Δ₁/η
    (the small-model version of both is in tests/test_optim_langevin.py)."""
    n, h, c, steps = k.SERIAL_BELOW + 3, 0.2, 0.9, 30
    gamma, eta = -math.log(c) / h, h * h * (1 + c) / 2
    omega = torch.linspace(0.1, 2.0, n)  # loss ½ Σ ω θ²
    calls = {"parallel": 0}
    parallel = k.run_segment

    def counted(*args):  # type: ignore[no-untyped-def]
        calls["parallel"] += 1
        return parallel(*args)

    monkeypatch.setattr(k, "run_segment", counted)
    trajs = []
    for path in ({}, {"foreach": True}):
        theta = torch.linspace(-1.0, 1.0, n).requires_grad_()
        opt = Langevin([theta], lr=h, gamma=gamma, temperature=0.0, seed=3, **path)
        traj = [theta.detach().clone()]
        for _ in range(steps):
            theta.grad = omega * theta.detach()
            opt.step()
            traj.append(theta.detach().clone())
        trajs.append(traj)
    assert calls["parallel"] >= steps
    for a, b in zip(*trajs, strict=True):
        assert torch.equal(a, b)
    traj = trajs[0]
    theta = traj[1].clone().requires_grad_()
    sgd = torch.optim.SGD([theta], lr=eta, momentum=c)
    sgd.state[theta]["momentum_buffer"] = -(traj[1] - traj[0]) / eta
    for step in range(2, steps + 1):
        theta.grad = omega * theta.detach()
        sgd.step()
        assert torch.allclose(theta.detach(), traj[step], rtol=0, atol=2e-6), step


# --- the statistical battery --------------------------------------------------------------------

def _within(est: float, exact: float, se: float, what: str) -> float:
    """Assert ``est`` within 4.5 SE of ``exact``; returns the distance in SE."""
    assert abs(est - exact) < 4.5 * se, f"{what}: {est} against {exact} (SE {se:.3g})"
    return abs(est - exact) / se


class GaussianBattery:
    """Float64 sums over chunks of normals laid out as ``W[r, i]`` = word r of Philox call i.

    Accumulates Σ zᵏ (k = 1, 2, 3, 4, 6, 8, 12), the 4×4 Gram matrices of z and z² over the
    words of one call (the two normals of a Box–Muller pair are words (0, 1) and (2, 3)), the
    lag-1 products (the same word of consecutive calls: neighbouring elements in the kernel's
    layout), the products with the previous chunk (the next step at the same element), the tail
    counts and max |z|.
    """

    TAILS = (2.0, 3.0, 4.0, 5.0, 5.5)

    def __init__(self) -> None:
        self.n = 0
        self.sums = dict.fromkeys(EXACT, 0.0)
        self.chunk_means: dict[int, list[float]] = {p: [] for p in (1, 2, 3, 4, 6)}
        self.gram = np.zeros((4, 4))
        self.gram2 = np.zeros((4, 4))
        self.lag1 = 0.0
        self.n_lag1 = 0
        self.step_lag = 0.0
        self.n_step_lag = 0
        self.tails = dict.fromkeys(self.TAILS, 0)
        self.max_abs = 0.0
        self._prev: np.ndarray | None = None

    def add(self, w: np.ndarray, next_step: bool = False) -> None:
        """Add a ``(4, m)`` float64 chunk; ``next_step``: it is the previous chunk's next step."""
        m = w.shape[1]
        flat = w.reshape(-1)
        z2 = w * w
        z4 = z2 * z2
        z6 = z4 * z2
        sums = {1: float(flat.sum()), 2: float(z2.sum()), 3: float(np.dot(z2.reshape(-1), flat)),
                4: float(z4.sum()), 6: float(z6.sum()),
                8: float(np.dot(z4.reshape(-1), z4.reshape(-1))),
                12: float(np.dot(z6.reshape(-1), z6.reshape(-1)))}
        for p, s in sums.items():
            self.sums[p] += s
            if p in self.chunk_means:
                self.chunk_means[p].append(s / flat.size)
        self.gram += w @ w.T
        self.gram2 += z2 @ z2.T
        self.lag1 += sum(float(np.dot(w[r, 1:], w[r, :-1])) for r in range(4))
        self.n_lag1 += 4 * (m - 1)
        if next_step and self._prev is not None:
            self.step_lag += float(np.dot(self._prev.reshape(-1), flat))
            self.n_step_lag += flat.size
        self._prev = w.copy() if next_step else None
        big = z2[z2 > 4.0]
        for t in self.TAILS:
            self.tails[t] += int(np.count_nonzero(big > t * t))
        self.max_abs = max(self.max_abs, math.sqrt(float(big.max(initial=0.0))))
        self.n += flat.size

    def check(self, se_factor: float, se_factor6: float, batch_means: bool = False) -> str:
        """Assert every statistic within 4.5 SE of its exact value and bound the SEs: the SE of
        E zᵏ from the sample below ``se_factor`` (``se_factor6`` for k = 6) times the exact one.

        Returns:
            A summary line: the largest distance met in SE, the SE ratios, max |z|.
        """
        n = self.n
        mom = {p: s / n for p, s in self.sums.items()}
        dev, ratios = [], []
        for p in (1, 2, 3, 4, 6):
            var_exact = EXACT[2 * p] - EXACT[p] ** 2
            se_exact = math.sqrt(var_exact / n)
            se = math.sqrt(max(mom[2 * p] - mom[p] ** 2, 0.0) / n)  # from the sample itself
            ratios.append(se / se_exact)
            assert se < (se_factor6 if p == 6 else se_factor) * se_exact, (p, se, se_exact)
            dev.append(_within(mom[p], EXACT[p], se, f"E z^{p}"))
            if batch_means:  # the chunks (steps) are independent: their means scatter as iid
                n_b = len(self.chunk_means[p])
                bm = batch_means_se(np.array(self.chunk_means[p]), n_b)
                ratios.append(bm / se_exact)
                # the ratio's relative spread is 1/√(2(n_b − 1)) (χ² with n_b − 1 dof)
                assert abs(bm / se_exact - 1) < 4.5 / math.sqrt(2 * (n_b - 1)), (p, bm, se_exact)
        n_word = n // 4
        for r in range(4):
            dev.append(_within(self.gram[r, r] / n_word, 1.0, math.sqrt(2.0 / n_word),
                               f"E z^2, word {r}"))
        for r in range(4):
            for s in range(r + 1, 4):
                dev.append(_within(self.gram[r, s] / n_word, 0.0, math.sqrt(1.0 / n_word),
                                   f"E z_{r} z_{s} (one call)"))
                # E z_r² z_s² = 1, Var = (E z⁴)² − 1 = 8: independence beyond correlation
                dev.append(_within(self.gram2[r, s] / n_word, 1.0, math.sqrt(8.0 / n_word),
                                   f"E z_{r}^2 z_{s}^2 (one call)"))
        dev.append(_within(self.lag1 / self.n_lag1, 0.0, math.sqrt(1.0 / self.n_lag1), "lag-1"))
        if self.n_step_lag:
            dev.append(_within(self.step_lag / self.n_step_lag, 0.0,
                               math.sqrt(1.0 / self.n_step_lag), "consecutive steps"))
        for t, count in self.tails.items():
            p_exact = float(erfc(t / math.sqrt(2.0)))  # 2Φ(−t)
            if n * p_exact < 20:  # too few expected for a normal approximation
                continue
            dev.append(_within(count / n, p_exact, math.sqrt(p_exact * (1 - p_exact) / n),
                               f"P(|z|>{t})"))
        assert self.max_abs <= NORMAL_BOUND
        return (f"{n} normals: {len(dev)} statistics, largest distance {max(dev):.2f} SE; "
                f"SE ratios {min(ratios):.4f}..{max(ratios):.4f}; max |z| = {self.max_abs:.6f}")


def _words_of_calls(z: np.ndarray) -> np.ndarray:
    """normals_for's ``(chains, 4c)`` normals as ``W[r, chain·c + i]`` = word r of call i."""
    chains, n = z.shape
    return np.ascontiguousarray(z.reshape(chains, n // 4, 4).transpose(2, 0, 1)).reshape(4, -1)


def test_normals_for_sixth_moment_and_within_call_independence():
    """2·10⁶ float64 normals of the ensemble generator: E z⁶ = 15 and the SEs of E z, …, E z⁶
    from the sample within 5 % (10 % for z⁶, whose SE estimate has a 2 % relative spread at
    this size), the normals of one Philox call uncorrelated (also in their squares), the tails
    P(|z| > 2, 3, 4) and max |z| ≤ NORMAL_BOUND."""
    battery = GaussianBattery()
    battery.add(_words_of_calls(normals_for(17, 8, 250_000)))
    battery.check(se_factor=1.05, se_factor6=1.1)


# --- slow tier ----------------------------------------------------------------------------------

CHUNK = 1 << 22  # elements per kernel call (2048 blocks): 32 MB per float64 buffer
N_CHUNKS = 240  # 240 · 2²² = 1.007e9 draws


class KernelDraws:
    """The kernel's raw noise for one tensor of CHUNK elements, step after step (parallel)."""

    def __init__(self, dtype: type, kind: int, stream: int) -> None:
        self.p = np.zeros(CHUNK, dtype=dtype)
        self.th = np.zeros(1, dtype=dtype)
        self.dtype, self.kind, self.stream = dtype, kind, stream
        self.zbuf = np.zeros((numba.config.NUMBA_NUM_THREADS, k.WORKSPACE), dtype=dtype)
        self.coef = np.array([[[0.0, 1.0]]], dtype=dtype)
        self.work = np.array([(0, b) for b in range(0, CHUNK, k.BLOCK)], dtype=np.int64)
        self.args = (np.zeros(1, dtype=dtype), np.array([int(OpCode.OU)], dtype=np.int64),
                     np.zeros(1, dtype=np.int64), self.coef, _ptrs([self.th]), _ptrs([self.p]),
                     np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                     np.array([CHUNK], dtype=np.int64), np.array([stream], dtype=np.int64),
                     self.work, KEY[0], KEY[1])

    def __call__(self, step: int) -> np.ndarray:
        self.p[:] = 0
        k.run_segment(*self.args, step, self.kind, False, np.zeros(len(self.work)), self.zbuf)
        return self.p


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "kind", "stream"),
                         [(np.float32, GAUSSIAN, 3), (np.float64, GAUSSIAN, 5),
                          (np.float64, GAUSSIAN_F64, 11)],
                         ids=["f32", "f64-gaussian", "f64-gaussian-f64"])
def test_kernel_gaussian_battery(dtype, kind, stream):
    """1.007·10⁹ normals of the kernel (240 steps of one 2²²-element tensor): E zᵏ (k = 1, 2, 3,
    4, 6) within 4.5 SE with the SE within 5 % of the exact one and the batch-means SE over the
    240 steps within 21 % (4.5 times its spread: a repeated or correlated step fails), the words
    of one Philox call uncorrelated, neighbours and consecutive steps uncorrelated, the tails
    P(|z| > t) for t = 2, 3, 4, 5, 5.5 within 4.5 binomial SE of 2Φ(−t), max |z| ≤ NORMAL_BOUND.
    Float64 tensors run twice: the default float32 transform (widened) and "gaussian-f64"."""
    draws = KernelDraws(dtype, kind, stream=stream)
    battery = GaussianBattery()
    blocks = CHUNK // k.BLOCK
    w = np.empty((4, blocks, k.BLOCK // 4))
    for step in range(N_CHUNKS):
        z = draws(step)
        # element b·BLOCK + r·K + j holds word r of call b·K + j (K = BLOCK/4)
        w[...] = z.reshape(blocks, 4, k.BLOCK // 4).transpose(1, 0, 2)
        battery.add(w.reshape(4, -1), next_step=True)
    print(f"\n{np.dtype(dtype).name}, kind {kind}:", battery.check(se_factor=1.05, se_factor6=1.05,
                                                     batch_means=True))


def _chi2_ok(counts: np.ndarray, probs: np.ndarray, what: str) -> None:
    """Pearson χ² of ``counts`` against ``probs`` below its 1 − ALPHA quantile."""
    expected = probs * counts.sum()
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert stat < chi2.isf(ALPHA, counts.size - 1), f"{what}: χ² = {stat:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_discrete_battery(dtype):
    """2.5·10⁸ draws of the 16-bit three-point rule: only the values ±a, 0; the frequencies
    (p, 1 − 2p, p), p = 10923/2¹⁶, by χ² overall and for each of the 8 fields of a call; the two
    fields of one word, and the low fields of words q and q + 1, independent (χ² of the 3×3
    joint table against the product of the exact marginals)."""
    a = dtype(k.DISCRETE_VALUE)
    p = 10923 / 65536
    probs = np.array([p, 1 - 2 * p, p])  # categories −a, 0, +a
    draws = KernelDraws(dtype, DISCRETE, stream=7 if dtype is np.float32 else 9)
    k8 = k.BLOCK // 8
    per_field = np.zeros((4, 3, 3), dtype=np.int64)  # word q: (low field, high field)
    cross = np.zeros((3, 3, 3), dtype=np.int64)  # low fields of words q and q + 1
    for step in range(N_CHUNKS // 4):
        z = draws(step)
        cat = (np.sign(z) + 1).astype(np.int8)  # 0: −a, 1: 0, 2: +a
        assert np.array_equal(z, (cat.astype(dtype) - 1) * a)
        # element b·BLOCK + (2q + h)·K8 + j holds half h of word q of call b·K8 + j
        c = cat.reshape(-1, 4, 2, k8)
        code = 3 * c[:, :, 0, :].astype(np.int64) + c[:, :, 1, :] + 9 * np.arange(4)[:, None]
        per_field += np.bincount(code.reshape(-1), minlength=36).reshape(4, 3, 3)
        low = c[:, :, 0, :].astype(np.int64)
        code = 3 * low[:, :-1] + low[:, 1:] + 9 * np.arange(3)[:, None]
        cross += np.bincount(code.reshape(-1), minlength=27).reshape(3, 3, 3)
    _chi2_ok(per_field.sum(axis=(0, 2)), probs, "all draws")
    for q in range(4):
        _chi2_ok(per_field[q].sum(axis=1), probs, f"word {q} low field")
        _chi2_ok(per_field[q].sum(axis=0), probs, f"word {q} high field")
        _chi2_ok(per_field[q].reshape(-1), np.outer(probs, probs).reshape(-1),
                 f"word {q}: low and high field")
    for q in range(3):
        _chi2_ok(cross[q].reshape(-1), np.outer(probs, probs).reshape(-1),
                 f"low fields of words {q}, {q + 1}")
