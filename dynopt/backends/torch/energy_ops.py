"""Energy-conserving-descent and port-Hamiltonian ops of :mod:`dynopt.program` in torch.

The *control* functions (:func:`bbi_control`, :func:`ecd_control`) hold the per-chain scalar
logic of the shell ops (first-step initialisation, bounce decisions, counters, the projection
factor) on tensors of any broadcastable shape: ``(chains, 1)`` columns of the extras in
``integrate()``, Python floats in the optimizers (the same arithmetic bit for bit, without
one-element torch ops), which apply the result to all their parameter tensors with global
norms. The numba kernel implements the same logic per lane
(:mod:`dynopt.backends.numba.energy_ops`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "BBIConstants",
    "BBIDecision",
    "ECDConstants",
    "ECDDecision",
    "bbi_control",
    "bbi_shell_",
    "bounce_direction",
    "ecd_control",
    "ecd_drift_",
    "ecd_shell_",
    "linear_friction_",
    "rotate_",
    "scaled_drift_",
    "scaled_kick_",
]

Columns = MutableMapping[str, Tensor]


def linear_friction_(p: Tensor, gamma: Tensor | float, t: float) -> None:
    """LIN_FRIC: p ← (1 − tγ) p."""
    p.mul_(1.0 - t * gamma)


def scaled_kick_(p: Tensor, grad: Tensor, t: float, rate: Tensor) -> None:
    """SC_KICK: p ← p − t·rate·∇U."""
    p.sub_(grad * (t * rate))


def scaled_drift_(q: Tensor, p: Tensor, t: float, rate: Tensor, minv: Tensor | float) -> None:
    """SC_DRIFT: q ← q + t·rate·M⁻¹p."""
    q.add_(p * minv * (t * rate))


@dataclass(frozen=True)
class BBIConstants:
    """The constants of a ``BBI_SHELL`` op (``t0``/``t1`` may be ``inf``)."""

    v0: float
    delta_energy: float
    t0: float
    n_bounces: float
    t1: float
    eps1: float
    eps2: float
    project: bool
    cube: bool

    @classmethod
    def from_op(cls, f: tuple[float, ...]) -> BBIConstants:
        return cls(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7] > 0.5, f[8] > 0.5)


@dataclass
class BBIDecision:
    """What a ``BBI_SHELL`` does to the momenta (per chain).

    Attributes:
        init_coef: Where nonzero, p ← −init_coef·∇U (the first step's start along −∇V).
        ps2: |p|² after the initialisation (what a bounce must keep).
        bounce: Chains that bounce this step (random direction, same |p|, no move).
        fixed: Chains whose bounce is a fixed (T₀) bounce.
        scale: The projection factor r (1 where there is none).
    """

    init_coef: Any
    ps2: Any
    bounce: Any
    fixed: Any
    scale: Any


class _TensorOps:
    """The primitives of :func:`_bbi_logic` on tensors (every branch evaluated, as torch does)."""

    where = staticmethod(torch.where)
    sqrt = staticmethod(torch.sqrt)
    isfinite = staticmethod(torch.isfinite)

    @staticmethod
    def div(a: Tensor, b: Tensor) -> Tensor:
        return a / b

    @staticmethod
    def square(a: Tensor) -> Tensor:
        return a ** 2  # torch computes pow(a, 2) as a * a (the float path's product)

    @staticmethod
    def logical_not(a: Tensor) -> Tensor:
        return ~a

    @staticmethod
    def full(like: Tensor, x: float) -> Tensor:
        return torch.full_like(like, x)

    @staticmethod
    def true(like: Tensor) -> Tensor:
        return torch.ones_like(like)

    @staticmethod
    def as_float(b: Tensor, like: Tensor) -> Tensor:
        return b.to(like.dtype)

    @staticmethod
    def rdiv(a: float, b: Tensor) -> Tensor:
        return a / b  # torch computes a Python scalar over a tensor as reciprocal(b) * a

    @staticmethod
    def pow(a: Tensor, e: float) -> Tensor:
        return a ** e

    @staticmethod
    def stored(x: Tensor, column: Tensor) -> Tensor:
        return x.to(column.dtype)  # the value an in-place copy_ into the column holds


class _FloatOps:
    """The same primitives on Python floats and bools, with IEEE-754 float64 results where
    Python would raise (x/0, sqrt of a negative): the tensor path's values bit for bit, since
    +, −, × and ÷ are correctly rounded in both, and √ and pow follow torch's kernels."""

    @staticmethod
    def where(cond: bool, a: Any, b: Any) -> Any:
        return a if cond else b

    @staticmethod
    def sqrt(x: float) -> float:
        """torch's CPU float64 sqrt, which is not correctly rounded (it differs from
        ``math.sqrt`` by an ulp for ~1% of inputs): through a 1-element tensor, except where
        the result is exact (0, ±0, 1, inf) or NaN, the common cases that cost no dispatch."""
        if x == 1.0 or x == 0.0 or x == math.inf:
            return x  # −0 stays −0
        if not x > 0.0:
            return math.nan
        return float(torch.sqrt(torch.tensor([x], dtype=torch.float64)))

    @staticmethod
    def isfinite(x: float) -> bool:
        return math.isfinite(x)

    @staticmethod
    def div(a: float, b: float) -> float:
        if b != 0.0:
            return a / b
        if a != a or a == 0.0:  # 0/0, NaN/0
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)

    @staticmethod
    def square(a: float) -> float:
        return a * a

    @staticmethod
    def logical_not(a: bool) -> bool:
        return not a

    @staticmethod
    def full(like: float, x: float) -> float:
        return x

    @staticmethod
    def true(like: bool) -> bool:
        return True

    @staticmethod
    def as_float(b: bool, like: float) -> float:
        return float(b)

    @classmethod
    def rdiv(cls, a: float, b: float) -> float:
        return cls.div(1.0, b) * a  # as torch: reciprocal, then the product

    @staticmethod
    def pow(a: float, e: float) -> float:
        """a ** e for a > 0 (or +inf) as torch's CPU kernel: e = 1 the value itself, 2 and 3
        repeated products, otherwise libm's pow (std::pow), +inf where Python would raise."""
        if e == 1.0:
            return a
        if e == 2.0:
            return a * a
        if e == 3.0:
            return a * a * a
        try:
            return math.pow(a, e)
        except OverflowError:
            return math.inf

    @staticmethod
    def stored(x: float, column: float) -> float:
        return x


