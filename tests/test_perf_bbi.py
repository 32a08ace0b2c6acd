"""The Born–Infeld shell logic and the torch backend's BBI shell, bit for bit as before session 16.

Session 16 made them faster without changing a value: ``bbi_control`` runs once, on either
tensors (the torch backend) or Python floats (the BBI optimizer: no one-element torch ops), and
``bbi_shell_`` sums |p|² and |∇U|² with one float64 temporary each, |∇U|² only while a chain has
not started, and skips the start along −∇U when no chain takes it. The functions below are the
code before that change, verbatim (``_old_``): every test compares the new code with them
exactly (NaN with NaN, and the sign of zero).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor

from dynopt.backends.torch.energy_ops import (
    BBIConstants,
    BBIDecision,
    bbi_control,
    bbi_shell_,
    bounce_direction,
)
from dynopt.program import BBI_EXTRAS

Columns = dict[str, Tensor]


# --- the code before session 16, verbatim ------------------------------------------------------
def _old_bbi_control(v: Tensor, ps2: Tensor, g2: Tensor, st: Columns, c: BBIConstants,
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


def _old_bbi_shell_(p: Tensor, grad: Tensor, v: Tensor, st: Columns, c: BBIConstants,
                    generator: Any) -> BBIDecision:
    """BBI_SHELL on a batch ``p`` of shape (chains, dim) with v, extras of shape (chains, 1).

    Bounce directions are drawn (one ``(chains, dim)`` tensor) only on steps where some chain
    bounces, so a run with a single chain draws exactly what the optimizer draws.
    """
    # the per-chain scalars in float64 (v arrives so), as the optimizer computes them: a
    # float32 |p|² overflows once |p| > 1.8e19, which BBI reaches near its floor (E₀²/V)
    ps2 = p.double().square().sum(-1, keepdim=True)
    g2 = grad.double().square().sum(-1, keepdim=True)
    dec = _old_bbi_control(v.double(), ps2, g2, st, c)
    # the (chains, dim) products in p's dtype, each chain's coefficient rounded to it first, as
    # the optimizer applies them (bbi.scalar_like): float64 coefficients made every step's
    # full-size where/mul float64 passes (float32 integrate 2-3x slower per step)
    p.copy_(torch.where(dec.init_coef != 0, -dec.init_coef.to(p.dtype) * grad, p))
    if isinstance(generator, torch.Generator):
        if bool(dec.bounce.any()):
            u = bounce_direction(tuple(p.shape), generator, p.dtype, p.device, c.cube)
            u2 = (u * u).sum(-1, keepdim=True)
            # (the bounce factor rounded to p's dtype since session 16, as the optimizer's
            # reference path rounds it: float32 bounces were 1 ulp off the optimizer's)
            p.copy_(torch.where(dec.bounce, u * torch.sqrt(dec.ps2 / u2).to(p.dtype), p))
    else:  # per-chain streams: a chain draws only when it bounces itself
        for i in torch.nonzero(dec.bounce[:, 0]).flatten().tolist():
            u = bounce_direction((p.shape[1],), generator[i], p.dtype, p.device, c.cube)
            p[i] = u * torch.sqrt(dec.ps2[i] / (u * u).sum()).to(p.dtype)
    p.mul_(dec.scale.to(p.dtype))
    return dec


# --- comparisons -------------------------------------------------------------------------------
def _same(a: float, b: float) -> bool:
    """Equal floats, NaN equal to NaN, −0 different from +0."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _same_tensors(a: Tensor, b: Tensor) -> bool:
    """Tensors equal element for element in the sense of :func:`_same` (and of one dtype)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    ints = {torch.float64: torch.int64, torch.float32: torch.int32}[a.dtype]

    def bits(t: Tensor) -> Tensor:  # the bit patterns, every NaN made the same NaN
        return torch.where(t.isnan(), torch.full_like(t, math.nan), t).view(ints)

    return torch.equal(bits(a), bits(b))


V = [-1.0, 0.0, 1e-45, 1e-12, 0.5, 1.0, 3.0, 1e20, 1e300, math.inf, math.nan]
PS2 = [0.0, 0.7, 2.0, 1e40, math.inf]
G2 = [0.0, 1e-300]
E0 = [0.0, 1.0, 1e-200, -0.0]
MIN_V = [math.inf, 0.2]
T0, T1, NB = 3.0, 5.0, 2.0
DECISION = ("init_coef", "ps2", "bounce", "fixed", "scale")


def _grid() -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor], Tensor]:
    """Every combination of the inputs above as (rows, 1) float64 columns: v, |p|², |∇U|², the
    extras (started 0/1, E0, counters at and off their thresholds, min_V) and a force mask."""
    rows = list(itertools.product(V, PS2, G2, [0.0, 1.0], E0, [0.0, T0], [0.0, T1],
                                  [1.0, NB], MIN_V))
    t = torch.tensor(rows, dtype=torch.float64)
    col = [t[:, i:i + 1].clone() for i in range(t.shape[1])]
    st = {k: torch.zeros(t.shape[0], 1, dtype=torch.float64) for k in BBI_EXTRAS}
    for k, x in zip(("started", "E0", "counter0", "counter", "fixed_bounces", "min_V"),
                    col[3:], strict=True):
        st[k] = x
    st["bounces"] = torch.arange(t.shape[0], dtype=torch.float64)[:, None] % 3
    st["kick_rate"].fill_(0.25)
    st["V"].fill_(-2.0)
    force = (torch.arange(t.shape[0])[:, None] % 7) == 0
    return col[0], col[1], col[2], st, force


CONSTANTS = [BBIConstants(v0=0.0, delta_energy=de, t0=t0, n_bounces=nb, t1=t1, eps1=eps1,
                          eps2=eps2, project=project, cube=True)
             for de, (t0, nb, t1), (eps1, eps2), project in itertools.product(
                 [0.0, 1.0], [(T0, NB, T1), (math.inf, 0.0, math.inf), (T0, 1.0, math.inf)],
                 [(1e-10, 1e-40), (0.0, 1e-12)], [True, False])]


def _columns_like(st: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    return {k: x.to(dtype, copy=True) for k, x in st.items()}


@pytest.mark.parametrize("with_force", [False, True])
@pytest.mark.parametrize("extras_dtype", [torch.float64, torch.float32])
def test_the_tensor_path_equals_the_old_code(with_force, extras_dtype):
    """bbi_control on (chains, 1) columns, every input combination of the grid under 24
    constant sets: new extras and decision equal the old code's bit for bit, with float64 and
    float32 extras (the torch backend's float32 runs keep them so)."""
    v, ps2, g2, st0, force = _grid()
    for c in CONSTANTS:
        old_st, new_st = _columns_like(st0, extras_dtype), _columns_like(st0, extras_dtype)
        f = force if with_force else None
        old = _old_bbi_control(v, ps2, g2, old_st, c, force=f)
        new = bbi_control(v, ps2, g2, new_st, c, force=f)
        for k in BBI_EXTRAS:
            assert _same_tensors(new_st[k], old_st[k]), (c, k)
        for k in DECISION:
            assert _same_tensors(getattr(new, k), getattr(old, k)), (c, k)


@pytest.mark.parametrize("c", CONSTANTS[::5])
def test_the_float_path_equals_the_old_code_on_one_element_tensors(c):
    """bbi_control on Python floats (the optimizer's path) against the old code on float64
    tensors (the optimizer's former one-element inputs; the old code is elementwise, so each
    row of a column is that computation): the same new state and decision for every grid row,
    under every 5th constant set, with and without a forced bounce."""
    v, ps2, g2, st0, force = _grid()
    old_st = _columns_like(st0, torch.float64)
    old = _old_bbi_control(v, ps2, g2, old_st, c, force=force)
    old_free_st = _columns_like(st0, torch.float64)
    old_free = _old_bbi_control(v, ps2, g2, old_free_st, c, force=force & False)
    rows = {k: t[:, 0].tolist() for k, t in st0.items()}
    wants = [({k: t[:, 0].tolist() for k, t in s.items()},
              {k: getattr(d, k)[:, 0].tolist() for k in DECISION}) for s, d in
             ((old_free_st, old_free), (old_st, old))]
    inputs = zip(v[:, 0].tolist(), ps2[:, 0].tolist(), g2[:, 0].tolist(), force[:, 0].tolist(),
                 strict=True)
    for i, (vi, ps2i, g2i, forced) in enumerate(inputs):
        want_st, want = wants[forced]
        st = {k: rows[k][i] for k in BBI_EXTRAS}
        dec = bbi_control(vi, ps2i, g2i, st, c, force=forced)
        assert isinstance(dec.bounce, bool) and isinstance(dec.scale, float)
        for k in BBI_EXTRAS:
            assert isinstance(st[k], float) and _same(st[k], want_st[k][i]), (i, k)
        for k in DECISION:
            got, x = getattr(dec, k), want[k][i]
            assert got == x if isinstance(x, bool) else _same(got, x), (i, k, got, x)


def _shell_run(shell: Any, dtype: torch.dtype, streams: bool) -> list[Tensor]:
    """30 steps of a shell on 6 chains × 50 coordinates (a harmonic U = |q|²/2 whose values
    start below eps2 on two chains, so they start late; fixed bounces every 4 steps, progress
    bounces after 7), recording p, the extras and the decision after every step."""
    torch.manual_seed(1)
    c = BBIConstants(v0=0.0, delta_energy=0.5, t0=4.0, n_bounces=3.0, t1=7.0, eps1=1e-10,
                     eps2=1e-3, project=True, cube=False)
    q = torch.randn(6, 50, dtype=dtype)
    q[:2] *= 1e-3  # V = |q|²/2 < eps2 at first: these chains start when q has grown
    p = torch.zeros_like(q)
    p[4] = torch.randn(50, dtype=dtype)  # a chain that starts with momentum (no start along −∇U)
    st = {k: torch.zeros(6, 1, dtype=dtype) for k in BBI_EXTRAS}
    st["min_V"].fill_(math.inf)
    gen: Any = ([torch.Generator().manual_seed(i) for i in range(6)] if streams
                else torch.Generator().manual_seed(0))
    out = []
    for n in range(30):
        grad = q.clone()
        v = 0.5 * (q.double() ** 2).sum(-1, keepdim=True)
        dec = shell(p, grad, v, st, c, gen)
        q += 0.05 * torch.where(dec.bounce, 0.0, 1.0).to(dtype) * p
        if n in (3, 9):  # momenta kicked outward on the slow chains, so they start
            q[:2] += 0.2
        out += [p.clone(), *(x.clone() for x in st.values()), dec.init_coef, dec.ps2,
                dec.bounce, dec.scale]
    return out


@pytest.mark.parametrize("streams", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_shell_equals_the_old_code(dtype, streams):
    """bbi_shell_ over 30 steps with late-starting chains, bounces and projections: p, the
    extras and the decisions equal the old code's after every step, in float32 and float64,
    with one generator or per-chain streams."""
    new, old = _shell_run(bbi_shell_, dtype, streams), _shell_run(_old_bbi_shell_, dtype, streams)
    assert len(new) == len(old)
    assert all(_same_tensors(a, b) for a, b in zip(new, old, strict=True))
    per_step = 1 + len(BBI_EXTRAS) + 4
    bounces = old[1 + BBI_EXTRAS.index("bounces")::per_step][-1]
    inits = old[1 + len(BBI_EXTRAS)::per_step]
    assert float(bounces.sum()) > 0  # the run did bounce
    assert any(bool((x != 0).any()) for x in inits[1:])  # and a chain started after step 0
