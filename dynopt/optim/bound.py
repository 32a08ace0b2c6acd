r"""A cheap proof that a step cannot overflow: the fast path of the non-finite *result* policy.

With ``nonfinite="raise"``/``"skip"`` a step must never write a NaN/inf. The general mechanism
(:mod:`dynopt.optim.rollback`) copies everything the step may change and undoes it if the result
is not finite: one copy and one scan of θ and the optimizer buffers per step. For updates that are
*linear* in (θ, p, ∇L, ξ) with coefficients known before the step, a bound on the magnitudes
proves the result finite without any copy:

* max(|θ|, |p|, |LM noise memory|) is read in one integer max-scan
  (:func:`dynopt.optim.finite.abs_max`) and bounds all three (a looser bound than one per
  buffer, but one launch and one synchronisation); max |∇L| comes free with the gradient check;
* the normals of the fused kernel are bounded: Box–Muller from a 32-bit word u gives
  |ξ| ≤ √(−2 ln 2⁻³²) = 8√(ln 2) ≈ 6.6604 (:data:`NORMAL_BOUND`, with a margin for the
  polynomial log/sin/cos; the discrete variable is ≈ 1.73);
* each op maps the bounds as its update maps the values (triangle inequality):

  ======================  ====================================================
  op                      bound update
  ======================  ====================================================
  DRIFT  θ += (t/M) p     Bθ ← Bθ + |t/M| Bp
  KICK  p −= t ∇L          Bp ← Bp + |t| Bg
  OU  p ← c p + s√M ξ      Bp ← |c| Bp + |s√M| Bξ
  GRAD_STEP  θ −= s ∇L     Bθ ← Bθ + |s| Bg
  WIENER  θ += s ξ         Bθ ← Bθ + |s| Bξ
  LM_NOISE                 Bθ ← Bθ + |s| (Br + Bξ);  Br ← Bξ
  ADD_NOISE  p += s√M ξ    Bp ← Bp + |s√M| Bξ
  HeavyBall                Bp ← |c| Bp + h Bg;  Bθ ← Bθ + h Bp
  ======================  ====================================================

If every bound met along the way (and every coefficient) stays below a quarter of the dtype's
largest float, every intermediate and final value is finite: each floating-point operation adds
at most one rounding (a relative 2⁻²⁴ in float32) to a result whose exact value is below the
bound, so no result can round up to inf, and NaN needs an inf or NaN operand (0·inf, inf−inf),
which then cannot exist: the inputs are finite (a NaN/inf input makes its max-scan infinite and
the bound fail). The step then runs without a snapshot; otherwise (a huge lr, parameters near
the float range, a NaN placed in a buffer, ops outside this table such as thermostats or
energy-dependent steps, torch's normals on the non-fused paths, events, priors, first steps)
the snapshot path runs exactly as before. Measured cost in docs/architecture.md.

The scan reads θ and p once (two reads; the step itself reads θ, p, ∇L and writes θ, p), where
the snapshot costs two reads, two writes and a two-read result scan.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..program import NOISE_OPS, OpCode
from . import prior
from .finite import abs_max

__all__ = ["NORMAL_BOUND", "heavy_ball_bounded", "partitioned_bounded"]

#: |ξ| ≤ this for every normal (and the discrete variable) of the fused numba kernel:
#: 8√(ln 2) = 6.66035 for Box–Muller from 32-bit words, plus a margin for the polynomials.
NORMAL_BOUND = 6.67
#: Bounds must stay below this fraction of the dtype's largest finite value.
_HEADROOM = 0.25


def _limit(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max) * _HEADROOM


def _fits(t: Tensor | None, p: Tensor, dtype: torch.dtype) -> bool:
    """A running state buffer the update will address: present and matching its parameter."""
    return (isinstance(t, Tensor) and t.numel() == p.numel() and t.dtype == dtype
            and t.device == p.device and t.is_contiguous())


def _linear_ops_bound(ops: Any, mass: float, b_theta: float, b_p: float, b_r: float,
                      b_g: float, b_xi: float) -> float:
    """The largest bound met while running ``ops`` (inf for an op outside the table)."""
    top = max(b_theta, b_p, b_r, b_g)
    sqrtm = math.sqrt(mass)
    for op in ops:
        c = op.code
        if c == OpCode.DRIFT:
            k = abs(op.f[0] / mass)
            b_theta += k * b_p
        elif c == OpCode.KICK:
            k = abs(op.f[0])
            b_p += k * b_g
        elif c == OpCode.OU:
            k = max(abs(op.f[0]), abs(op.f[1] * sqrtm))
            b_p = abs(op.f[0]) * b_p + abs(op.f[1] * sqrtm) * b_xi
        elif c == OpCode.GRAD_STEP:
            k = abs(op.f[0])
            b_theta += k * b_g
        elif c == OpCode.WIENER:
            k = abs(op.f[0])
            b_theta += k * b_xi
        elif c == OpCode.LM_NOISE:
            k = abs(op.f[0])
            b_theta += k * (b_r + b_xi)
            b_r = b_xi
        elif c == OpCode.ADD_NOISE:
            k = abs(op.f[0] * sqrtm)
            b_p += k * b_xi
        else:
            return math.inf
        top = max(top, k, b_theta, b_p, b_r)
    return top


def _grad_maxima(opt: Any) -> dict[tuple[torch.device, torch.dtype], float]:
    """max |∇L| per (device, dtype), left by this step's gradient check."""
    return opt.__dict__.get("_grad_absmax", {})


