"""Fault injection across the optimizers and integrate() (session 16's bug hunt).

Each test names the bug it catches:

* Under ``NUMBA_DISABLE_JIT=1`` (a numba debugging setting) every optimizer's first step failed
  inside numba ("NotImplementedError: <intrinsic address_as_pointer> is not usable in
  pure-python"): the finite scan and the snapshot copy ran numba kernels on raw memory even
  off the fused path. Now they use torch there (same results), the default path is foreach,
  and ``fused=True`` is refused naming the variable.
* A prior key (``weight_decay``, ``localization``, ``nbeta``) set to NaN between steps was
  refused without the group or the step ("weight_decay must be finite, got nan"), unlike every
  other hyperparameter; now "(param group 1; Langevin step 3)".
* BBI under ``nonfinite="ignore"`` with a NaN ``lr`` set on its second group between steps
  raised after it had already moved the first group's parameters and momenta (half a step);
  now every group's ``lr`` is read before anything is written.
* A NaN/inf already in a parameter before the step (the model's initial values) was reported
  as "step 1 would write a non-finite value ... Lower lr": the step was blamed for it. Now the
  message says the tensor held it before the step and the step was undone.
* (lead c) integrate() and stepping.run() say the same thing on both backends for the same
  NaN gradient: same step, chain and message.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from optim_zoo import FACTORIES, NEEDS_LOSS, data, loss_fn, model
from state_equal import assert_unchanged, snapshot

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.errors import DivergenceError
from dynopt.optim import BBI, HeavyBall, Langevin, NoseHoover

ROOT = Path(__file__).resolve().parents[1]


def _step(name, m, opt, x, y):
    opt.zero_grad()
    loss = loss_fn(m, x, y)
    loss.backward()
    return opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()


# --- NUMBA_DISABLE_JIT=1 ------------------------------------------------------------------------

_NO_JIT = """
import sys, torch
sys.path.insert(0, "tests")
from optim_zoo import FACTORIES, NEEDS_LOSS, data, loss_fn, model, train, flat
from dynopt.optim import Langevin
for name, make in FACTORIES.items():
    m = model()
    before = flat(m)
    after = train(m, make(m), data(3), name)
    print(name, bool(torch.isfinite(after).all()), not torch.equal(before, after))
m = model()
opt = Langevin(m.parameters(), lr=0.1, temperature=0.0, foreach=True, fused=False)
torch.save(train(m, opt, data(3), "Langevin"), sys.argv[1])
m = model()
try:
    train(m, Langevin(m.parameters(), lr=0.1, fused=True), data(1), "Langevin")
except RuntimeError as err:
    print(err)
