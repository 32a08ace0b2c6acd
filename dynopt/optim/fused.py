r"""The fused CPU path of :mod:`dynopt.optim.executor`: one numba pass per segment.

:class:`FusedRunner` turns a segment of elementwise ops into the arrays of
:func:`dynopt.backends.numba.segment_kernel.run_segment` and calls it once per (dtype) bucket: the
kernel runs every op over L1-sized blocks of every tensor, generating its noise in place with
Philox (counter = (call, tensor stream, 16·step + slot), key = seed), so θ, p and ∇L are streamed
through memory once per segment and nothing is allocated per step (the work table, the noise
workspace of one :data:`~dynopt.backends.numba.segment_kernel.BLOCK` per thread and the coefficient
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

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..program import Op, OpCode
from ._paths import mark_written
from .finite import block_layout

if TYPE_CHECKING:
    from .executor import Bucket, Context, Slot

__all__ = ["FusedRunner", "kick_drift"]

_NP = {torch.float32: np.float32, torch.float64: np.float64}
_EMPTY = torch.empty(0)


@functools.lru_cache(maxsize=64)
def _needs(codes: bytes, need_k2: bool) -> tuple[bool, bool, bool]:
    """Whether a segment's codes (``codes.tobytes()``) address the momentum, the gradient and
    the LM noise memory."""
    from ..backends.numba import segment_kernel as k

    ops = set(np.frombuffer(codes, dtype=np.int64).tolist())
    return (need_k2 or bool(ops & k.MOMENTUM_CODES), bool(ops & k.GRADIENT_CODES),
            bool(ops & k.PREV_CODES))


def _check_buffers(b: Bucket, codes: np.ndarray, need_k2: bool, numels: list[int]) -> None:
    """Every buffer the kernel will address exists and matches its parameter: ``numels[i]``
    elements, the bucket's dtype, contiguous CPU memory (the kernel does no bounds checks)."""
    needs = _needs(codes.tobytes(), need_k2)
    n_t = len(b.idx)
    dt = b.dtype
    for name, ts, need in (("parameter", b.theta, True), ("momentum_buffer", b.mom, needs[0]),
                           ("gradient", b.grad, needs[1]), ("noise_prev", b.prev, needs[2])):
        if not ts and not need:
            continue
        if len(ts) != n_t:
            raise ValueError(f"fused step: {n_t} parameter tensors but {len(ts)} {name} "
                             "tensors (a state entry is missing)")
        for t, n, th in zip(ts, numels, b.theta, strict=True):
            # t.is_cpu, not t.device.type: no device object per tensor (this runs every step)
            if t.numel() != n or t.dtype != dt or not t.is_cpu or not t.is_contiguous():
                raise ValueError(
                    f"fused step: a {name} tensor ({t.dtype}, shape {tuple(t.shape)}, "
                    f"{t.device}{'' if t.is_contiguous() else ', not contiguous'}) does not "
                    f"match its parameter ({th.dtype}, shape {tuple(th.shape)}, contiguous CPU)")


