r"""The one executor of every dynopt optimizer: lowered ops run over parameter tensors.

A step of a group is a list of :class:`~dynopt.program.Op` (from
:func:`dynopt.optim.dynamics.build`). The executor runs it over the group's tensors with the
gradient in ``.grad`` as ∇U (the KICK and GRAD_STEP ops read it). It splits the list into
*segments* of elementwise ops separated by the *scalar* thermostat ops (THERMOSTAT, NHC), which
need Σp²/M over the thermostat's scope (N = its number of elements, as in the op table of
:mod:`dynopt.program`). Each segment runs on every (device, dtype) *bucket* of tensors through one
of three interchangeable paths:

* ``"single"``: a loop over tensors calling the reference functions of
  :mod:`dynopt.backends.torch.ops` (used with ``foreach=False`` or ``differentiable=True``; the
  ξ-dependent factors e^{−ξt} of FRICTION and OU_XI are evaluated once per scope, vectorized,
  and applied with the same in-place ops as ``ops.friction_``/``ops.ou_thermostat_``);
* ``"foreach"``: the same arithmetic with ``torch._foreach_*`` kernels (default on CUDA and for
  bfloat16/float16 on the CPU);
* ``"fused"``: :mod:`dynopt.optim.fused`, one numba pass over memory per segment with in-kernel
  counter-based noise (default for contiguous float32/float64 CPU tensors).

Noise. The single and foreach paths draw, for each noise op and bucket, ONE flat buffer of
standard normals (``torch.randn(total_numel)`` from the optimizer's generator on that device, or
the discrete three-point variable) and split it into views in tensor order, so both paths consume
identical numbers and agree bit for bit. For a single tensor this is one ``randn(numel)`` per noise
op per step: exactly the draw order of ``integrate(..., backend="torch")`` with one chain. The
fused path draws Philox normals instead (layout in :mod:`dynopt.backends.numba.segment_kernel`): it
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
from ..program import MOMENTUM_OPS, POSITION_OPS, SEGMENT_END_OPS, Op, OpCode, require

__all__ = ["Bucket", "Slot", "Thermostats", "execute", "split_segments"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)
#: The ops every path of the executor (single, foreach, fused) implements; the scalar ones
#: (:data:`dynopt.program.SEGMENT_END_OPS`) run here, once per step, between the segments.
IMPLEMENTED = frozenset({OpCode.DRIFT, OpCode.KICK, OpCode.OU, OpCode.GRAD_STEP, OpCode.WIENER,
                         OpCode.LM_NOISE, OpCode.FRICTION, OpCode.ADD_NOISE, OpCode.OU_XI,
                         OpCode.THERMOSTAT, OpCode.NHC})


@dataclass
class Slot:
    """One parameter tensor taking part in a step.

    Attributes:
        param: The parameter (updated in place).
        grad: Its gradient (already negated under ``maximize``).
        state: ``optimizer.state[param]``.
        stream: Its index in the optimizer's parameter list (the fused path's noise stream).
        holder: Index of the scope of its thermostat variables (0 when there are none).
    """

    param: Tensor
    grad: Tensor
    state: dict[str, Any]
    stream: int
    holder: int = 0


@dataclass
class Thermostats:
    """The thermostat variables (ξ, η, chain) of every scope in a cohort, stacked.

    Attributes:
        x: ``(n_scopes, n_extras)`` float64 working copy, updated in place during the step.
        holder: ``(n_slots,)`` int64: the scope of each slot.
        n: ``(n_scopes,)`` float64: the number of elements N of each scope.
        targets: The storage of each scope (``state[p]["extras"]`` or a ``global_state`` entry),
            written back at the end of the step.
    """

    x: Tensor
    holder: Tensor
    n: Tensor
    targets: list[Tensor]

    def write_back(self, differentiable: bool = False) -> None:
        if len(self.targets) == 1:
            self.targets[0].copy_(self.x[0])
        elif differentiable:  # _foreach_copy_ has no derivative
            for target, row in zip(self.targets, self.x.unbind(0), strict=True):
                target.copy_(row)
        else:
            torch._foreach_copy_(self.targets, list(self.x.unbind(0)))


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
    #: ``idx`` as an int64 tensor on the thermostats' device (None: built when needed).
    index: Tensor | None = None

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
        noise: ``"gaussian"``, ``"gaussian-f64"`` or ``"discrete"``.
        minv, sqrtm: Inverse and square root of the scalar mass.
        fused: The fused-path runner (:class:`dynopt.optim.fused.FusedRunner`), or None.
        differentiable: Run under autograd: every op on a state tensor (momentum, noise
            memory, thermostat variables) works on a fresh copy, so no tensor that autograd
            saved is modified in place (the parameter itself is updated in place, as torch's
            differentiable optimizers do).
    """

    generator: Callable[[torch.device], torch.Generator]
    seed: int
    step: int
    noise: str
    minv: float
    sqrtm: float
    fused: Any = None
    differentiable: bool = False


