"""The ECDSep shell logic, bit for bit as before session 16.

Session 16 wrote ``ecd_control`` once over two sets of primitives, as ``bbi_control``: tensors
(the torch backend) or Python floats (the ECDSep optimizer: no one-element torch ops per step).
``_old_ecd_control`` below is the code before that change, verbatim; every test compares the new
code with it exactly (NaN with NaN, and the sign of zero), the float path with the old code on
the 1-element float64 tensors the optimizer used to pass.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor

from dynopt.backends.torch.energy_ops import ECDConstants, ECDDecision, ecd_control
from dynopt.program import ECD_EXTRAS

Columns = dict[str, Tensor]


# --- the code before session 16, verbatim ------------------------------------------------------
def _old_ecd_control(fd: Tensor, ps2: Tensor, g2: Tensor, st: Columns,
                     c: ECDConstants) -> ECDDecision:
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


# --- inputs ------------------------------------------------------------------------------------
_FD = [math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e-300, 1e-41, 1e-20, 0.3, 1.0, 2.0,
       7.123456789, 1e10, 1e200, -1.0]
_PS2 = [0.0, -0.0, 1e-12, 0.5, 1.0, 3.0, 1e300, math.inf, math.nan]
_G2 = [0.0, 1.0, 1e-300, math.inf, math.nan]
_STARTED = [0.0, 1.0]
_E = [0.0, 0.7, 2.0, 3.3e5, math.inf, math.nan]
_CONSTANTS = [ECDConstants(0.0, eta, s, de, eps1, eps2, project)
              for eta, s, de, eps1, eps2, project in itertools.product(
                  [1.0, 1.5, 2.0, 3.0, 7.3], [0.0, 0.3, 1.0], [0.0, 0.5, 1.0], [1e-10, 0.0],
                  [1e-40, 0.5], [True, False])]


def _grid() -> list[tuple[float, ...]]:
    return list(itertools.product(_FD, _PS2, _G2, _STARTED, _E))


def _columns(rows: list[tuple[float, ...]], dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor,
                                                                          Columns]:
    t = torch.tensor(rows, dtype=torch.float64).to(dtype)
    fd, ps2, g2 = (t[:, i:i + 1].clone() for i in range(3))
    st = {k: torch.zeros_like(fd) for k in ECD_EXTRAS}
    st["started"].copy_(t[:, 3:4])
    st["E"].copy_(t[:, 4:5])
    return fd, ps2, g2, st


def _same(a: Any, b: Any, what: str) -> None:
    """Exact equality of two tensors: the same values, NaN where NaN, the same sign of zero."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    both_nan = a.isnan() & b.isnan()
    equal = (a == b) & (torch.signbit(a) == torch.signbit(b))
    bad = ~(both_nan | equal)
    assert not bool(bad.any()), (
        f"{what}: {int(bad.sum())} differ, e.g. row {int(bad.nonzero()[0, 0])}: "
        f"{a.flatten()[bad.flatten()][:3].tolist()} vs {b.flatten()[bad.flatten()][:3].tolist()}")


# --- the tests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tensor_path_equals_the_old_code_on_the_whole_grid(dtype):
    """The torch backend's (chains, 1) columns: 8,640 rows of NaN, ±inf, ±0, denormals,
    thresholds under 72 of the 360 constant sets, float64 and float32 (where writing E into a
    float32 column rounds it before the projection reads it)."""
    rows = _grid()
    for c in _CONSTANTS[::5]:
        fd, ps2, g2, st = _columns(rows, dtype)
        old_st = {k: x.clone() for k, x in st.items()}
        new = ecd_control(fd, ps2, g2, st, c)
        old = _old_ecd_control(fd.clone(), ps2.clone(), g2.clone(), old_st, c)
        for k in ("init_coef", "scale", "active"):
            _same(getattr(new, k), getattr(old, k), f"{c} {dtype} {k}")
        for k in ECD_EXTRAS:
            assert st[k].dtype == old_st[k].dtype
            _same(st[k], old_st[k], f"{c} {dtype} extras {k}")


def test_float32_fd_with_float64_extras_equals_the_old_code():
    """Mixed dtypes: float32 fd against float64 extras (E's where() promotes, copy_ keeps)."""
    rows = _grid()
    for c in _CONSTANTS[::29]:
        fd, ps2, g2, st = _columns(rows, torch.float64)
        fd, ps2, g2 = fd.float(), ps2.float(), g2.float()
        old_st = {k: x.clone() for k, x in st.items()}
        new = ecd_control(fd, ps2, g2, st, c)
        old = _old_ecd_control(fd.clone(), ps2.clone(), g2.clone(), old_st, c)
        for k in ("init_coef", "scale", "active"):
            _same(getattr(new, k), getattr(old, k), f"{c} {k}")
        for k in ECD_EXTRAS:
            _same(st[k], old_st[k], f"{c} extras {k}")