class FusedRunner:
    """Runs segments on CPU buckets with the numba kernel; caches work tables and workspaces."""

    def __init__(self) -> None:
        from ..backends.numba import segment_kernel as k

        self._k = k
        self._layouts: dict[Any, Any] = {}
        self._zbuf: dict[type, np.ndarray] = {}
        self._like: dict[type, np.ndarray] = {}
        self._templates: dict[Any, Any] = {}
        self._mass = (1.0, 1.0)

    def _layout(self, streams: list[int], numels: list[int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """Cached per-bucket arrays: elements and stream of each tensor, the work table (one row
        per block), the k2 output buffer and the total size."""
        key = (tuple(streams), tuple(numels))
        hit = self._layouts.get(key)
        if hit is None:
            block = self._k.BLOCK
            rows = [(i, b0) for i, n in enumerate(numels) for b0 in range(0, n, block)]
            work = np.array(rows, dtype=np.int64).reshape(-1, 2)
            hit = (np.array(numels, dtype=np.int64), np.array(streams, dtype=np.int64), work,
                   np.zeros(max(len(rows), 1)), sum(numels))
            if len(self._layouts) > 64:
                self._layouts.clear()
            self._layouts[key] = hit
        return hit

    def _workspace(self, dt: type) -> tuple[np.ndarray, np.ndarray]:
        if dt not in self._zbuf:
            import numba

            self._zbuf[dt] = np.zeros((numba.config.NUMBA_NUM_THREADS, self._k.WORKSPACE),
                                      dtype=dt)
            self._like[dt] = np.zeros(1, dtype=dt)
        return self._like[dt], self._zbuf[dt]

    def _template(self, seg_ops: list[tuple[Op, int]], n_t: int, dt: type
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, OpCode]]]:
        """Codes, slots and coefficients of a segment (constant rows filled once), and the rows
        that depend on the thermostat state (filled every step)."""
        key = (id(seg_ops), n_t, dt, self._mass)
        hit = self._templates.get(key)
        if hit is not None and hit[0] is seg_ops:
            return hit[1]
        k = self._k
        n_ops = len(seg_ops)
        codes = np.empty(n_ops, dtype=np.int64)
        slot_arr = np.zeros(n_ops, dtype=np.int64)
        coef = np.zeros((n_ops, n_t, 2), dtype=dt)
        dynamic: list[tuple[int, OpCode]] = []
        minv, sqrtm = self._mass
        for r, (op, slot) in enumerate(seg_ops):
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
            elif c in (OpCode.FRICTION, OpCode.NHC):
                codes[r] = k.SCALE
                dynamic.append((r, c))
            elif c == OpCode.OU_XI:
                dynamic.append((r, c))
            else:  # pragma: no cover - guarded by split_segments
                raise NotImplementedError(f"op {c!r} in a fused segment")
        if len(self._templates) > 256:
            self._templates.clear()
        out = (codes, slot_arr, coef, dynamic)
        self._templates[key] = (seg_ops, out)
        return out

    @torch.compiler.disable  # numba on raw memory: runs eagerly inside a compiled step
    def run(self, b: Bucket, seg_ops: list[tuple[Op, int]], slots: list[Slot],
            coefs: list[Any], ctx: Context, need_k2: bool) -> Tensor:
        """Run one segment on bucket ``b``; returns Σp² per tensor (float64) if ``need_k2``."""
        self._mass = (ctx.minv, ctx.sqrtm)
        codes, slot_arr, coef, dynamic = self._template(seg_ops, len(b.idx), _NP[b.dtype])
        if dynamic:
            holder = np.array([slots[i].holder for i in b.idx], dtype=np.int64)
            for r, c in dynamic:
                co = coefs[r]
                if c == OpCode.FRICTION:
                    coef[r, :, 0] = co[1].cpu().numpy()[holder]
                elif c == OpCode.NHC:
                    coef[r, :, 0] = co.cpu().numpy()[holder]
                else:  # OU_XI
                    coef[r, :, 0] = co[1].cpu().numpy()[holder]
                    coef[r, :, 1] = (co[2] * ctx.sqrtm).cpu().numpy()[holder]
        return self._call(b, codes, slot_arr, coef, ctx, need_k2)

    @torch.compiler.disable
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
        numels = b.numels
        numel, streams, work, k2, total = self._layout(b.streams, numels)
        n_t = len(b.idx)
        _check_buffers(b, codes, need_k2, numels)
        # the four address arrays as rows of one (a list the kernel does not address is
        # empty: zeros); after the check, every other list has one tensor per parameter
        ptrs = []
        for ts in (b.theta, b.mom, b.grad, b.prev):
            ptrs += [t.data_ptr() for t in ts] if ts else [0] * n_t
        theta, mom, grad, prev = np.array(ptrs, dtype=np.int64).reshape(4, n_t)
        s = int(ctx.seed) & 0xFFFFFFFFFFFFFFFF
        kernel = k.run_segment if total >= k.SERIAL_BELOW else k.run_segment_serial
        kernel(like, codes, slot_arr, coef, theta, mom, grad, prev, numel, streams, work,
               np.uint64(s & 0xFFFFFFFF), np.uint64(s >> 32), int(ctx.step),
               k.NOISE_KINDS[ctx.noise], need_k2, k2, zbuf)
        # written through raw pointers: tell autograd, as an in-place torch op would (the
        # version counters also vouch for the carried bound of dynopt.optim.bound)
        mark_written([*b.theta, *b.mom, *b.prev])
        if not need_k2:
            return _EMPTY
        return torch.from_numpy(np.bincount(work[:, 0], weights=k2, minlength=n_t))