def _groups_with_gradients(opt: Any) -> list[tuple[dict[str, Any], list[Tensor]]]:
    """(group, its parameters with a gradient) for every group that has any."""
    out = []
    for group in opt.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            out.append((group, params))
    return out


def partitioned_bounded(opt: Any) -> bool:
    """The bound for :class:`~dynopt.optim.partitioned.Partitioned` optimizers (Langevin,
    OverdampedLangevin, ...): every group thermostat-free with a trivial prior, every tensor
    past its first step, on the fused path wherever the ops draw noise."""
    tops = _grad_maxima(opt)
    plans = []
    for group, params in _groups_with_gradients(opt):
        spec = opt._spec(group)  # raises the update's hyperparameter errors before any write
        if spec.n_extras or not prior.is_trivial(group):
            return False
        by_key: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in params:
            by_key.setdefault((p.device, p.dtype), []).append(p)
        for key, ps in by_key.items():
            path = opt._path(group, ps)
            plans.append((spec, key, ps, path))
    for spec, key, ps, path in plans:
        if any(op.code in NOISE_OPS for op in spec.steady) and path != "fused":
            return False  # torch's normals: no bound stated
        work = torch.float32 if key[1] in (torch.bfloat16, torch.float16) else key[1]
        moms, prevs = [], []
        for p in ps:
            st = opt.state.get(p)
            if not st or "step" not in st:
                return False  # a first step initialises the state (snapshot path)
            if spec.has_momentum:
                if not _fits(st.get("momentum_buffer"), p, work):
                    return False
                moms.append(st["momentum_buffer"])
            if spec.needs_prev:
                if not _fits(st.get("noise_prev"), p, work):
                    return False
                prevs.append(st["noise_prev"])
        b_x = abs_max(ps + moms + prevs)  # one scan (one launch, one sync) bounds all three
        top = _linear_ops_bound(spec.steady, spec.mass, b_x, b_x, b_x, tops.get(key, math.inf),
                                NORMAL_BOUND)
        if not top < _limit(key[1]):
            return False
    return True


def heavy_ball_bounded(opt: Any) -> bool:
    """The bound for :class:`~dynopt.optim.heavy_ball.HeavyBall` (p ← c p − h ∇L, θ ← θ + h p,
    c = 1 − γh) on every path: no events, trivial priors, momenta present."""
    from ._paths import choose_path

    if len(opt._events) or opt.stopped:
        return False
    tops = _grad_maxima(opt)
    plans = []
    for group, params in _groups_with_gradients(opt):
        h = opt.hyper(group, "lr")  # the update's own checks, before any write
        c = 1.0 - opt.friction(group) * h
        if not prior.is_trivial(group):
            return False
        moms = []
        for p in params:
            m = opt.state.get(p, {}).get("momentum")
            if not _fits(m, p, p.dtype):
                return False
            moms.append(m)
        choose_path(group, params + [p.grad for p in params] + moms, type(opt).__name__)
        plans.append((h, c, params, moms))
    for h, c, params, moms in plans:
        by_key: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(params):
            by_key.setdefault((p.device, p.dtype), []).append(i)
        for key, idx in by_key.items():
            b_x = abs_max([moms[i] for i in idx] + [params[i] for i in idx])  # one scan
            b_g = tops.get(key, math.inf)
            b_p_new = abs(c) * b_x + h * b_g
            b_theta = b_x + h * b_p_new
            if not max(abs(c), h, b_x, b_g, b_p_new, b_theta) < _limit(key[1]):
                return False
    return True