def bbi_control(v: Tensor | float, ps2: Tensor | float, g2: Tensor | float, st: Columns,
                c: BBIConstants, force: Tensor | bool | None = None) -> BBIDecision:
    """Born–Infeld shell logic on per-chain scalars; updates the extras ``st`` in place.

    One implementation for two kinds of scalars: tensors (the torch backend's ``(chains, 1)``
    columns) or Python floats (the optimizer's single chain: ``st`` then maps the extras'
    names to floats, and the decision holds floats and bools). Both give the same values bit
    for bit (:class:`_FloatOps`); the float path avoids ~60 dispatches of one-element torch ops.

    Args:
        v: U(q) − v₀ at the start of the step.
        ps2: |p|² before the step.
        g2: |∇U|² (only read on the first active step).
        st: The ``BBI_EXTRAS`` columns (tensors broadcastable with ``v``, or floats).
        c: The op's constants.
        force: Optional mask of chains that must bounce now (the ``Bounce`` event action).
    """
    if isinstance(v, Tensor):
        new, dec = _bbi_logic(_TensorOps, v, ps2, g2, st, c, force)
        for k, x in new.items():
            st[k].copy_(x)
    else:
        new, dec = _bbi_logic(_FloatOps, float(v), float(ps2), float(g2), st, c,  # type: ignore[arg-type]
                              None if force is None else bool(force))
        st.update(new)
    return dec