#: One element of each fused dtype: types the kick–drift kernel's pointers.
_LIKE = {torch.float32: np.zeros(1, dtype=np.float32), torch.float64: np.zeros(1, dtype=np.float64)}


@functools.cache
def _kick_drift_kernel() -> tuple[Any, int]:
    """The kernel entry and its block size (imported on first use: numba loads its kernels at
    import)."""
    from ..backends.numba.kick_drift_kernels import REDUCE_BLOCK, kick_drift_tensors

    return kick_drift_tensors, REDUCE_BLOCK


def _mismatch(i: int, p: Tensor, g: Tensor, m: Tensor) -> ValueError:
    """The error for parameter ``i`` whose gradient or momentum the kernel cannot address."""
    name, t = next(((name, t) for name, t in (("parameter", p), ("gradient", g), ("momentum", m))
                    if not (t.numel() == p.numel() and t.dtype == p.dtype and p.dtype in _LIKE
                            and t.is_cpu and t.is_contiguous())), ("parameter", p))
    return ValueError(
        f"fused step: the {name} of parameter {i} ({t.dtype}, shape {tuple(t.shape)}, "
        f"{t.device}{'' if t.is_contiguous() else ', not contiguous'}) does not fit the fused "
        f"path (parameter: {p.dtype}, shape {tuple(p.shape)}; it needs contiguous "
        "float32/float64 CPU tensors of the parameter's size and dtype)")


@torch.compiler.disable  # numba on raw memory: runs eagerly inside a compiled step
def kick_drift(params: list[Tensor], grads: list[Tensor], moms: list[Tensor], a: float,
               k: float, d: float, want_sums: bool = False) -> float:
    r"""The fused path of HeavyBall and BBI: p ← a·p − k·∇L, then θ ← θ + d·p, for every
    parameter, one numba call per dtype (:mod:`dynopt.backends.numba.kick_drift_kernels`);
    returns Σ|p|² of the new momenta (float64, summed tensor by tensor in the order of
    ``params``, as one call per tensor summed it) if ``want_sums``, else 0.0.

    Every tensor is checked before anything is written (the kernel does no bounds checks): the
    gradient and the momentum of ``params[i]`` must have its number of elements and dtype
    (float32/float64), and all three must be contiguous CPU tensors (ValueError naming the
    first mismatch). The coefficients are rounded to each bucket's dtype.
    """
    kernel, block = _kick_drift_kernel()
    if not len(params) == len(grads) == len(moms):
        raise ValueError(f"fused step: {len(params)} parameters, {len(grads)} gradients and "
                         f"{len(moms)} momenta")
    # dtype → (parameter indices, numels, θ, momentum and gradient addresses)
    buckets: dict[torch.dtype, tuple[list[int], list[int], list[int], list[int], list[int]]] = {}
    for i in range(len(params)):
        p, g, m = params[i], grads[i], moms[i]
        dt = p.dtype
        n = p.numel()
        # t.is_cpu, not t.device.type: no device object per tensor (this runs every step)
        if not (dt in _LIKE and g.dtype == dt and m.dtype == dt and g.numel() == n
                and m.numel() == n and p.is_cpu and g.is_cpu and m.is_cpu
                and p.is_contiguous() and g.is_contiguous() and m.is_contiguous()):
            raise _mismatch(i, p, g, m)
        b = buckets.get(dt)
        if b is None:
            b = buckets[dt] = ([], [], [], [], [])
        b[0].append(i)
        b[1].append(n)
        b[2].append(p.data_ptr())
        b[3].append(m.data_ptr())
        b[4].append(g.data_ptr())
    sums = [0.0] * len(params) if want_sums else []
    for dt, (idx, numels, th, mo, gr) in buckets.items():
        numel, work = block_layout(tuple(numels), block)
        cast = _NP[dt]
        out = kernel(_LIKE[dt], np.array((th, mo, gr), dtype=np.int64), numel, work,
                     sum(numels), cast(a), cast(k), cast(d), want_sums)
        if want_sums:
            for i, s in zip(idx, out.tolist(), strict=True):
                sums[i] = s
    # written through raw pointers: tell autograd, as an in-place torch op would (the
    # version counters also vouch for the carried bound of dynopt.optim.bound)
    mark_written([*params, *moms])
    total = 0.0
    for s in sums:  # in parameter order, as the per-tensor calls added them
        total += s
    return total