"""


def test_optimizers_step_under_numba_disable_jit(tmp_path):
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _NO_JIT, str(tmp_path / "theta.pt")],
                         capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[:-1] == [f"{name} True True" for name in FACTORIES]
    assert lines[-1] == (
        "Langevin(fused=True) cannot run with NUMBA_DISABLE_JIT=1 (the fused kernel uses numba "
        "intrinsics on raw memory, which have no pure-Python form): unset NUMBA_DISABLE_JIT, or "
        "leave fused unset (the foreach path runs instead)")
    # the torch scan and copy that stand in for the kernels change nothing: the foreach path
    # gives the same parameters as with the JIT, bit for bit
    m = model()
    opt = Langevin(m.parameters(), lr=0.1, temperature=0.0, foreach=True, fused=False)
    for x, y in data(3):
        _step("Langevin", m, opt, x, y)
    here = torch.cat([p.detach().flatten() for p in m.parameters()])
    assert torch.equal(torch.load(tmp_path / "theta.pt"), here)


# --- prior keys set between steps ---------------------------------------------------------------

def _two_groups(cls, **kw):
    m = model()
    groups = [{"params": m[0].parameters()}, {"params": m[2].parameters()}]
    return m, cls(groups, lr=0.05, **kw)


@pytest.mark.parametrize(("cls", "key", "value", "why"), [
    *[(cls, "weight_decay", math.nan, "must be finite, got nan") for cls in (Langevin, HeavyBall,
                                                                           BBI)],
    *[(cls, "weight_decay", -1.0, "must be >= 0, got -1.0") for cls in (Langevin, HeavyBall,
                                                                       BBI)],
    (Langevin, "localization", math.inf, "must be finite, got inf"),  # Langevin-family keys
    (Langevin, "nbeta", 0.0, "must be > 0, got 0.0"),
])
def test_prior_key_set_between_steps_names_the_group_and_the_step(cls, key, value, why):
    m, opt = _two_groups(cls)
    name = "BBI" if cls is BBI else cls.__name__
    batches = data(4)
    for x, y in batches[:2]:
        _step(name, m, opt, x, y)
    before = snapshot(m, opt)
    opt.param_groups[1][key] = value
    with pytest.raises(ValueError) as info:
        _step(name, m, opt, *batches[2])
    assert str(info.value) == f"{key} {why} (param group 1; {cls.__name__} step 3)"
    assert_unchanged(m, opt, before)
    opt.param_groups[1][key] = 1.0 if key == "nbeta" else 0.0  # fixed: the run continues
    _step(name, m, opt, *batches[2])
    assert opt.step_count == 3


def test_bbi_lr_refused_on_a_later_group_leaves_the_step_undone_under_ignore():
    m, opt = _two_groups(BBI, nonfinite="ignore")
    batches = data(4)
    for x, y in batches[:2]:
        _step("BBI", m, opt, x, y)
    before = snapshot(m, opt)
    opt.param_groups[1]["lr"] = math.nan
    with pytest.raises(ValueError, match=r"lr must be finite, got nan \(param group 1; BBI "
                                         r"step 3\)"):
        _step("BBI", m, opt, *batches[2])
    assert_unchanged(m, opt, before)


# --- a NaN/inf already in a parameter ------------------------------------------------------------

@pytest.mark.parametrize("cls", [Langevin, NoseHoover, HeavyBall, BBI])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_parameter_already_nonfinite_is_named_as_such_and_the_run_can_continue(cls, bad):
    m = model()
    with torch.no_grad():
        m[0].bias[2] = bad
    opt = cls(m.parameters(), lr=0.05)
    for p in m.parameters():
        p.grad = torch.full_like(p, 0.01)  # finite gradients: the step is not the cause
    kw = {"loss": torch.tensor(1.0, dtype=torch.float64)} if cls in (BBI, HeavyBall) else {}
    with pytest.raises(DivergenceError) as info:
        opt.step(**kw)
    assert info.value.step == 1
    assert str(info.value).startswith(
        f"{cls.__name__}: the param group 0, parameter 1 (parameter) already held a non-finite "
        "value (NaN/inf) before step 1, so the step cannot give a finite result")
    assert "Step 1 was undone" in str(info.value)
    assert torch.isfinite(m[0].bias).sum() == 5 and opt.step_count == 0
    assert all(not st for st in opt.state.values())  # nothing initialised either
    with torch.no_grad():
        m[0].bias[2] = 0.0
    opt.step(**kw)
    assert opt.step_count == 1
    assert all(bool(torch.isfinite(p).all()) for p in m.parameters())


# --- (lead c) both backends report a NaN gradient alike --------------------------------------------

def _value(q):
    return 0.0 * q[0]


def _nan_beyond_half(q, out):
    out[0] = math.nan if q[0] > 0.5 else 0.0


def _torch_nan_beyond_half(q):
    return torch.where(q > 0.5, torch.full_like(q, math.nan), torch.zeros_like(q))


def test_a_nan_gradient_is_reported_alike_by_both_backends():
    """q moves at speed 1 on a flat potential whose gradient is NaN beyond q = 0.5: chain 1
    (from q = 0.3) crosses first, on step 3 at h = 0.1."""
    pot = P.Custom(1, value=lambda q: 0.0 * q[..., 0], grad=_torch_nan_beyond_half,
                   numba_value=_value, numba_grad=_nan_beyond_half)
    ham = S.Hamiltonian(pot)
    q0 = np.array([[0.0], [0.3], [0.0]])
    seen = {}
    for backend in ("numba", "torch"):
        with pytest.raises(DivergenceError) as info:
            dynopt.integrate(ham, "BAB", q0, p0=np.ones((3, 1)), h=0.1, n_steps=20,
                             backend=backend)
        err = info.value
        state = dynopt.integrate(ham, "BAB", q0, p0=np.ones((3, 1)), h=0.1, n_steps=0,
                                 backend=backend).final_state
        with pytest.raises(DivergenceError) as run_info:
            dynopt.stepping.run(ham, dynopt.integrators.resolve("BAB"), state, n_steps=20, h=0.1)
        seen[backend] = (err.step, err.chain, str(err), err.trajectory.n_draws,
                         run_info.value.step, run_info.value.chain, str(run_info.value))
        np.testing.assert_array_equal(np.asarray(state.q), q0)  # the input state is unchanged
    assert seen["numba"] == seen["torch"]
    assert seen["torch"][:2] == (3, 1)
    assert str(seen["torch"][2]).startswith("integration diverged at step 3 (t = 0.3): chain 1 ")


# --- (lead b) the event log of a long run ----------------------------------------------------------

def _bbi_with_a_repeating_event():
    from dynopt.events import Threshold

    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = BBI([p], lr=0.1, events=[Threshold(1e9, once=False)])  # fires every step
    for _ in range(3):
        p.grad = torch.full_like(p, 0.01)
        opt.step(loss=torch.tensor(1.0, dtype=torch.float64))
    return p, opt


def test_the_step_snapshot_keeps_the_event_log_by_reference():
    """The snapshot that undoes a non-finite step copied the whole event log, entry by entry,
    every step: with a once=False trigger a step cost O(firings so far) (0.52 s per BBI step at
    10^5 firings, against 3 ms). It now keeps the log itself with its lengths."""
    from dynopt.optim.rollback import Snapshot

    _, opt = _bbi_with_a_repeating_event()
    snap = Snapshot(opt, [])
    assert snap.global_state["events"]["log"] is opt.global_state["events"]["log"]
    assert snap.global_state is not opt.global_state  # the rest is still a copy


def test_an_undone_step_takes_its_firings_off_the_event_log():
    p, opt = _bbi_with_a_repeating_event()
    log = opt.global_state["events"]["log"]
    before = {k: list(v) for k, v in log.items()}
    p.grad = torch.full_like(p, 1e308)
    opt.param_groups[0]["lr"] = 1e10  # the step overflows; its event fired first
    with pytest.raises(DivergenceError, match="step 4 would write a non-finite value"):
        opt.step(loss=torch.tensor(1.0, dtype=torch.float64))
    assert {k: list(v) for k, v in opt.global_state["events"]["log"].items()} == before
    assert [f.step for f in opt.event_log] == [0, 1, 2]
    opt.param_groups[0]["lr"] = 0.1
    p.grad = torch.full_like(p, 0.01)
    opt.step(loss=torch.tensor(1.0, dtype=torch.float64))
    assert [f.step for f in opt.event_log] == [0, 1, 2, 3]