Segment = tuple[list[tuple[Op, int]], Op | None]


def split_segments(ops: Sequence[Op]) -> list[Segment]:
    """Cut an op list at the scalar thermostat ops.

    Returns ``[(elementwise ops with their noise slot, scalar op or None), ...]``; the noise slot
    of an op is its index among the noise ops of the whole list (-1 for ops without noise).

    Raises:
        ValueError: If an op is not one the executor implements (:data:`IMPLEMENTED`).
    """
    require(ops, IMPLEMENTED, "optimizer executor")
    segs: list[Segment] = []
    cur: list[tuple[Op, int]] = []
    slot = 0
    for op in ops:
        if op.code in SEGMENT_END_OPS:
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
def execute(segments: list[Segment], slots: list[Slot], thermo: Thermostats | None,
            buckets: list[Bucket], ctx: Context) -> None:
    """Run one step (``segments`` = :func:`split_segments` of its ops) over ``slots``."""
    scales: Tensor | None = None
    for seg_ops, scalar in segments:
        if ctx.differentiable and thermo is not None:
            thermo.x = thermo.x.clone()
        coefs = _per_scope_coefficients(seg_ops, thermo, scales)
        need_k2 = scalar is not None
        k2 = (torch.empty(len(slots), dtype=torch.float64, device=thermo.x.device)
              if need_k2 and thermo is not None else None)
        for b in buckets:
            # a group over several devices: its thermostat lives on the first tensor's device,
            # its per-scope factors are moved to each other bucket's (device-to-device copies)
            bco = (coefs if thermo is None or b.device == thermo.x.device
                   else _moved(coefs, b.device))
            if b.path == "fused":
                vals = ctx.fused.run(b, seg_ops, slots, bco, ctx, need_k2)
            elif b.path == "foreach":
                vals = _run_foreach(b, seg_ops, slots, bco, ctx, need_k2)
            else:
                vals = _run_single(b, seg_ops, slots, bco, ctx, need_k2)
            if k2 is not None:
                index = (b.index if b.index is not None
                         else torch.tensor(b.idx, dtype=torch.int64, device=k2.device))
                k2.index_copy_(0, index, vals.to(k2.device))
        if scalar is not None:
            assert thermo is not None and k2 is not None
            if ctx.differentiable:
                thermo.x = thermo.x.clone()
            scales = _scalar_op(scalar, thermo, k2, ctx)
    if thermo is not None:
        thermo.write_back(ctx.differentiable)
    for b in buckets:
        if b.compute_dtype != b.dtype:
            for i, th in zip(b.idx, b.theta, strict=True):
                slots[i].param.copy_(th)


def _moved(coefs: list[Any], device: torch.device) -> list[Any]:
    """The per-scope coefficients (tensors, tuples of tensors or None) on ``device``."""
    def move(c: Any) -> Any:
        if isinstance(c, Tensor):
            return c.to(device)
        if isinstance(c, tuple):
            return tuple(move(x) for x in c)
        return c
    return [move(c) for c in coefs]


def _per_scope_coefficients(seg_ops: list[tuple[Op, int]], thermo: Thermostats | None,
                            scales: Tensor | None) -> list[Any]:
    """Per op, the per-scope constants of the ξ-dependent ops (None for the others), each a
    vector over scopes.

    FRICTION: (ξ, e^{−ξt}); OU_XI: (ξ, e^{−ξt}, σ√((1−e^{−2ξt})/(2ξ))); the NHC scaling: the
    factor the chain propagation produced. FRICTION's η ← η + ξt is applied here, for every scope
    (ξ does not change within a segment, so this equals doing it at the op).
    """
    out: list[Any] = []
    for op, _ in seg_ops:
        if op.code == OpCode.FRICTION:
            assert thermo is not None
            t, xo, eo = op.f[0], op.i[0], op.i[1]
            xi = thermo.x[:, xo]
            out.append((xi, torch.exp(-t * xi)))
            if eo >= 0:
                thermo.x[:, eo].add_(xi, alpha=t)
        elif op.code == OpCode.OU_XI:
            assert thermo is not None
            xi = thermo.x[:, op.i[0]]
            out.append((xi, *tops.ou_thermostat_coefficients(xi, op.f[0], op.f[1])))
        elif op.code == OpCode.NHC:
            out.append(scales)
        else:
            out.append(None)
    return out


