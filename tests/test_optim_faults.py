"""Faults and bad input in the optimizers (issue 10): nothing crashes, nothing corrupts state.

Each test names the one-line bug it catches. Crash-prone reproductions (they segfaulted or
aborted the interpreter before the fix) run in a subprocess, so a regression fails the test
instead of killing the worker.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from state_equal import same

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
from dynopt.optim.finite import FAST_ABOVE, all_finite

ROOT = Path(__file__).resolve().parents[1]
NEEDS_LOSS = (BBI, ECDSep)
#: (class, name of the per-parameter momentum state)
MOMENTUM_KEY = {Langevin: "momentum_buffer", AdaptiveLangevin: "momentum_buffer",
                NoseHoover: "momentum_buffer", HeavyBall: "momentum", BBI: "momentum",
                ECDSep: "momentum"}


def _loss(p):
    return 0.5 * (p.double() ** 2).sum() + (p.double() ** 4).sum() / 12


def _step(opt, p, loss_value=None):
    opt.zero_grad()
    loss = _loss(p)
    loss.backward()
    if type(opt) in NEEDS_LOSS:
        return opt.step(loss=loss.detach() if loss_value is None else loss_value)
    return opt.step()


def _trained(cls, n=1000, steps=3, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n, dtype=dtype) * 0.5)
    kw.setdefault("lr", 0.01)
    opt = cls([p], seed=3, **kw)
    for _ in range(steps):
        _step(opt, p)
    return p, opt


# --------------------------------------------------------------------------------------------
# item 1: load_state_dict validates everything and is all-or-nothing
# --------------------------------------------------------------------------------------------
def _corrupt(kind, sd, key):
    st = sd["state"][0]
    if kind == "deleted momentum":
        del st[key]
    elif kind == "momentum (7,)":
        st[key] = torch.zeros(7)
    elif kind == "nan momentum":
        st[key] = torch.full_like(st[key], float("nan"))
    elif kind == "integer momentum":
        st[key] = st[key].to(torch.int64)
    elif kind == "momentum of a (10, 100) shape":
        st[key] = st[key].reshape(10, 100)
    elif kind == "lr=-1":
        sd["param_groups"][0]["lr"] = -1.0
    elif kind == "seed=-5":
        sd["dynopt"]["seed"] = -5
    elif kind == "step=-3":
        sd["dynopt"]["global"]["step"] = -3
    elif kind == "no dynopt entry":
        del sd["dynopt"]
    elif kind == "bad generator state":
        sd["dynopt"]["generators"] = {"cpu": torch.zeros(3, dtype=torch.uint8)}
    elif kind == "unknown state key":
        st["velocity"] = torch.zeros(1000)
    elif kind == "state of no parameter":
        sd["state"][5] = {}
    elif kind == "one group too many":
        sd["param_groups"].append(dict(sd["param_groups"][0], params=[9]))
    return sd


KINDS = ["deleted momentum", "momentum (7,)", "nan momentum", "integer momentum",
         "momentum of a (10, 100) shape", "lr=-1", "seed=-5", "step=-3", "no dynopt entry",
         "bad generator state", "unknown state key", "state of no parameter",
         "one group too many"]


@pytest.mark.parametrize("cls", [Langevin, AdaptiveLangevin, HeavyBall, BBI])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_checkpoints_raise_and_leave_the_optimizer_unchanged(cls, kind):
    """Catches: any missing check in dynopt.optim.checkpoint, and any mutation before it."""
    if kind == "deleted momentum" and cls in (HeavyBall, BBI):
        pytest.skip("their momentum is created lazily: an entry without it is a fresh one")
    _, src = _trained(cls)
    sd = _corrupt(kind, copy.deepcopy(src.state_dict()), MOMENTUM_KEY[cls])
    p, opt = _trained(cls, steps=2)
    before = copy.deepcopy(opt.state_dict())
    params_before = p.detach().clone()
    with pytest.raises((ValueError, TypeError), match="checkpoint|state_dict|lr"):
        opt.load_state_dict(sd)
    assert same(opt.state_dict(), before)
    assert torch.equal(p.detach(), params_before)


def test_missing_dynopt_entry_explains_the_plain_torch_checkpoint():
    _p, opt = _trained(Langevin)
    sd = opt.state_dict()
    del sd["dynopt"]
    with pytest.raises(ValueError, match="no 'dynopt' entry.*plain torch.optim checkpoint"):
        opt.load_state_dict(sd)


@pytest.mark.parametrize("src,dst", [(Langevin, AdaptiveLangevin), (AdaptiveLangevin, Langevin),
                                     (HeavyBall, BBI)])
def test_checkpoint_of_another_optimizer_is_refused(src, dst):
    """Catches: the class/dynamics check dropped (a Langevin state loaded into AdL)."""
    _, a = _trained(src)
    sd = a.state_dict()
    _p, b = _trained(dst, steps=1)
    before = copy.deepcopy(b.state_dict())
    with pytest.raises(ValueError, match=rf"{src.__name__}|dynamics"):
        b.load_state_dict(sd)
    assert same(b.state_dict(), before)
    # an old checkpoint without the class name is still caught by the group's dynamics
    if dst is AdaptiveLangevin:
        del sd["dynopt"]["optimizer"]
        with pytest.raises(ValueError, match="dynamics"):
            b.load_state_dict(sd)


@pytest.mark.parametrize("cls", [Langevin, AdaptiveLangevin, HeavyBall, BBI, ECDSep])
def test_valid_checkpoint_round_trip_is_bit_exact(cls):
    """The validation accepts every checkpoint the optimizer writes (and changes nothing)."""
    p, a = _trained(cls, n=300)
    sd = copy.deepcopy(a.state_dict())
    q = torch.nn.Parameter(p.detach().clone())
    b = cls([q], lr=0.01, seed=99)
    b.load_state_dict(sd)
    for _ in range(3):
        _step(a, p)
        _step(b, q)
    assert torch.equal(p.detach(), q.detach())


_CRASH_SCRIPT = """
import copy, torch
from dynopt.optim import Langevin, AdaptiveLangevin, HeavyBall, BBI
out = []
for cls, key, how in [(Langevin, "momentum_buffer", "delete"), (Langevin, "momentum_buffer", 7),
                      (AdaptiveLangevin, "momentum_buffer", "delete"),
                      (AdaptiveLangevin, "momentum_buffer", 7), (HeavyBall, "momentum", 7),
                      (BBI, "momentum", 7)]:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(1000))
    opt = cls([p], lr=0.01, seed=1)
    for _ in range(3):
        opt.zero_grad(); loss = (p ** 2).sum(); loss.backward(); opt.step(loss=loss.item()) \\
            if cls is BBI else opt.step()
    if how == "delete":
        del opt.state[p][key]
    else:
        opt.state[p][key] = torch.zeros(7)
    before = p.detach().clone()
    opt.zero_grad(); loss = (p ** 2).sum(); loss.backward()
    try:
        opt.step(loss=loss.item()) if cls is BBI else opt.step()
        out.append("stepped")
    except ValueError as err:
        out.append("ValueError" if torch.equal(before, p.detach()) else "changed")
