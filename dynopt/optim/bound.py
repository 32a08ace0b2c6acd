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
  polynomial log/sin/cos; the discrete variable is ≈ 1.73); torch's normals, which the single
  and foreach paths draw, by the generous :data:`TORCH_NORMAL_BOUND` = 32 (any transform of
  uniforms of up to 64 bits stays below 16);
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
  BBI (ordinary step)      Bp ← |r| Bp + h·kick Bg;  Bθ ← Bθ + h·drift Bp
  ======================  ====================================================

If every bound met along the way (and every coefficient) stays below a quarter of the dtype's
largest float, every intermediate and final value is finite: each floating-point operation adds
at most one rounding (a relative 2⁻²⁴ in float32) to a result whose exact value is below the
bound, so no result can round up to inf, and NaN needs an inf or NaN operand (0·inf, inf−inf),
which then cannot exist: the inputs are finite (a NaN/inf input makes its max-scan infinite and
the bound fail). BBI's r, kick and drift come from its shell logic, run first on a copy of
its scalar state, whose result the step then adopts (:func:`bbi_bounded`). The step then runs
without a snapshot; otherwise (a huge lr, parameters near the float range, a NaN placed in a
buffer, ops outside this table such as thermostats,
BBI's events (HeavyBall's ``SetFriction``/``Stop`` events are bounded, see
:func:`heavy_ball_bounded`), priors, first steps, BBI's bounces)
the snapshot path runs exactly as before. Measured cost in docs/architecture.md.

The scan reads θ and p once (two reads; the step itself reads θ, p, ∇L and writes θ, p), where
the snapshot costs two reads, two writes and a two-read result scan; with a carried bound
(below) the scan is skipped.