def _bbi_logic(ops: Any, v: Any, ps2: Any, g2: Any, st: Columns, c: BBIConstants, force: Any
               ) -> tuple[dict[str, Any], BBIDecision]:
    """:func:`bbi_control`'s arithmetic, on the primitives ``ops``: (the new extras, the
    decision). Reads ``st`` only."""
    where, div = ops.where, ops.div
    active = v > c.eps2
    first = active & (st["started"] == 0)
    E0 = where(first, v + c.delta_energy, st["E0"])
    started = where(first, ops.full(v, 1.0), st["started"])
    min_v = where(first, ops.full(v, math.inf), st["min_V"])
    target = div(E0 * E0, v) - v
    init = first & (ps2 == 0) & (g2 > 0) & (target > 0)
    init_coef = where(init, ops.sqrt(where(init, div(target, g2), 1.0)), 0.0 * v)
    ps2 = where(init, target, ps2)
    counter0, counter, fixed = st["counter0"], st["counter"], st["fixed_bounces"]
    at_t0 = counter0 == c.t0
    fixed_bounce = active & at_t0 & (fixed < c.n_bounces)
    bounce = fixed_bounce | (active & (counter == c.t1))
    if force is not None:
        bounce = bounce | (active & force)
    normal = active & ops.logical_not(bounce)
    correct = v * (ops.square(div(E0, v)) - 1.0)
    # (E0/V)² overflows float32 once E0/V > 1.8e19 (a loss near its floor v0); E0²/V − V, the
    # same value rounded differently, still fits: used there only, so other values keep theirs
    correct = where(ops.isfinite(correct), correct, target)
    skip = (abs(ps2 - correct) < c.eps1) | (correct < 0) | (ps2 == 0)
    if not c.project:
        skip = ops.true(skip)
    project = normal & ops.logical_not(skip)
    scale = where(project, ops.sqrt(where(project, div(correct, ps2), 1.0)), 1.0 + 0 * v)
    zero = ops.full(v, 0.0)
    # counters (the authors' order: advance, then reset on a new minimum; bounce branch)
    counted = bounce & at_t0
    new_fixed = where(counted, fixed + 1, fixed)
    c0_bounce = where(new_fixed < c.n_bounces, zero, counter0 + 1)
    new_min = normal & (v < min_v)
    new = {
        "E0": E0,
        "started": started,
        "kick_rate": where(normal, 0.5 * (div(v, E0) + div(E0, v)), zero),
        "drift_rate": where(normal, div(v, E0), zero),
        "counter0": where(normal, counter0 + 1, where(counted, c0_bounce, counter0)),
        "fixed_bounces": new_fixed,
        "min_V": where(new_min, v, min_v),
        "counter": where(new_min | bounce, zero, where(normal, counter + 1, counter)),
        "bounces": st["bounces"] + ops.as_float(bounce, v),
        "V": v,
    }
    return new, BBIDecision(init_coef=init_coef, ps2=ps2, bounce=bounce, fixed=counted,
                            scale=scale)


def bounce_direction(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
                     device: torch.device, cube: bool) -> Tensor:
    """Raw bounce directions: U[−½, ½) per component (``cube``, the authors') or N(0, 1)."""
    if cube:
        return torch.rand(shape, generator=generator, dtype=dtype, device=device) - 0.5
    return torch.randn(shape, generator=generator, dtype=dtype, device=device)