print(" ".join(out))
"""


def test_hand_edited_state_never_reaches_a_kernel():
    """Deleted / (7,)-shaped momenta segfaulted or aborted (malloc) the process before; now every
    path raises ValueError before touching the parameters (run in a subprocess)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["ValueError"] * 6, res.stdout + res.stderr[-2000:]


def test_kernel_entry_points_check_their_arrays():
    """Catches: the length/dtype/contiguity checks of the fused kernels removed."""
    from dynopt.backends.numba.kick_drift_kernels import bbi_kick_drift, heavy_ball_step

    th, m, g = np.zeros(10), np.zeros(10), np.zeros(10)
    with pytest.raises(ValueError, match="momentum has 7 elements"):
        heavy_ball_step(th, np.zeros(7), g, 0.9, 0.1)
    with pytest.raises(ValueError, match="dtype"):
        bbi_kick_drift(th, m, g.astype(np.float32), 1.0, 0.1, 0.1)
    with pytest.raises(ValueError, match="contiguous"):
        heavy_ball_step(th, np.zeros(20)[::2], g, 0.9, 0.1)


# --------------------------------------------------------------------------------------------
# item 2: non-finite loss and non-finite results
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [BBI, ECDSep])
@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -float("inf")])
def test_nonfinite_loss_raises_naming_the_step_and_changes_nothing(cls, bad):
    """Catches: the loss check dropped (inf turned every parameter and momentum into NaN)."""
    p, opt = _trained(cls, n=50, dtype=torch.float64)
    before = copy.deepcopy(opt.state_dict())
    theta = p.detach().clone()
    with pytest.raises(DivergenceError, match="non-finite loss .* at step 4") as err:
        _step(opt, p, loss_value=torch.tensor(bad, dtype=torch.float64))
    assert err.value.step == 4
    assert torch.equal(p.detach(), theta) and same(opt.state_dict(), before)
    _step(opt, p)  # and the next step runs normally
    assert opt.step_count == 4 and torch.isfinite(p).all()