def _scalar_op(op: Op, thermo: Thermostats, k2: Tensor, ctx: Context) -> Tensor | None:
    """THERMOSTAT or NHC on every scope at once, with each scope's N and Σp²/M.

    Returns the NHC momentum scaling of each scope (None for THERMOSTAT).
    """
    x = thermo.x
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device).index_add_(
        0, thermo.holder, k2) * ctx.minv
    if op.code == OpCode.THERMOSTAT:
        tops.thermostat_(x[:, op.i[0]], total, op.f[0], op.f[1], op.f[2] > 0.5, thermo.n,
                         lambda k: k)  # type: ignore[arg-type]
        return None
    m, n_sub, n_sy, xo, eo = op.i
    q_rest = list(op.f[3:3 + m - 1])
    weights = list(op.f[3 + m - 1:3 + m - 1 + n_sy])
    s = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    cols = list(range(xo, xo + m)) + list(range(eo, eo + m))
    # under autograd: independent copies of the columns, reassembled after (no in-place write
    # through views created before x started to require grad)
    work = [x[:, k].clone() if ctx.differentiable else x[:, k] for k in cols]
    tops.nhc_(s, work[:m], work[m:], op.f[0], op.f[1], op.f[2], q_rest, weights, n_sub,
              thermo.n, lambda _: total)  # type: ignore[arg-type]
    if ctx.differentiable:
        new = dict(zip(cols, work, strict=True))
        thermo.x = torch.stack([new.get(k, x[:, k]) for k in range(x.shape[1])], dim=1)
    return s


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
                coefs: list[Any], ctx: Context, need_k2: bool) -> Tensor:
    minv, sqrtm = ctx.minv, ctx.sqrtm
    for (op, _), co in zip(seg_ops, coefs, strict=True):
        code = op.code
        zs = draw_views(b, ctx) if op.draws_noise else None
        if ctx.differentiable:
            _fresh_state(b, slots, code)
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
                p.mul_(co[1][h])  # tops.friction_ with e^{−ξt} evaluated once per scope
            elif code == OpCode.ADD_NOISE:
                tops.add_noise_(p, op.f[0], sqrtm, z)
            elif code == OpCode.OU_XI:
                p.mul_(co[1][h]).add_(co[2][h] * sqrtm * z)  # tops.ou_thermostat_, ditto
            elif code == OpCode.NHC:
                p.mul_(co[h])
            else:  # pragma: no cover - guarded by split_segments
                raise NotImplementedError(f"op {code!r} in an elementwise segment")
    if not need_k2:
        return torch.empty(0)
    return torch.stack([torch.linalg.vector_norm(p, dtype=torch.float64) for p in b.mom]).square()


#: Ops that write the momenta (DRIFT only reads them).
_MOMENTUM_OPS = MOMENTUM_OPS - POSITION_OPS


def _fresh_state(b: Bucket, slots: list[Slot], code: OpCode) -> None:
    """Under autograd: give the state tensors ``code`` modifies fresh copies (stored back in the
    optimizer state), so earlier values that autograd saved stay intact."""
    if code in _MOMENTUM_OPS and b.mom:
        for j, i in enumerate(b.idx):
            b.mom[j] = slots[i].state["momentum_buffer"] = b.mom[j].clone()
    elif code == OpCode.LM_NOISE:
        for j, i in enumerate(b.idx):
            b.prev[j] = slots[i].state["noise_prev"] = b.prev[j].clone()


# ----------------------------------------------------------------------------------------------
# foreach path
# ----------------------------------------------------------------------------------------------
def _run_foreach(b: Bucket, seg_ops: list[tuple[Op, int]], slots: list[Slot],
                 coefs: list[Any], ctx: Context, need_k2: bool) -> Tensor:
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
            f = co[1].unbind()
            torch._foreach_mul_(P, [f[h] for h in holder])
        elif code == OpCode.NHC:
            f = co.unbind()
            torch._foreach_mul_(P, [f[h] for h in holder])
        elif code == OpCode.ADD_NOISE:
            torch._foreach_add_(P, Z, alpha=op.f[0] * sqrtm)
        elif code == OpCode.OU_XI:
            decay, scale = co[1].unbind(), (co[2] * sqrtm).unbind()
            torch._foreach_mul_(P, [decay[h] for h in holder])
            torch._foreach_add_(P, torch._foreach_mul(Z, [scale[h] for h in holder]))
        else:  # pragma: no cover - guarded by split_segments
            raise NotImplementedError(f"op {code!r} in an elementwise segment")
    if not need_k2:
        return torch.empty(0)
    return torch.stack(torch._foreach_norm(P, dtype=torch.float64)).square()
