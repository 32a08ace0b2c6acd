r"""The fused CPU path of :mod:`dynopt.optim.executor`: one numba pass per segment.

:class:`FusedRunner` turns a segment of elementwise ops into the arrays of
:func:`dynopt.backends.numba.optim_kernel.run_segment` and calls it once per (dtype) bucket: the
kernel runs every op over L1-sized blocks of every tensor, generating its noise in place with
Philox (counter = (call, tensor stream, 16·step + slot), key = seed), so θ, p and ∇L are streamed
through memory once per segment and nothing is allocated per step (the work table, the noise
workspace of one :data:`~dynopt.backends.numba.optim_kernel.BLOCK` per thread and the coefficient
array are cached).

Coefficients per op (``coef[k, tensor] = (c₀, c₁)``, rounded to the tensor dtype as torch does):

| op | update | c₀ | c₁ |
|---|---|---|---|
| DRIFT | θ ← fma(p, c₀, θ) | t/M | |
| KICK | p ← fma(∇L, c₀, p) | −t | |
| OU | p ← fma(R, c₁, c₀ p) | e^{−γt} | √((1−c²)τ)·√M |
| GRAD_STEP | θ ← fma(∇L, c₀, θ) | −s | |
| WIENER | θ ← fma(R, c₀, θ) | s | |
| LM_NOISE | θ ← fma(R_prev + R, c₀, θ); R_prev ← R | s | |
| ADD_NOISE | p ← fma(R, c₀, p) | s√M | |
| OU_XI | p ← c₀p + c₁R | e^{−ξt} | σ√((1−e^{−2ξt})/(2ξ))·√M |
| FRICTION, NHC scaling | p ← c₀ p | e^{−ξt} or the chain's factor | |

The fused path's normals differ from the torch generator's: it agrees with the single and
foreach paths bit for bit when every noise amplitude is zero (temperature 0) and in distribution
otherwise (both are tested).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..program import Op, OpCode

if TYPE_CHECKING:
    from .executor import Bucket, Context, Slot

__all__ = ["FusedRunner", "eligible"]

_NP = {torch.float32: np.float32, torch.float64: np.float64}


def eligible(tensors: list[Tensor]) -> bool:
    """Whether the fused path can run on these tensors (CPU, float32/float64, contiguous)."""
    return all(t.device.type == "cpu" and t.dtype in _NP and t.is_contiguous() for t in tensors)


def available() -> bool:
    """Whether numba can be imported."""
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    return True


class FusedRunner:
    """Runs segments on CPU buckets with the numba kernel; caches work tables and workspaces."""

    def __init__(self) -> None:
        from ..backends.numba import optim_kernel as k

        self._k = k
        self._work: dict[tuple[int, ...], np.ndarray] = {}
        self._zbuf: dict[type, np.ndarray] = {}
        self._like: dict[type, np.ndarray] = {}

    def _work_table(self, numels: tuple[int, ...]) -> np.ndarray:
        table = self._work.get(numels)
        if table is None:
            block = self._k.BLOCK
            rows = [(i, b0) for i, n in enumerate(numels) for b0 in range(0, n, block)]
            table = np.array(rows, dtype=np.int64).reshape(-1, 2)
            if len(self._work) > 64:
                self._work.clear()
            self._work[numels] = table
        return table

    def _workspace(self, dt: type) -> tuple[np.ndarray, np.ndarray]:
        if dt not in self._zbuf:
            import numba

            self._zbuf[dt] = np.zeros((numba.config.NUMBA_NUM_THREADS, self._k.BLOCK), dtype=dt)
            self._like[dt] = np.zeros(1, dtype=dt)
        return self._like[dt], self._zbuf[dt]

    def run(self, b: Bucket, seg_ops: list[tuple[Op, int]], slots: list[Slot],
            coefs: list[Any], ctx: Context, need_k2: bool) -> Tensor:
        """Run one segment on bucket ``b``; returns Σp² per tensor (float64) if ``need_k2``."""
        k = self._k
        dt = _NP[b.dtype]
        n_t = len(b.idx)
        n_ops = len(seg_ops)
        codes = np.empty(n_ops, dtype=np.int64)
        slot_arr = np.zeros(n_ops, dtype=np.int64)
        coef = np.zeros((n_ops, n_t, 2), dtype=np.float64)
        holder = np.array([slots[i].holder for i in b.idx], dtype=np.int64)
        minv, sqrtm = ctx.minv, ctx.sqrtm
        for r, ((op, slot), co) in enumerate(zip(seg_ops, coefs, strict=True)):
            c = op.code
            codes[r] = int(c)
            slot_arr[r] = max(slot, 0)
            if c == OpCode.DRIFT:
                coef[r, :, 0] = op.f[0] * minv
            elif c in (OpCode.KICK, OpCode.GRAD_STEP):
                coef[r, :, 0] = -op.f[0]
            elif c == OpCode.OU:
                coef[r, :, 0] = op.f[0]
                coef[r, :, 1] = op.f[1] * sqrtm
            elif c in (OpCode.WIENER, OpCode.LM_NOISE):
                coef[r, :, 0] = op.f[0]
            elif c == OpCode.ADD_NOISE:
                coef[r, :, 0] = op.f[0] * sqrtm
            elif c == OpCode.FRICTION:
                codes[r] = k.SCALE
                coef[r, :, 0] = co[1].cpu().numpy()[holder]
            elif c == OpCode.NHC:
                codes[r] = k.SCALE
                coef[r, :, 0] = co.cpu().numpy()[holder]
            elif c == OpCode.OU_XI:
                coef[r, :, 0] = co[1].cpu().numpy()[holder]
                coef[r, :, 1] = [float(co[h][2]) * sqrtm for h in holder]  # type: ignore[index]
            else:  # pragma: no cover - guarded by split_segments
                raise NotImplementedError(f"op {c!r} in a fused segment")
        return self._call(b, codes, slot_arr, coef.astype(dt), ctx, need_k2)

    def init_prev(self, b: Bucket, ctx: Context) -> None:
        """Fill the LM noise memories of bucket ``b`` with normals (slot ``INIT_SLOT``)."""
        k = self._k
        codes = np.array([k.LM_INIT], dtype=np.int64)
        slot_arr = np.array([k.INIT_SLOT], dtype=np.int64)
        coef = np.zeros((1, len(b.idx), 2), dtype=_NP[b.dtype])
        self._call(b, codes, slot_arr, coef, ctx, False)

    def _call(self, b: Bucket, codes: np.ndarray, slot_arr: np.ndarray, coef: np.ndarray,
              ctx: Context, need_k2: bool) -> Tensor:
        k = self._k
        like, zbuf = self._workspace(_NP[b.dtype])
        numels = tuple(b.numels)
        work = self._work_table(numels)

        def addresses(ts: list[Tensor]) -> np.ndarray:
            if not ts:
                return np.zeros(len(numels), dtype=np.int64)
            return np.array([t.data_ptr() for t in ts], dtype=np.int64)

        streams = np.array(b.streams, dtype=np.int64)
        k2 = np.zeros(work.shape[0] if need_k2 else 1, dtype=np.float64)
        s = int(ctx.seed) & 0xFFFFFFFFFFFFFFFF
        kernel = k.run_segment if sum(numels) >= k.SERIAL_BELOW else k.run_segment_serial
        kernel(like, codes, slot_arr, coef, addresses(b.theta), addresses(b.mom),
                      addresses(b.grad), addresses(b.prev), np.array(numels, dtype=np.int64),
                      streams, work, np.uint64(s & 0xFFFFFFFF), np.uint64(s >> 32),
                      int(ctx.step), 0 if ctx.noise == "gaussian" else 1, need_k2, k2, zbuf)
        if not need_k2:
            return torch.empty(0)
        return torch.from_numpy(np.bincount(work[:, 0], weights=k2, minlength=len(numels)))