@pytest.mark.parametrize("cls", [BBI, ECDSep])
def test_nonfinite_loss_is_skipped_under_skip(cls):
    p, opt = _trained(cls, n=50, dtype=torch.float64, nonfinite="skip")
    theta = p.detach().clone()
    _step(opt, p, loss_value=float("inf"))
    assert torch.equal(p.detach(), theta)
    assert opt.global_state["skipped"] == 1 and opt.step_count == 4


def test_huge_loss_that_would_write_inf_is_undone():
    """BBI with loss = 1e308 left the parameters at ±inf; the result check undoes the step."""
    p, opt = _trained(BBI, n=50, dtype=torch.float64)
    before = copy.deepcopy(opt.state_dict())
    theta = p.detach().clone()
    with pytest.raises(DivergenceError, match="step 4 would write a non-finite value") as err:
        _step(opt, p, loss_value=1e308)
    assert err.value.step == 4
    assert torch.equal(p.detach(), theta) and same(opt.state_dict(), before)
    p2, opt2 = _trained(BBI, n=50, dtype=torch.float64, nonfinite="skip")
    _step(opt2, p2, loss_value=1e308)
    assert torch.equal(p2.detach(), theta) and opt2.global_state["skipped"] == 1


@pytest.mark.parametrize("cls", [Langevin, HeavyBall, AdaptiveLangevin])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("n", [64, FAST_ABOVE + 5])
def test_overflowing_update_is_undone(cls, fused, n):
    """A finite gradient whose update overflows float32 in one element: the step raises, naming
    the step, and parameters and state are exactly as before, for small models (torch copies)
    and large ones (the numba snapshot copy). Catches: the result check or the rollback."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n))
    opt = cls([p], lr=0.1, seed=0, fused=fused)
    p.grad = torch.randn(n)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    theta = p.detach().clone()
    with torch.no_grad():
        p[n // 3] = 3.4e38
    theta[n // 3] = 3.4e38
    p.grad = torch.randn(n)
    p.grad[n // 3] = -3.4e38
    with pytest.raises(DivergenceError, match="step 2 would write a non-finite") as err:
        opt.step()
    assert err.value.step == 2
    assert torch.equal(p.detach(), theta)
    assert same(opt.state_dict(), before)


# --------------------------------------------------------------------------------------------
# item 3: hyperparameters are validated where they are used
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Langevin, OverdampedLangevin, AdaptiveLangevin, BBI, ECDSep,
                                 HeavyBall, NoseHoover])
@pytest.mark.parametrize("value", [float("nan"), -1.0, float("inf")])  # 0: test_optim_zero_lr
def test_lr_set_after_construction_is_checked_every_step(cls, value):
    """Catches: validation only at construction (a NaN lr made every parameter NaN silently)."""
    p, opt = _trained(cls, n=100, steps=2)
    theta = p.detach().clone()
    opt.param_groups[0]["lr"] = value
    with pytest.raises(ValueError, match=rf"lr must be .*got {value}.*param group 0.* step 3"):
        _step(opt, p)
    assert torch.equal(p.detach(), theta) and opt.step_count == 2


@pytest.mark.parametrize("cls", [Langevin, HeavyBall, BBI, NoseHoover])
def test_lambda_lr_going_negative_raises_naming_the_group(cls):
    """LambdaLR(opt, lambda e: -1.0) used to run training backwards (or 'math domain error')."""
    p, opt = _trained(cls, n=100, steps=1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: -1.0)
    sched.step()
    with pytest.raises(ValueError, match=r"lr must be >= 0, got -0.01 \(param group 0"):
        _step(opt, p)


def test_other_hyperparameters_are_checked_where_used():
    p, opt = _trained(Langevin, n=100, steps=1)
    opt.param_groups[0]["gamma"] = -0.5
    with pytest.raises(ValueError, match=r"gamma must be >= 0, got -0.5 \(param group 0"):
        _step(opt, p)
    p, opt = _trained(HeavyBall, n=100, steps=1)
    opt.param_groups[0]["gamma"] = float("nan")
    with pytest.raises(ValueError, match=r"gamma must be finite.*param group 0"):
        _step(opt, p)


# --------------------------------------------------------------------------------------------
# item 4: large finite gradients are finite
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1000, FAST_ABOVE + 5])
@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e30), (torch.float64, 1e200)])
def test_large_finite_gradients_are_finite(n, dtype, big):
    """The norm of these gradients overflows (float32 above ~1.8e19, float64 above ~1.3e154);
    both code paths (foreach norm below 2^18 elements, the numba scan above) must test the
    elements. Catches: all_finite answering from the overflowing norm."""
    g = torch.full((n,), big, dtype=dtype)
    assert all_finite([g])
    g[n // 2] = float("inf")
    assert not all_finite([g])
    g[n // 2] = float("nan")
    assert not all_finite([g])


@pytest.mark.parametrize("n", [1000, FAST_ABOVE + 5])
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_large_gradient_steps_are_taken_not_skipped(n, nonfinite):
    """With "raise" a bare StopIteration escaped step(); with "skip" valid steps were skipped."""
    p = torch.nn.Parameter(torch.zeros(n))
    opt = HeavyBall([p], lr=1e-20, nonfinite=nonfinite, seed=0)
    p.grad = torch.full((n,), 1e30)
    opt.step()
    assert opt.global_state["skipped"] == 0
    h, g = torch.tensor(1e-20), torch.tensor(1e30)
    assert torch.equal(p.detach(), torch.full((n,), float(h * -(h * g))))


# --------------------------------------------------------------------------------------------
# item 5: Nosé–Hoover chains far from equilibrium
# --------------------------------------------------------------------------------------------
def _regression(seed, scale):
    g = torch.Generator().manual_seed(seed)
    n, d = 20 + seed, 2 + seed % 7
    x = torch.randn(n, d, generator=g) * scale
    y = x @ torch.randn(d, generator=g) * scale
    return x, y, d


@pytest.mark.parametrize("chain", [2, 3])
def test_nose_hoover_chain_stays_finite_on_random_regressions(chain):
    """Default tau (100·lr) and temperature (1e-4) on 24 random least-squares problems: before
    the fix a chain produced NaN on every one within 1–3 steps (the Suzuki–Yoshida backward
    substep amplifying a stiff chain); chain_length = 1 never did. Catches: the stiff fallback
    of ops.nhc_ removed."""
    for seed in range(24):
        x, y, d = _regression(seed, 3.0)
        w = torch.nn.Parameter(torch.zeros(d))
        b = torch.nn.Parameter(torch.zeros(1))
        opt = NoseHoover([w, b], lr=0.1, chain_length=chain, seed=seed)
        for _ in range(50):
            opt.zero_grad()
            ((x @ w + b - y) ** 2).mean().backward()
            opt.step()  # nonfinite="raise": a NaN would raise here
        assert torch.isfinite(w).all() and torch.isfinite(opt.state[w]["extras"]).all()
        assert float(((x @ w + b - y) ** 2).mean().detach()) < float((y ** 2).mean())  # trained


def test_stiff_fallback_is_per_scope_and_leaves_calm_chains_bit_exact():
    """A calm thermostat cohort-mate of a stiff one gets exactly the Suzuki–Yoshida update it
    gets alone (the fallback is chosen per scope), and the stiff one stays finite."""
    from dynopt.backends.torch import ops
    from dynopt.systems.nose_hoover_chain import SUZUKI_YOSHIDA

    w3 = list(SUZUKI_YOSHIDA[3])
    kt, q = 1e-4, 1e-4 * 10.0 ** 2

    def run(k2s):
        k2 = torch.tensor(k2s, dtype=torch.float64)
        p = torch.ones_like(k2)
        v = [torch.full_like(k2, 0.01) for _ in range(3)]
        eta = [torch.zeros_like(k2) for _ in range(3)]
        for _ in range(5):
            ops.nhc_(p, v, eta, 0.05, kt, q, [q, q], w3, 1, 100.0, lambda _: k2 * p * p)
        return p, v

    p_calm, v_calm = run([100 * kt])
    p_both, v_both = run([100 * kt, 1e5 * 100 * kt])
    assert p_both[0] == p_calm[0] and all(a[0] == b[0] for a, b in zip(v_both, v_calm))
    assert torch.isfinite(p_both).all() and all(torch.isfinite(x).all() for x in v_both)
    p_stiff, _ = run([1e5 * 100 * kt])
    assert torch.equal(p_stiff, p_both[1:])


def test_diverging_nose_hoover_never_writes_nan():
    """A step size beyond the leapfrog stability limit (h²λ ≫ 4): the run diverges, but the
    step that would write inf/NaN raises DivergenceError naming it, with θ unchanged."""
    x, y, d = _regression(0, 100.0)
    w = torch.nn.Parameter(torch.zeros(d))
    opt = NoseHoover([w], lr=0.1, chain_length=3, seed=0)
    with pytest.raises(DivergenceError) as err:
        for _ in range(200):
            opt.zero_grad()
            ((x @ w - y) ** 2).mean().backward()
            last = w.detach().clone()
            opt.step()
    assert err.value.step == opt.step_count + 1
    assert torch.equal(w.detach(), last) and torch.isfinite(w).all()


def test_stiff_chain_in_integrate_numba_equals_torch():
    """integrate() on a harmonic model far from equilibrium (kT = 1e-4, unit-scale q): before,
    the chain diverged at step 2 on both backends; now both fall back identically per chain
    (numba's _nhc_block mirrors ops.nhc_) and stay finite."""
    import dynopt
    from dynopt import potentials, systems

    system = systems.NoseHooverChain(potentials.Harmonic(3.0, 5), temperature=1e-4,
                                     chain_length=3, tau=0.5)
    q0 = np.random.default_rng(0).normal(size=(3, 5))
    runs = [dynopt.integrate(system, None, q0, p0=np.zeros((3, 5)), h=0.05, n_steps=200,
                             backend=b, seed=0) for b in ("numba", "torch")]
    assert np.isfinite(runs[0].q).all()
    np.testing.assert_allclose(runs[0].q, runs[1].q, rtol=0, atol=1e-12)
    assert np.abs(runs[0].q[:, -1]).max() < np.abs(q0).max()  # the thermostat cooled it


def test_check_result_can_be_switched_off():
    """check_result=False keeps the gradient check but no longer undoes an overflowing step."""
    p = torch.nn.Parameter(torch.full((8,), 3.4e38))
    opt = HeavyBall([p], lr=1.0, seed=0)
    opt.check_result = False
    p.grad = torch.full((8,), -3.4e38)
    opt.step()
    assert torch.isinf(p).all()
    with pytest.raises(DivergenceError, match="non-finite gradient at step 2"):
        p.grad = torch.full((8,), float("nan"))
        opt.step()