def bbi_shell_(p: Tensor, grad: Tensor, v: Tensor, st: Columns, c: BBIConstants,
               generator: Any) -> BBIDecision:
    """BBI_SHELL on a batch ``p`` of shape (chains, dim) with v, extras of shape (chains, 1).

    Bounce directions are drawn (one ``(chains, dim)`` tensor) only on steps where some chain
    bounces, so a run with a single chain draws exactly what the optimizer draws.
    """
    # the per-chain scalars in float64 (v arrives so), as the optimizer computes them: a
    # float32 |p|² overflows once |p| > 1.8e19, which BBI reaches near its floor (E₀²/V)
    ps2 = _sum_sq64(p)
    # |∇U|² is read only by a chain's first active step (bbi_control's ``first``): on the CPU,
    # where the check costs no device synchronisation, it is summed only while a chain has not
    # started (zeros otherwise, which the logic then never reads)
    cpu = p.device.type == "cpu"
    needs_g2 = not cpu or bool((st["started"] == 0).any())
    g2 = _sum_sq64(grad) if needs_g2 else torch.zeros_like(ps2)
    dec = bbi_control(v.double(), ps2, g2, st, c)
    # the (chains, dim) products in p's dtype, each chain's coefficient (the bounce's
    # √(|p|²/|u|²) too) rounded to it first, as the optimizer applies them (bbi.scalar_like):
    # float64 coefficients made every step's full-size where/mul float64 passes (float32
    # integrate 2-3x slower per step) and float32 runs differ from the optimizer's in the last
    # bits. The start along −∇U is skipped (on the CPU) when no chain takes it: where() would
    # copy p onto itself
    if not cpu or bool((dec.init_coef != 0).any()):
        p.copy_(torch.where(dec.init_coef != 0, -dec.init_coef.to(p.dtype) * grad, p))
    if isinstance(generator, torch.Generator):
        if bool(dec.bounce.any()):
            u = bounce_direction(tuple(p.shape), generator, p.dtype, p.device, c.cube)
            u2 = (u * u).sum(-1, keepdim=True)
            p.copy_(torch.where(dec.bounce, u * torch.sqrt(dec.ps2 / u2).to(p.dtype), p))
    else:  # per-chain streams: a chain draws only when it bounces itself
        for i in torch.nonzero(dec.bounce[:, 0]).flatten().tolist():
            u = bounce_direction((p.shape[1],), generator[i], p.dtype, p.device, c.cube)
            p[i] = u * torch.sqrt(dec.ps2[i] / (u * u).sum()).to(p.dtype)
    p.mul_(dec.scale.to(p.dtype))
    return dec


def _sum_sq64(x: Tensor) -> Tensor:
    """Σ x² over the last axis (keepdim) in float64: the squares of a float64 copy of ``x``,
    squared in place (the same values and summation as ``x.double().square().sum(-1)``, one
    float64 temporary instead of two)."""
    x64 = x.double() if x.dtype != torch.float64 else x.clone()
    return x64.square_().sum(-1, keepdim=True)


@dataclass(frozen=True)
class ECDConstants:
    """The constants of an ``ECD_SHELL`` op."""

    f0: float
    eta: float
    s: float
    delta_energy: float
    eps1: float
    eps2: float
    project: bool

    @classmethod
    def from_op(cls, f: tuple[float, ...]) -> ECDConstants:
        return cls(f[0], f[1], f[2], f[3], f[4], f[5], f[6] > 0.5)


@dataclass
class ECDDecision:
    """What an ``ECD_SHELL`` does to the momenta: p ← −init_coef·∇U where nonzero, then
    p ← scale·p (tensors, or a float, a float and a bool on the float path)."""

    init_coef: Any
    scale: Any
    active: Any


def ecd_control(fd: Tensor | float, ps2: Tensor | float, g2: Tensor | float, st: Columns,
                c: ECDConstants) -> ECDDecision:
    """ECDSep shell logic on per-chain scalars (``fd`` = U − F₀); updates ``st`` in place.

    As :func:`bbi_control`, one implementation for tensors (the torch backend's ``(chains, 1)``
    columns) and Python floats (the optimizer's single chain: ``st`` maps the extras' names to
    floats, and the decision holds floats and bools), equal bit for bit.
    """
    if isinstance(fd, Tensor):
        new, dec = _ecd_logic(_TensorOps, fd, ps2, g2, st, c)
        for k, x in new.items():
            st[k].copy_(x)
    else:
        new, dec = _ecd_logic(_FloatOps, float(fd), float(ps2), float(g2), st, c)
        st.update(new)
    return dec