def test_float_path_equals_the_old_code_on_one_element_tensors():
    """The optimizer's path: Python floats in, floats and a bool out, equal to the old code on
    1-element float64 tensors (what the optimizer passed), row by row. Covers every fd against
    a spread of the other inputs under every η (1, 2 and 3 are products in torch's pow, the
    others libm's pow) and both projection settings."""
    rows = _grid()
    picked = rows[::23]
    consts = [c for c in _CONSTANTS if c.eps1 == 1e-10 and c.eps2 == 1e-40 and c.s != 0.3]
    for i, (c, row) in enumerate(itertools.product(consts, picked)):
        if i % 5:
            continue
        fd, ps2, g2, started, e = row
        st = {k: 0.0 for k in ECD_EXTRAS} | {"started": started, "E": e}
        dec = ecd_control(fd, ps2, g2, st, c)
        assert isinstance(dec.active, bool)
        assert all(type(x) is float for x in st.values())
        assert type(dec.init_coef) is float and type(dec.scale) is float
        old_st = {k: torch.tensor([x], dtype=torch.float64) for k, x in
                  ({k: 0.0 for k in ECD_EXTRAS} | {"started": started, "E": e}).items()}
        old = _old_ecd_control(*(torch.tensor([x], dtype=torch.float64) for x in (fd, ps2, g2)),
                               old_st, c)
        what = f"{c} row {row}"
        assert dec.active == bool(old.active), what
        _same(dec.init_coef, old.init_coef, what + " init_coef")
        _same(dec.scale, old.scale, what + " scale")
        for k in ECD_EXTRAS:
            _same(st[k], old_st[k], f"{what} extras {k}")


def test_float_pow_matches_torch_on_one_element_tensors():
    """v = (F − F₀)^η: the float path's pow against torch's on 1-element float64 tensors, over
    1,600 magnitudes and nine exponents (η = 1, 2, 3 are torch's special cases)."""
    from dynopt.backends.torch.energy_ops import _FloatOps

    xs = torch.logspace(-300, 300, 600, dtype=torch.float64).tolist()
    xs += [x * (1 + 1e-9 * k) for x in (0.3, 1.7, 2.0, 9.99) for k in range(250)]
    for eta in (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 7.3, 40.0):
        for x in xs:
            old = torch.tensor([x], dtype=torch.float64) ** eta
            _same(_FloatOps.pow(x, eta), old, f"{x!r} ** {eta}")


def test_float_sqrt_is_torchs_so_bbi_and_ecd_float_paths_equal_their_tensor_paths():
    """torch's CPU float64 sqrt is not correctly rounded (an ulp off math.sqrt for ~1% of
    inputs), so a float path on math.sqrt changed BBI's projection factor r for ~1% of steps
    against the tensor path it claims to equal (4 of 300 random shells here). The float path
    takes torch's sqrt: random shells, BBI and ECDSep, float path = tensor path exactly."""
    import random

    from dynopt.backends.torch.energy_ops import BBIConstants, bbi_control
    from dynopt.program import BBI_EXTRAS

    def t(x: float) -> Tensor:
        return torch.tensor([x], dtype=torch.float64)

    rng = random.Random(1)
    cb = BBIConstants(0.0, 0.3, math.inf, 0.0, math.inf, 1e-10, 1e-40, True, True)
    ce = ECDConstants(0.0, 1.5, 1.0, 0.0, 1e-10, 1e-40, True)
    for _ in range(300):
        v, ps2, e0 = rng.uniform(0.1, 5), rng.uniform(0.1, 5), rng.uniform(5, 9)
        stf = {k: 0.0 for k in BBI_EXTRAS} | {"started": 1.0, "E0": e0, "min_V": math.inf}
        stt = {k: t(x) for k, x in stf.items()}
        a, b = bbi_control(v, ps2, 0.0, stf, cb), bbi_control(t(v), t(ps2), t(0.0), stt, cb)
        _same(a.scale, b.scale, f"BBI v={v!r} ps2={ps2!r} E0={e0!r}")
        stf = {k: 0.0 for k in ECD_EXTRAS} | {"started": 1.0, "E": e0}
        stt = {k: t(x) for k, x in stf.items()}
        a, b = ecd_control(v, ps2, 0.0, stf, ce), ecd_control(t(v), t(ps2), t(0.0), stt, ce)
        _same(a.scale, b.scale, f"ECDSep fd={v!r} ps2={ps2!r} E={e0!r}")
