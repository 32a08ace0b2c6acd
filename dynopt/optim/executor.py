r"""The one executor of every dynopt optimizer: lowered ops run over parameter tensors.

A step of a group is a list of :class:`~dynopt.program.Op` (from
:func:`dynopt.optim.dynamics.build`). The executor runs it over the group's tensors with the
gradient in ``.grad`` as ∇U (the KICK and GRAD_STEP ops read it). It splits the list into
*segments* of elementwise ops separated by the *scalar* thermostat ops (THERMOSTAT, NHC), which
need Σp²/M over the thermostat's scope (N = its number of elements, as in the op table of
:mod:`dynopt.program`). Each segment runs on every (device, dtype) *bucket* of tensors through one
of three interchangeable paths:

* ``"single"``: a loop over tensors calling the reference functions of
  :mod:`dynopt.backends.torch.ops` (used with ``foreach=False`` or ``differentiable=True``);
* ``"foreach"``: the same arithmetic with ``torch._foreach_*`` kernels (default on CUDA and for
  bfloat16/float16 on the CPU);
* ``"fused"``: :mod:`dynopt.optim.fused`, one numba pass over memory per segment with in-kernel
  counter-based noise (default for contiguous float32/float64 CPU tensors).

Noise. The single and foreach paths draw, for each noise op and bucket, ONE flat buffer of
standard normals (``torch.randn(total_numel)`` from the optimizer's generator on that device, or
the discrete three-point variable) and split it into views in tensor order, so both paths consume
identical numbers and agree bit for bit. For a single tensor this is one ``randn(numel)`` per noise
op per step: exactly the draw order of ``integrate(..., backend="torch")`` with one chain. The
fused path draws Philox normals instead (layout in :mod:`dynopt.backends.numba.optim_kernel`): it
agrees with the other two exactly when the noise amplitudes vanish (temperature 0) and in
distribution otherwise.

Low precision. bfloat16/float16 tensors are updated in float32 (momentum and noise memory are
kept in float32; the parameter is rounded back once per step). Updates far below the parameter's
resolution are lost to that rounding, as with any bf16 optimizer without stochastic rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..backends.torch import ops as tops
from ..program import Op, OpCode

__all__ = ["Bucket", "Holder", "Slot", "execute", "split_segments"]

#: Pseudo op code: p ← s p with a per-scope factor s produced by the preceding NHC op.
SCALE = -1
_LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass
class Slot:
    """One parameter tensor taking part in a step.

    Attributes:
        param: The parameter (updated in place).
        grad: Its gradient (already negated under ``maximize``).
        state: ``optimizer.state[param]``.
        stream: Its index in the optimizer's parameter list (the fused path's noise stream).
        holder: Index of the :class:`Holder` of its thermostat variables (-1: none).
    """

    param: Tensor
    grad: Tensor
    state: dict[str, Any]
    stream: int
    holder: int = -1


@dataclass
class Holder:
    """The thermostat variables of one scope (a tensor, a group or the model).

    Attributes:
        extras: float64 vector of the scalar variables (ξ, η, chain), updated in place.
        members: Indices of the slots in this scope.
        n: Number of elements N in the scope.
    """

    extras: Tensor
    members: list[int]
    n: int


@dataclass
class Bucket:
    """The slots of one (device, dtype), with the working tensors of their path."""

    device: torch.device
    dtype: torch.dtype
    path: str
    idx: list[int]
    streams: list[int] = field(default_factory=list)
    theta: list[Tensor] = field(default_factory=list)
    mom: list[Tensor] = field(default_factory=list)
    grad: list[Tensor] = field(default_factory=list)
    prev: list[Tensor] = field(default_factory=list)

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.float32 if self.dtype in _LOW_PRECISION else self.dtype

    @property
    def numels(self) -> list[int]:
        return [t.numel() for t in self.theta]


@dataclass
class Context:
    """What a step needs besides the tensors.

    Attributes:
        generator: ``device -> torch.Generator`` (the optimizer's own, seeded).
        seed: The optimizer seed (the fused path's Philox key).
        step: The optimizer's step counter before this step (the fused path's noise counter).
        noise: ``"gaussian"`` or ``"discrete"``.
        minv, sqrtm: Inverse and square root of the scalar mass.
        fused: The fused-path runner (:class:`dynopt.optim.fused.FusedRunner`), or None.
    """

    generator: Callable[[torch.device], torch.Generator]
    seed: int
    step: int
    noise: str
    minv: float
    sqrtm: float
    fused: Any = None


Segment = tuple[list[tuple[Op, int]], Op | None]


def split_segments(ops: Sequence[Op]) -> list[Segment]:
    """Cut an op list at the scalar thermostat ops.

    Returns ``[(elementwise ops with their noise slot, scalar op or None), ...]``; the noise slot
    of an op is its index among the noise ops of the whole list (-1 for ops without noise).
    """
    segs: list[Segment] = []
    cur: list[tuple[Op, int]] = []
    slot = 0
    for op in ops:
        if op.code in (OpCode.THERMOSTAT, OpCode.NHC):
            segs.append((cur, op))
            cur = []
            if op.code == OpCode.NHC:
                cur.append((Op(OpCode.NHC, op.f, op.i, op.letter), -1))  # its p-scaling
        else:
            cur.append((op, slot if op.draws_noise else -1))
            slot += op.draws_noise
    segs.append((cur, None))
    return segs


# ----------------------------------------------------------------------------------------------
# the step
# ----------------------------------------------------------------------------------------------
def execute(ops: Sequence[Op], slots: list[Slot], holders: list[Holder], buckets: list[Bucket],
            ctx: Context) -> None:
    """Run ``ops`` once over ``slots`` (one step of one cohort of tensors)."""
    scales: list[Tensor] = []
    for seg_ops, scalar in split_segments(ops):
        coefs = _per_scope_coefficients(seg_ops, holders, scales)
        need_k2 = scalar is not None
        k2: dict[int, Tensor] = {}
        for b in buckets:
            if b.path == "fused":
                vals = ctx.fused.run(b, seg_ops, slots, coefs, ctx, need_k2)
            elif b.path == "foreach":
                vals = _run_foreach(b, seg_ops, slots, coefs, ctx, need_k2)
            else:
                vals = _run_single(b, seg_ops, slots, coefs, ctx, need_k2)
            if need_k2:
                k2.update(zip(b.idx, vals, strict=True))
        if scalar is not None:
            scales = _scalar_op(scalar, holders, k2, ctx)
    for b in buckets:
        if b.compute_dtype != b.dtype:
            for i, th in zip(b.idx, b.theta, strict=True):
                slots[i].param.copy_(th)


def _per_scope_coefficients(seg_ops: list[tuple[Op, int]], holders: list[Holder],
                            scales: list[Tensor]) -> list[list[Any] | None]:
    """Per op, the per-scope constants of the ξ-dependent ops (None for the others).

    FRICTION: (ξ, e^{−ξt}); OU_XI: (ξ, e^{−ξt}, σ√((1−e^{−2ξt})/(2ξ))); the NHC scaling: the
    factor the chain propagation produced. FRICTION's η ← η + ξt is applied here, once per scope
    (ξ does not change within a segment, so this equals doing it at the op).
    """
    out: list[list[Any] | None] = []
    for op, _ in seg_ops:
        if op.code == OpCode.FRICTION:
            t, xo, eo = op.f[0], op.i[0], op.i[1]
            out.append([(h.extras[xo], torch.exp(-t * h.extras[xo])) for h in holders])
            if eo >= 0:
                for h in holders:
                    h.extras[eo].add_(h.extras[xo], alpha=t)
        elif op.code == OpCode.OU_XI:
            out.append([(h.extras[op.i[0]], *tops.ou_thermostat_coefficients(
                h.extras[op.i[0]], op.f[0], op.f[1])) for h in holders])
        elif op.code == OpCode.NHC:
            out.append(scales)
        else:
            out.append(None)
    return out


def _scalar_op(op: Op, holders: list[Holder], k2: dict[int, Tensor], ctx: Context
               ) -> list[Tensor]:
    """THERMOSTAT or NHC on every scope, with N and Σp²/M of that scope."""
    scales: list[Tensor] = []
    for h in holders:
        total = torch.stack([k2[i] for i in h.members]).sum() * ctx.minv
        total = total.to(h.extras.device)
        if op.code == OpCode.THERMOSTAT:
            tops.thermostat_(h.extras[op.i[0]], total, op.f[0], op.f[1], op.f[2] > 0.5,
                             float(h.n), lambda k: k)
        else:
            m, n_sub, n_sy, xo, eo = op.i
            q_rest = list(op.f[3:3 + m - 1])
            weights = list(op.f[3 + m - 1:3 + m - 1 + n_sy])
            s = torch.ones((), dtype=h.extras.dtype, device=h.extras.device)
            tops.nhc_(s, [h.extras[xo + j] for j in range(m)],
                      [h.extras[eo + j] for j in range(m)], op.f[0], op.f[1], op.f[2], q_rest,
                      weights, n_sub, float(h.n), lambda _, k=total: k)
            scales.append(s)
    return scales


# ----------------------------------------------------------------------------------------------
# noise for the torch paths
# ----------------------------------------------------------------------------------------------
def draw_views(b: Bucket, ctx: Context) -> list[Tensor]:
    """One flat buffer of noise for the whole bucket, split into views shaped like its tensors."""
    sizes = b.numels
    z = tops.standard_normal((sum(sizes),), ctx.generator(b.device), b.compute_dtype, b.device,
                             ctx.noise)
    return [v.view_as(t) for v, t in zip(torch.split(z, sizes), b.theta, strict=True)]


# ----------------------------------------------------------------------------------------------
# single-tensor reference path
# ----------------------------------------------------------------------------------------------
def _run_single(b: Bucket, seg_ops: list[tuple[Op, int]], slots: list[Slot],
                coefs: list[list[Any] | None], ctx: Context, need_k2: bool) -> list[Tensor]:
    minv, sqrtm = ctx.minv, ctx.sqrtm
    for (op, _), co in zip(seg_ops, coefs, strict=True):
        code = op.code
        zs = draw_views(b, ctx) if op.draws_noise else None
        for j, i in enumerate(b.idx):
            q = b.theta[j]
            p = b.mom[j] if b.mom else q
            z = zs[j] if zs is not None else q
            h = slots[i].holder
            if code == OpCode.DRIFT:
                tops.drift_(q, p, op.f[0], minv)
            elif code == OpCode.KICK:
                tops.kick_(p, b.grad[j], op.f[0])
            elif code == OpCode.OU:
                tops.ou_(p, op.f[0], op.f[1], sqrtm, z)
            elif code == OpCode.GRAD_STEP:
                tops.grad_step_(q, b.grad[j], op.f[0])
            elif code == OpCode.WIENER:
                tops.wiener_(q, op.f[0], z)
            elif code == OpCode.LM_NOISE:
                tops.lm_noise_(q, b.prev[j], op.f[0], z)
            elif code == OpCode.FRICTION:
                tops.friction_(p, co[h][0], op.f[0])  # type: ignore[index]  # η: per scope
            elif code == OpCode.ADD_NOISE:
                tops.add_noise_(p, op.f[0], sqrtm, z)
            elif code == OpCode.OU_XI:
                tops.ou_thermostat_(p, co[h][0], op.f[0], op.f[1], sqrtm, z)  # type: ignore[index]
            elif code == OpCode.NHC:
                p.mul_(co[h])  # type: ignore[index]
            else:  # pragma: no cover - guarded by split_segments
                raise NotImplementedError(f"op {code!r} in an elementwise segment")
    if not need_k2:
        return []
    return [torch.linalg.vector_norm(p, dtype=torch.float64).square() for p in b.mom]


# ----------------------------------------------------------------------------------------------
# foreach path
# ----------------------------------------------------------------------------------------------
def _run_foreach(b: Bucket, seg_ops: list[tuple[Op, int]], slots: list[Slot],
                 coefs: list[list[Any] | None], ctx: Context, need_k2: bool) -> list[Tensor]:
    minv, sqrtm = ctx.minv, ctx.sqrtm
    Q, P, G, R = b.theta, b.mom, b.grad, b.prev
    holder = [slots[i].holder for i in b.idx]
    for (op, _), co in zip(seg_ops, coefs, strict=True):
        code = op.code
        Z = draw_views(b, ctx) if op.draws_noise else []
        if code == OpCode.DRIFT:
            torch._foreach_add_(Q, P, alpha=op.f[0] * minv)
        elif code == OpCode.KICK:
            torch._foreach_add_(P, G, alpha=-op.f[0])
        elif code == OpCode.OU:
            torch._foreach_mul_(P, op.f[0])
            torch._foreach_add_(P, Z, alpha=op.f[1] * sqrtm)
        elif code == OpCode.GRAD_STEP:
            torch._foreach_add_(Q, G, alpha=-op.f[0])
        elif code == OpCode.WIENER:
            torch._foreach_add_(Q, Z, alpha=op.f[0])
        elif code == OpCode.LM_NOISE:
            torch._foreach_add_(Q, torch._foreach_add(R, Z), alpha=op.f[0])
            torch._foreach_copy_(R, Z)
        elif code == OpCode.FRICTION:
            torch._foreach_mul_(P, [co[h][1] for h in holder])  # type: ignore[index]
        elif code == OpCode.NHC:
            torch._foreach_mul_(P, [co[h] for h in holder])  # type: ignore[index]
        elif code == OpCode.ADD_NOISE:
            torch._foreach_add_(P, Z, alpha=op.f[0] * sqrtm)
        elif code == OpCode.OU_XI:
            torch._foreach_mul_(P, [co[h][1] for h in holder])  # type: ignore[index]
            torch._foreach_add_(P, torch._foreach_mul(
                Z, [co[h][2] * sqrtm for h in holder]))  # type: ignore[index]
        else:  # pragma: no cover - guarded by split_segments
            raise NotImplementedError(f"op {code!r} in an elementwise segment")
    if not need_k2:
        return []
    return [n.square() for n in torch._foreach_norm(P, dtype=torch.float64)]