def _ecd_logic(ops: Any, fd: Any, ps2: Any, g2: Any, st: Columns, c: ECDConstants
               ) -> tuple[dict[str, Any], ECDDecision]:
    """:func:`ecd_control`'s arithmetic, on the primitives ``ops``: (the new extras, the
    decision). Reads ``st`` only."""
    where = ops.where
    positive = fd > 0
    v = where(positive, ops.pow(where(positive, fd, 1.0), c.eta), 0.0 * fd)
    active = positive & (v > c.eps2)
    first = active & (st["started"] == 0)
    E = ops.stored(where(first, v * (c.s + c.delta_energy), st["E"]), st["E"])
    started = where(first, ops.full(fd, 1.0), st["started"])
    init = first & (ps2 == 0) & (g2 > 0) & (c.delta_energy > 0)
    init_coef = where(init, ops.sqrt(ops.rdiv(c.delta_energy, where(init, g2, 1.0))), 0.0 * fd)
    ps2 = where(init, ops.full(ps2, c.delta_energy), ps2)
    target = ops.div(E, where(active, v, 1.0)) - c.s
    skip = (abs(target - ps2) < c.eps1) | (target < 0) | (ps2 == 0)
    if not c.project:
        skip = ops.true(skip)
    project = active & ops.logical_not(skip)
    scale = where(project, ops.sqrt(where(project, ops.div(target, ps2), 1.0)), 1.0 + 0 * fd)
    zero = ops.full(fd, 0.0)
    new = {
        "E": E,
        "started": started,
        "kick_rate": where(active, ops.rdiv(c.eta, where(active, fd, 1.0)), zero),
        "moving": ops.as_float(active, fd),
        "F": fd,
    }
    return new, ECDDecision(init_coef=init_coef, scale=scale, active=active)


def ecd_shell_(p: Tensor, grad: Tensor, fd: Tensor, st: Columns, c: ECDConstants) -> ECDDecision:
    """ECD_SHELL on a batch ``p`` (chains, dim) with ``fd`` and the extras of shape (chains, 1)."""
    ps2 = (p * p).sum(-1, keepdim=True)
    g2 = (grad * grad).sum(-1, keepdim=True)
    dec = ecd_control(fd, ps2, g2, st, c)
    p.copy_(torch.where(dec.init_coef != 0, -dec.init_coef * grad, p))
    p.mul_(dec.scale)
    return dec


def ecd_drift_(q: Tensor, p: Tensor, t: float, s: float, moving: Tensor) -> None:
    """ECD_DRIFT: q ← q + moving · 2t p / (s + |p|²) (|p|² over the last axis); nothing where
    s + |p|² = 0 (s = 0, p = 0: the 0/0 was NaN)."""
    d = s + (p * p).sum(-1, keepdim=True)
    ok = d > 0
    q.add_(p * torch.where(ok, moving * 2.0 * t / torch.where(ok, d, torch.ones_like(d)),
                           torch.zeros_like(d)))


def rotate_(p: Tensor, z: Tensor, nu: float, moving: Tensor,
            norm2: Callable[[Tensor], Tensor] | None = None) -> None:
    """ROTATE: p ← |p| u/|u|, u = p/|p| + νz, where ``moving`` ≠ 0 and p ≠ 0 (ν = 0: no-op)."""
    if nu == 0.0:
        return

    def sq(t: Tensor) -> Tensor:
        return (t * t).sum(-1, keepdim=True) if norm2 is None else norm2(t)

    pn = torch.sqrt(sq(p))
    ok = (moving != 0) & (pn > 0)
    safe = torch.where(ok, pn, torch.ones_like(pn))
    u = p / safe + nu * z
    un = torch.sqrt(sq(u))
    p.copy_(torch.where(ok, u * (pn / torch.where(ok, un, torch.ones_like(un))), p))
