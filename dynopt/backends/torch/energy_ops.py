"""Energy-conserving-descent and port-Hamiltonian ops of :mod:`dynopt.program` in torch.

The *control* functions (:func:`bbi_control`, :func:`ecd_control`) hold the per-chain scalar
logic of the shell ops (first-step initialisation, bounce decisions, counters, the projection
factor) on tensors of any broadcastable shape: ``(chains, 1)`` columns of the extras in
``integrate()``, 1-element float64 tensors in the optimizers, which apply the result to all
their parameter tensors with global norms. The numba kernel implements the same logic per lane
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

    init_coef: Tensor
    ps2: Tensor
    bounce: Tensor
    fixed: Tensor
    scale: Tensor


def bbi_control(v: Tensor, ps2: Tensor, g2: Tensor, st: Columns, c: BBIConstants,
                force: Tensor | None = None) -> BBIDecision:
    """Born–Infeld shell logic on per-chain scalars; updates the extras ``st`` in place.

    Args:
        v: U(q) − v₀ at the start of the step.
        ps2: |p|² before the step.
        g2: |∇U|² (only read on the first active step).
        st: The ``BBI_EXTRAS`` columns (tensors broadcastable with ``v``).
        c: The op's constants.
        force: Optional mask of chains that must bounce now (the ``Bounce`` event action).
    """
    active = v > c.eps2
    first = active & (st["started"] == 0)
    E0 = torch.where(first, v + c.delta_energy, st["E0"])
    st["E0"].copy_(E0)
    st["started"].copy_(torch.where(first, torch.ones_like(v), st["started"]))
    st["min_V"].copy_(torch.where(first, torch.full_like(v, math.inf), st["min_V"]))
    target = E0 * E0 / v - v
    init = first & (ps2 == 0) & (g2 > 0) & (target > 0)
    init_coef = torch.where(init, torch.sqrt(torch.where(init, target / g2, 1.0)), 0.0 * v)
    ps2 = torch.where(init, target, ps2)
    counter0, counter, fixed = st["counter0"], st["counter"], st["fixed_bounces"]
    at_t0 = counter0 == c.t0
    fixed_bounce = active & at_t0 & (fixed < c.n_bounces)
    bounce = fixed_bounce | (active & (counter == c.t1))
    if force is not None:
        bounce = bounce | (active & force)
    normal = active & ~bounce
    correct = v * ((E0 / v) ** 2 - 1.0)
    # (E0/V)² overflows float32 once E0/V > 1.8e19 (a loss near its floor v0); E0²/V − V, the
    # same value rounded differently, still fits: used there only, so other values keep theirs
    correct = torch.where(torch.isfinite(correct), correct, target)
    skip = ((ps2 - correct).abs() < c.eps1) | (correct < 0) | (ps2 == 0)
    if not c.project:
        skip = torch.ones_like(skip)
    project = normal & ~skip
    scale = torch.where(project, torch.sqrt(torch.where(project, correct / ps2, 1.0)), 1.0 + 0 * v)
    zero = torch.zeros_like(v)
    st["kick_rate"].copy_(torch.where(normal, 0.5 * (v / E0 + E0 / v), zero))
    st["drift_rate"].copy_(torch.where(normal, v / E0, zero))
    # counters (the authors' order: advance, then reset on a new minimum; bounce branch)
    counted = bounce & at_t0
    new_fixed = torch.where(counted, fixed + 1, fixed)
    c0_bounce = torch.where(new_fixed < c.n_bounces, zero, counter0 + 1)
    st["counter0"].copy_(torch.where(normal, counter0 + 1,
                                     torch.where(counted, c0_bounce, counter0)))
    st["fixed_bounces"].copy_(new_fixed)
    new_min = normal & (v < st["min_V"])
    st["min_V"].copy_(torch.where(new_min, v, st["min_V"]))
    st["counter"].copy_(torch.where(new_min | bounce, zero,
                                    torch.where(normal, counter + 1, counter)))
    st["bounces"].add_(bounce.to(v.dtype))
    st["V"].copy_(v)
    return BBIDecision(init_coef=init_coef, ps2=ps2, bounce=bounce, fixed=counted, scale=scale)


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
    ps2 = p.double().square().sum(-1, keepdim=True)
    g2 = grad.double().square().sum(-1, keepdim=True)
    dec = bbi_control(v.double(), ps2, g2, st, c)
    # the (chains, dim) products in p's dtype, each chain's coefficient rounded to it first, as
    # the optimizer applies them (bbi.scalar_like): float64 coefficients made every step's
    # full-size where/mul float64 passes (float32 integrate 2-3x slower per step)
    p.copy_(torch.where(dec.init_coef != 0, -dec.init_coef.to(p.dtype) * grad, p))
    if isinstance(generator, torch.Generator):
        if bool(dec.bounce.any()):
            u = bounce_direction(tuple(p.shape), generator, p.dtype, p.device, c.cube)
            u2 = (u * u).sum(-1, keepdim=True)
            p.copy_(torch.where(dec.bounce, u * torch.sqrt(dec.ps2 / u2), p))
    else:  # per-chain streams: a chain draws only when it bounces itself
        for i in torch.nonzero(dec.bounce[:, 0]).flatten().tolist():
            u = bounce_direction((p.shape[1],), generator[i], p.dtype, p.device, c.cube)
            p[i] = u * torch.sqrt(dec.ps2[i] / (u * u).sum())
    p.mul_(dec.scale.to(p.dtype))
    return dec


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
    p ← scale·p."""

    init_coef: Tensor
    scale: Tensor
    active: Tensor


def ecd_control(fd: Tensor, ps2: Tensor, g2: Tensor, st: Columns, c: ECDConstants) -> ECDDecision:
    """ECDSep shell logic on per-chain scalars (``fd`` = U − F₀); updates ``st`` in place."""
    positive = fd > 0
    v = torch.where(positive, torch.where(positive, fd, 1.0) ** c.eta, 0.0 * fd)
    active = positive & (v > c.eps2)
    first = active & (st["started"] == 0)
    st["E"].copy_(torch.where(first, v * (c.s + c.delta_energy), st["E"]))
    st["started"].copy_(torch.where(first, torch.ones_like(fd), st["started"]))
    init = first & (ps2 == 0) & (g2 > 0) & (c.delta_energy > 0)
    init_coef = torch.where(init, torch.sqrt(c.delta_energy / torch.where(init, g2, 1.0)),
                            0.0 * fd)
    ps2 = torch.where(init, torch.full_like(ps2, c.delta_energy), ps2)
    target = st["E"] / torch.where(active, v, 1.0) - c.s
    skip = ((target - ps2).abs() < c.eps1) | (target < 0) | (ps2 == 0)
    if not c.project:
        skip = torch.ones_like(skip)
    project = active & ~skip
    scale = torch.where(project, torch.sqrt(torch.where(project, target / ps2, 1.0)),
                        1.0 + 0 * fd)
    zero = torch.zeros_like(fd)
    st["kick_rate"].copy_(torch.where(active, c.eta / torch.where(active, fd, 1.0), zero))
    st["moving"].copy_(active.to(fd.dtype))
    st["F"].copy_(fd)
    return ECDDecision(init_coef=init_coef, scale=scale, active=active)


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