**Carried bounds.** The same table also bounds what a step *writes*: after a step proven this
way, Bθ, Bp and Br (rounded up for the float rounding of each op, :func:`_rounded_up`) bound the
new θ, p and noise memory. The next step uses them instead of scanning, if nothing else has
touched those tensors: the step counter moved by exactly that one step, and every tensor is the
same object, at the same address, with the same version counter (torch counts every in-place
op in it, and dynopt's numba kernels count their writes, :func:`~dynopt.optim._paths.
mark_written`). So a steady run reads θ and p only in its update: the scan runs on the first
bounded step, after anything touched the state (``load_state_dict``, an in-place op on a
parameter, another optimizer, a skipped or snapshotted step) and whenever the carried bound is
too loose to prove the step (it grows by about h·Bp per step: then a scan refreshes it). Writes
through raw memory escape the version counter: an in-place op through ``p.data``, a numpy view,
ctypes. A NaN/inf put into θ or p that way is not seen by the proof; each op is elementwise
and the gradient is checked, so it stays in its element, the step turns no other value
non-finite, and the next gradient check reports it. (A finite value put there above a quarter
of the largest float could overflow in its element.)
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..program import OpCode
from . import prior
from ._paths import device_of, same_device
from .finite import abs_max

__all__ = ["NORMAL_BOUND", "TORCH_NORMAL_BOUND", "bbi_bounded", "commit_carry",
           "heavy_ball_bounded", "partitioned_bounded"]

#: |ξ| ≤ this for every normal (and the discrete variable) of the fused numba kernel:
#: 8√(ln 2) = 6.66035 for Box–Muller from 32-bit words, plus a margin for the polynomials.
NORMAL_BOUND = 6.67
#: |ξ| ≤ this for torch's normals (the single and foreach paths, ``torch.randn`` on any device).
#: torch states no bound, so this one is generous: its CPU and CUDA generators use Box–Muller
#: from uniforms of at most 53 bits, |ξ| ≤ √(2·53·ln 2) ≈ 8.57; any Box–Muller or polar
#: transform of 64-bit uniforms stays below √(2·64·ln 2) ≈ 9.42, and a 256-layer ziggurat's tail
#: (r + (−ln u)/r, r ≈ 3.65) below 16. A larger bound only makes the proof fail sooner.
TORCH_NORMAL_BOUND = 32.0
#: Bounds must stay below this fraction of the dtype's largest finite value.
_HEADROOM = 0.25


@functools.lru_cache(maxsize=16)
def _float_info(dtype: torch.dtype) -> tuple[float, float, float]:
    """(largest finite, eps, smallest normal) of ``dtype``: ``torch.finfo`` builds an object
    per call, and the bounds read these several times per step."""
    info = torch.finfo(dtype)
    return float(info.max), float(info.eps), float(info.tiny)


def _limit(dtype: torch.dtype) -> float:
    return _float_info(dtype)[0] * _HEADROOM


def _fits(t: Tensor | None, p: Tensor, dtype: torch.dtype) -> bool:
    """A running state buffer the update will address: present and matching its parameter
    (what :func:`dynopt.optim.partitioned._buffer` accepts)."""
    return (isinstance(t, Tensor) and t.shape == p.shape and t.dtype == dtype
            and same_device(t, p) and t.is_contiguous())


def _linear_ops_bound(ops: Any, mass: float, b_theta: float, b_p: float, b_r: float,
                      b_g: float, b_xi: float) -> tuple[float, tuple[float, float, float]]:
    """(the largest bound met while running ``ops`` (inf for an op outside the table), the
    final (Bθ, Bp, Br) in exact arithmetic)."""
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
            return math.inf, (math.inf, math.inf, math.inf)
        top = max(top, k, b_theta, b_p, b_r)
    return top, (b_theta, b_p, b_r)


#: ``opt.__dict__`` keys: the bounds the last bounded step left for the next one, as
#: ``(step counter after it, {plan: (fingerprint, bounds)})``, and those of the step under way.
_CARRY, _PENDING = "_bound_carry", "_bound_pending"
#: ``opt.__dict__`` key: what :func:`partitioned_bounded` found for the update that follows it
#: in the same step, so that the update does not find it again (:class:`StepPlan`).
STEP_PLAN = "_step_plan"


def _fingerprint(ts: list[Tensor]) -> list[tuple[Any, int, int]] | None:
    """What must not change for a carried bound to stay valid (None: cannot be tracked)."""
    if any(t.is_inference() for t in ts):
        return None  # inference tensors keep no version counter
    return [(weakref.ref(t), t.data_ptr(), t._version) for t in ts]


def _same(fingerprint: list[tuple[Any, int, int]], ts: list[Tensor]) -> bool:
    return len(fingerprint) == len(ts) and all(
        ref() is t and ptr == t.data_ptr() and version == t._version
        for (ref, ptr, version), t in zip(fingerprint, ts, strict=True))


def _rounded_up(bounds: tuple[float, ...], n_ops: int, dtype: torch.dtype
                ) -> tuple[float, ...]:
    """Exact-arithmetic bounds made bounds of the stored floats: an op rounds its coefficients,
    products and sum (at most 8 roundings of relative eps/2 each, as (1 + 4 eps) covers), and
    an underflow can add at most the smallest normal float."""
    _, eps, tiny = _float_info(dtype)
    grow = (1.0 + 4.0 * eps) ** n_ops
    return tuple(b * grow + n_ops * tiny for b in bounds)


def _state_bounds(carry: dict[Any, Any], plan: Any, ts: list[Tensor]
                  ) -> tuple[tuple[float, float, float], bool]:
    """((Bθ, Bp, Br), carried): the carried bounds of ``plan`` if ``ts`` are untouched since the
    step that left them, else one max-scan of ``ts`` (all three equal)."""
    got = carry.get(plan)
    if got is not None and _same(got[0], ts):
        return got[1], True
    b = abs_max(ts)  # one scan (one launch, one sync) bounds all three
    return (b, b, b), False


Bound = Callable[[float, float, float], tuple[float, tuple[float, float, float]]]


def _proved(carry: dict[Any, Any], plan: Any, ts: list[Tensor], dtype: torch.dtype,
            bound: Bound) -> tuple[float, float, float] | None:
    """The exact-arithmetic output bounds (Bθ, Bp, Br) of a step that ``bound`` proves finite
    from the state bounds of ``ts``, or None. The carried bounds are tried first; if they are
    too loose by now (they grow by about h·Bp per step), one scan refreshes them."""
    b, carried = _state_bounds(carry, plan, ts)
    top, out = bound(*b)
    if carried and not top < _limit(dtype):  # too loose by now: one scan refreshes them
        b, _ = _state_bounds({}, plan, ts)
        top, out = bound(*b)
    return out if top < _limit(dtype) else None


def _kick_drift(a: float, k: float, d: float, b_g: float, n_sum_sq: int = 0) -> Bound:
    """The bound map of p ← a p − k ∇L, then θ ← θ + d p (HeavyBall: a = c, k = d = h; BBI:
    a = r, k = h·kick, d = h·drift); with ``n_sum_sq`` elements, Σp² of the new p must stay
    finite too (n·Bp² is then part of the largest bound met)."""

    def bound(b_theta: float, b_p: float, b_r: float) -> tuple[float, tuple[float, float, float]]:
        b_p_new = abs(a) * b_p + abs(k) * b_g
        b_theta_new = b_theta + abs(d) * b_p_new
        top = max(abs(a), abs(k), abs(d), b_theta, b_p, b_g, b_p_new, b_theta_new,
                  n_sum_sq * b_p_new * b_p_new)
        return top, (b_theta_new, b_p_new, 0.0)

    return bound


def _take_carry(opt: Any) -> dict[Any, Any]:
    """The carried bounds, if the step that left them was the last step taken (else {});
    consumed: a step that does not end in :func:`commit_carry` leaves none."""
    opt.__dict__.pop(_PENDING, None)
    carry = opt.__dict__.pop(_CARRY, None)
    if carry is None or carry[0] != opt.global_state["step"]:
        return {}
    return carry[1]


def commit_carry(opt: Any) -> None:
    """After a bounded update (step counter already advanced): keep its output bounds for the
    next step, with the tensors' versions as the update left them."""
    pending = opt.__dict__.pop(_PENDING, None)
    if not pending:
        return
    plans = {}
    for plan, (ts, bounds) in pending.items():
        fingerprint = _fingerprint(ts)
        if fingerprint is not None:
            plans[plan] = (fingerprint, bounds)
    opt.__dict__[_CARRY] = (opt.global_state["step"], plans)


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


class StepPlan:
    """What :func:`partitioned_bounded` established for the update that follows it in the same
    step (:meth:`~dynopt.optim.partitioned.Partitioned._update` takes it first thing, so it
    never outlives that step): each group's spec, and for each of its (device, dtype) buckets
    the parameters, their path and their state buffers, already checked as
    :func:`~dynopt.optim.partitioned._buffer` checks them. Keyed by ``id(group)``: the groups
    are alive, and unchanged, between the bound and the update."""

    def __init__(self) -> None:
        self.specs: dict[int, Any] = {}
        self.buckets: dict[tuple[int, torch.device, torch.dtype],
                           tuple[list[Tensor], str, list[Tensor], list[Tensor]]] = {}


def partitioned_bounded(opt: Any, used: Any = None) -> bool:
    """The bound for :class:`~dynopt.optim.partitioned.Partitioned` optimizers (Langevin,
    OverdampedLangevin, ...): every group thermostat-free with a trivial prior, every tensor
    past its first step (empty tensors, which the update skips, aside); the noise bound is
    NORMAL_BOUND on the fused path, TORCH_NORMAL_BOUND on the single and foreach paths. On
    success it leaves the update a :class:`StepPlan`."""
    opt.__dict__.pop(STEP_PLAN, None)
    carry = _take_carry(opt)
    tops = _grad_maxima(opt)
    step_plan = StepPlan()
    plans = []
    for gi, (group, params) in enumerate(_groups_with_gradients(opt)):
        spec = opt._spec(group)  # raises the update's hyperparameter errors before any write
        if spec.n_extras or not prior.is_trivial(group):
            return False
        step_plan.specs[id(group)] = spec
        by_key: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in params:
            if p.numel():  # the update skips empty tensors: they never take a first step
                by_key.setdefault((device_of(p), p.dtype), []).append(p)
        for key, ps in by_key.items():
            path = opt._path(group, ps)
            plans.append((spec, (gi, *key), ps, path, id(group)))
    pending = {}
    for spec, plan, ps, path, group_id in plans:
        key = plan[1:]
        b_xi = NORMAL_BOUND if path == "fused" else TORCH_NORMAL_BOUND
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
        ts = ps + moms + prevs
        b_g = tops.get(key, math.inf)
        out = _proved(carry, plan, ts, key[1],
                      lambda bt, bp, br, spec=spec, b_g=b_g, b_xi=b_xi: _linear_ops_bound(
                          spec.steady, spec.mass, bt, bp, br, b_g, b_xi))
        if out is None:
            return False
        pending[plan] = (ts, _rounded_up(out, len(spec.steady), key[1]))
        step_plan.buckets[(group_id, *key)] = (ps, path, moms, prevs)
    opt.__dict__[_PENDING] = pending
    opt.__dict__[STEP_PLAN] = step_plan
    return True


def _event_frictions(opt: Any) -> list[float] | None:
    """The frictions γ that HeavyBall's events may set during this step (the ``SetFriction``
    actions: the update of a firing step uses the new γ), or None if an event may do anything
    else than set γ or stop the step."""
    from ..events.actions import SetFriction, Stop

    out = []
    for action in opt._events.set.actions():
        if isinstance(action, SetFriction):
            out.append(float(action.gamma))
        elif not isinstance(action, Stop):
            return None
    return out


def heavy_ball_bounded(opt: Any, used: Any = None) -> bool:
    """The bound for :class:`~dynopt.optim.heavy_ball.HeavyBall` (p ← c p − h ∇L, θ ← θ + h p,
    c = 1 − γh) on every path: trivial priors, momenta present.

    Events run inside the update, after this check: a ``SetFriction`` that fires makes that
    very update use its γ, and a ``Stop`` makes it write nothing. So the bound takes the
    largest |c| over the current γ and every γ an event may set (the bound map is monotone in
    |c|); an event γ with γh > 2, which the update refuses only if it fires, sends the step to
    the snapshot path instead of raising here."""
    from ._paths import choose_path

    if opt.stopped:
        return False
    event_gammas = _event_frictions(opt) if len(opt._events) else []
    if event_gammas is None:
        return False
    carry = _take_carry(opt)
    tops = _grad_maxima(opt)
    plans = []
    for group, params in _groups_with_gradients(opt):
        from .heavy_ball import _friction_factor

        h = opt.hyper(group, "lr")  # the update's own checks, before any write
        c = _friction_factor(opt.friction(group), h)
        for gamma in event_gammas:  # as the update would compute it once the event fired
            try:
                c_event = _friction_factor(gamma, h)
            except ValueError:  # refused by the update only if the event fires
                return False
            c = max(c, c_event, key=abs)
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
    pending = {}
    for gi, (h, c, params, moms) in enumerate(plans):
        by_key: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(params):
            by_key.setdefault((device_of(p), p.dtype), []).append(i)
        for key, idx in by_key.items():
            plan = (gi, *key)
            ts = [params[i] for i in idx] + [moms[i] for i in idx]
            b_g = tops.get(key, math.inf)
            out = _proved(carry, plan, ts, key[1], _kick_drift(c, h, h, b_g))
            if out is None:
                return False
            pending[plan] = (ts, _rounded_up(out, 2, key[1]))
    opt.__dict__[_PENDING] = pending
    return True


def bbi_bounded(opt: Any, used: Any = None) -> bool:
    """The bound for :class:`~dynopt.optim.bbi.BBI` on an ordinary step (started, no bounce, no
    first-step start, no events, trivial priors, momenta present).

    BBI's kick and drift are linear once the shell logic has chosen the projection r and the
    rates: Π ← r Π − h·kick ∇L, θ ← θ + h·drift Π. The shell logic is a pure function of the loss,
    |Π|² and BBI's scalar state, so it is run here on a copy of that state (the update adopts
    that result, :data:`dynopt.optim.bbi.TRIAL`) and its choices are bounded like any coefficient;
    the new scalars must be finite, and so must |Π|² (summed by the update in the momenta's
    dtype: n·BΠ² must stay below the limit, see :func:`_kick_drift`).
    """
    from ..backends.torch import energy_ops
    from .bbi import TRIAL, read_extras

    opt.__dict__.pop(TRIAL, None)
    if used is None or len(opt._events) or opt.stopped or "bounce_request" in opt.global_state:
        return False
    st = opt.global_state.get("bbi")
    if st is None or not float(st["started"]):
        return False
    parts = [(group, ps, gs) for group, ps, gs in opt.participants() if ps]
    if not parts or any(not prior.is_trivial(group) for group, _, _ in parts):
        return False
    moms = []
    for _, ps, _ in parts:
        for p in ps:
            m = opt.state.get(p, {}).get("momentum")
            if not _fits(m, p, p.dtype):
                return False
            moms.append(m)
    c = opt.constants
    loss_value, ps2 = opt._host_inputs(used, moms, opt._reference(parts))  # one transfer,
    v = loss_value - c.v0                                   # which the step then reuses
    if not v > c.eps2:
        return False
    trial = read_extras(st)
    control = opt._control_key(v, ps2, 0.0, False, trial)
    dec = energy_ops.bbi_control(v, ps2, 0.0, trial, c)  # on floats: updates trial, not st
    r = float(dec.scale)
    kick, drift = trial["kick_rate"], trial["drift_rate"]
    if bool(dec.bounce) or float(dec.init_coef) != 0.0 or not all(
            math.isfinite(x) or k == "min_V" for k, x in trial.items()):
        return False
    carry = _take_carry(opt)
    tops = _grad_maxima(opt)
    pending = {}
    for gi, (group, ps, _) in enumerate(parts):
        h = opt.hyper(group, "lr")  # the update's own check, before any write
        by_key: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in ps:
            by_key.setdefault((device_of(p), p.dtype), []).append(p)
        for key, kps in by_key.items():
            plan = (gi, *key)
            ts = kps + [opt.state[p]["momentum"] for p in kps]
            b_g = tops.get(key, math.inf)
            n = sum(p.numel() for p in kps)
            out = _proved(carry, plan, ts, key[1],
                          _kick_drift(r, h * kick, h * drift, b_g, n_sum_sq=n))
            if out is None:
                return False
            pending[plan] = (ts, _rounded_up(out, 2, key[1]))
    opt.__dict__[_PENDING] = pending
    opt.__dict__[TRIAL] = (control, trial, dec)  # the step adopts it: one run of the logic
    return True
