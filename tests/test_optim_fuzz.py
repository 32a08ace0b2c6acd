"""Fuzz tests (hypothesis) of the optimizers' user-facing inputs (issue 10).

Constructors and ``load_state_dict`` get arbitrary values. The contract: either a
``ValueError``/``TypeError`` (naming the argument, for constructors; leaving the optimizer
unchanged, for checkpoints) or a valid optimizer whose steps keep every parameter and state
finite or raise :class:`~dynopt.errors.DivergenceError` with nothing changed. Never a crash
(another exception type, a segfault, a hang) and never a silent NaN. Deterministic
(``derandomize=True``) and small, so they run in CI in a few seconds each.
"""

from __future__ import annotations

import copy
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynopt.errors import DivergenceError
from dynopt.optim import (
    BBI,
    AdaptiveLangevin,
    ECDSep,
    HeavyBall,
    Langevin,
    NoseHoover,
    OverdampedLangevin,
)

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

#: Arguments fuzzed per optimizer (besides ``params``).
ARGS = {
    Langevin: ("lr", "gamma", "temperature", "mass", "seed", "noise", "nonfinite", "scheme"),
    OverdampedLangevin: ("lr", "temperature", "seed", "nonfinite"),
    AdaptiveLangevin: ("lr", "temperature", "sigma_a", "eps", "xi0", "mass", "scope"),
    NoseHoover: ("lr", "temperature", "tau", "thermostat_mass", "chain_length", "n_substeps",
                 "sy_order", "scope"),
    HeavyBall: ("lr", "gamma", "seed", "nonfinite"),
    BBI: ("lr", "v0", "delta_energy", "t0", "n_bounces", "t1", "eps1", "eps2",
          "bounce_direction"),
    ECDSep: ("lr", "F0", "eta", "nu", "s", "delta_energy", "weight_decay", "eps1", "eps2"),
}

ANY_VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-6, max_value=10.0),
    st.integers(min_value=-5, max_value=10),
    st.integers(min_value=2**62, max_value=2**70),
    st.sampled_from([None, True, "x", "gaussian", "discrete", "skip", "raise", "BAOAB",
                     "model", "group", "tensor", "sphere", [1.0], (), {}]),
    st.builds(lambda v: torch.tensor([v]), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda v: torch.tensor(v), st.lists(st.floats(0.1, 1.0), min_size=2,
                                                  max_size=3)),
)


def _steps(opt, p, n=3):
    """n steps on a quartic; every outcome but a finite state or a clean divergence fails."""
    for _ in range(n):
        opt.zero_grad()
        loss = 0.5 * (p ** 2).sum() + 0.1 * (p ** 4).sum()
        loss.backward()
        before = [t.detach().clone() for t in (p,)]
        try:
            opt.step(loss=loss.detach()) if isinstance(opt, BBI | ECDSep) else opt.step()
        except DivergenceError:
            assert torch.equal(p.detach(), before[0])
            return
        except ValueError as err:  # a hyperparameter only checkable in use (e.g. a tensor lr)
            assert torch.equal(p.detach(), before[0]), err
            return
        assert torch.isfinite(p).all() or opt.nonfinite == "ignore"


@st.composite
def constructor_call(draw):
    cls = draw(st.sampled_from(list(ARGS)))
    names = draw(st.lists(st.sampled_from(ARGS[cls]), min_size=1, max_size=3, unique=True))
    kwargs = {n: draw(ANY_VALUE) for n in names}
    kwargs.setdefault("lr", 0.05)
    return cls, kwargs


@FUZZ
@given(constructor_call())
def test_constructors_validate_or_build_a_working_optimizer(call):
    cls, kwargs = call
    p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 12, dtype=torch.float64))
    try:
        opt = cls([p], **kwargs)
    except (ValueError, TypeError) as err:
        msg = str(err)
        assert any(name in msg for name in kwargs), (kwargs, msg)
        return
    _steps(opt, p)


MUTABLE_KINDS = ("drop", "junk", "shape", "scale")


@st.composite
def checkpoint_edit(draw):
    cls = draw(st.sampled_from([Langevin, AdaptiveLangevin, NoseHoover, HeavyBall, BBI]))
    edits = draw(st.lists(st.tuples(st.sampled_from(MUTABLE_KINDS), st.integers(0, 10**6),
                                    ANY_VALUE), min_size=1, max_size=3))
    return cls, edits


def _paths(tree, prefix=()):
    """Every (path, value) in a nested dict/list checkpoint."""
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.append(((*prefix, k), v))
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.append(((*prefix, i), v))
            out.extend(_paths(v, (*prefix, i)))
    return out


def _edit(sd, kind, pick, junk):
    paths = [pv for pv in _paths(sd) if pv[0][-1] != "params"]
    path, value = paths[pick % len(paths)]
    parent = sd
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if kind == "drop" and isinstance(parent, dict):
        del parent[key]
    elif kind == "shape" and isinstance(value, torch.Tensor) and value.numel() > 1:
        parent[key] = value[: value.numel() // 2].clone()
    elif kind == "scale" and isinstance(value, torch.Tensor) and value.is_floating_point():
        parent[key] = value * (junk if isinstance(junk, float) and not math.isnan(junk)
                               else float("nan"))
    else:
        parent[key] = junk


def _make(cls, p):
    kw = {"chain_length": 3} if cls is NoseHoover else {}
    return cls([p], lr=0.05, seed=1, **kw)


@FUZZ
@given(checkpoint_edit())
def test_load_state_dict_refuses_or_loads_a_working_state(edit):
    cls, edits = edit
    torch.manual_seed(0)
    src_p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 300))
    src = _make(cls, src_p)
    _steps(src, src_p, 2)
    sd = copy.deepcopy(src.state_dict())
    for kind, pick, junk in edits:
        _edit(sd, kind, pick, junk)
    p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 300))
    opt = _make(cls, p)
    _steps(opt, p, 1)
    before = copy.deepcopy(opt.state_dict())
    try:
        opt.load_state_dict(sd)
    except (ValueError, TypeError):
        _assert_same(opt.state_dict(), before)
        return
    _steps(opt, p)


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif not (isinstance(a, float) and math.isnan(a)):
        assert a == b
