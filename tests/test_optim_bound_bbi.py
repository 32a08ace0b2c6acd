"""BBI's snapshot-free result check (dynopt.optim.bound.bbi_bounded): ordinary steps are proven
finite from the shell logic's choices, run on a copy of BBI's scalar state; bounces, the first
step, events and anything it cannot prove take the snapshot path as before."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dynopt.errors import DivergenceError
from dynopt.events import AtStep, Bounce
from dynopt.optim import BBI
from dynopt.optim import bound as bound_module
from dynopt.optim.finite import FAST_ABOVE

A = 0.5 + torch.arange(8, dtype=torch.float64) / 8


def _loss(p):
    """L = 1 + ½ Σ a θ², its value and gradient (set on p). The value is summed by numpy in
    float64: torch's float32 sum depends on the tensor's address, which would make two runs
    differ before any optimizer code runs."""
    with torch.no_grad():
        a = A.to(p.dtype).repeat(p.numel() // 8 + 1)[:p.numel()]
        p.grad = a * p
        x = p.detach().numpy().astype(np.float64)
        return float(1.0 + 0.5 * np.sum(a.numpy().astype(np.float64) * x * x))


def _run(n, steps, *, bounded=True, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n, dtype=dtype))
    opt = BBI([p], lr=0.05, seed=3, **{"t0": 10, "t1": 25, **kw})
    if not bounded:
        opt._result_bounded = lambda *_: False
    for _ in range(steps):
        opt.step(loss=_loss(p))
    return p, opt


@pytest.mark.parametrize("n", [64, FAST_ABOVE + 5])
@pytest.mark.parametrize("kw", [{}, {"foreach": True}, {"bounce_direction": "sphere"}],
                         ids=["fused", "foreach", "sphere-bounce"])
def test_bbi_steps_take_the_bound_and_match_the_snapshot_path(n, kw):
    """40 steps across a fixed bounce (t0 = 10) and a t1 bounce: the bound is taken on every
    ordinary step, the snapshot on the first and on bounces, and θ, Π and BBI's state are
    bit-identical to a run that always snapshots. Catches: a trial control that writes the real
    state, a bound never taken, a bound that changes the update."""
    p, opt = _run(n, 40, **kw)
    q, ref = _run(n, 40, bounded=False, **kw)
    assert ref.result_checks == {"bound": 0, "snapshot": 40}
    bounces = int(float(opt.global_state["bbi"]["bounces"]))
    assert bounces >= 1
    assert opt.result_checks["snapshot"] == 1 + bounces
    assert opt.result_checks["bound"] == 39 - bounces
    assert torch.equal(p.detach(), q.detach())
    assert torch.equal(opt.state[p]["momentum"], ref.state[q]["momentum"])
    for k, v in opt.global_state["bbi"].items():
        assert torch.equal(v, ref.global_state["bbi"][k]), k
    assert opt.global_state["ps2"] == ref.global_state["ps2"]


def test_events_and_bounce_requests_take_the_snapshot_path():
    """With an event attached (a Bounce at step 3) every step snapshots: the events' actions
    are not bounded. Catches: a bound that ignores events."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(32))
    opt = BBI([p], lr=0.05, seed=3, t0=None, t1=None,
              events=[AtStep(3, Bounce())])
    for _ in range(5):
        opt.step(loss=_loss(p))
    assert opt.result_checks == {"bound": 0, "snapshot": 5}


@pytest.mark.parametrize("n", [64, FAST_ABOVE + 5])
def test_a_nan_momentum_written_between_steps_is_caught_and_undone(n):
    """Π[n//2] set to NaN between ordinary steps (|Π|² is cached from the last step, so the
    shell logic does not see it): the carried bound is void (the write bumped the version), the
    scan sees the NaN, the bound fails, and the snapshot path finds the NaN result and undoes
    the step exactly. Catches: a carried bound trusted after a write, a missing state bound."""
    p, opt = _run(n, 5)
    assert opt.result_checks == {"bound": 4, "snapshot": 1}
    opt.state[p]["momentum"][n // 2] = float("nan")
    before = copy.deepcopy(opt.state_dict())
    theta = p.detach().clone()
    with pytest.raises(DivergenceError,
                       match=r"momentum\) already held a non-finite value \(NaN/inf\) before step 6"):
        opt.step(loss=_loss(p))
    assert opt.result_checks == {"bound": 4, "snapshot": 2}
    assert torch.equal(p.detach(), theta)
    after = opt.state_dict()
    mom, ref = after["state"][0]["momentum"], before["state"][0]["momentum"]
    assert torch.equal(torch.nan_to_num(mom, nan=7.0), torch.nan_to_num(ref, nan=7.0))
    for k, v in before["dynopt"]["global"]["bbi"].items():
        assert torch.equal(after["dynopt"]["global"]["bbi"][k], v), k


def test_a_steady_bbi_run_scans_the_state_once(monkeypatch):
    """Between bounces, steps use the carried bound: over 9 ordinary steps (no bounce: t0 = t1 =
    None) θ and Π are scanned once. Catches: the carry not committed for BBI."""
    calls = []
    real = bound_module.abs_max
    monkeypatch.setattr(bound_module, "abs_max", lambda ts: calls.append(1) or real(ts))
    _, opt = _run(64, 10, t0=None, t1=None)
    assert opt.result_checks == {"bound": 9, "snapshot": 1}
    assert len(calls) == 1



def _count_control(monkeypatch):
    from dynopt.backends.torch import energy_ops

    calls = []
    real = energy_ops.bbi_control
    monkeypatch.setattr(energy_ops, "bbi_control",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_the_shell_logic_runs_once_per_step(monkeypatch):
    """The bound runs BBI's shell logic on a copy of its state and the step adopts that result:
    one run per step, bounded or not. Catches: the trial discarded (two runs per bounded step)."""
    calls = _count_control(monkeypatch)
    _, opt = _run(64, 10, t0=None, t1=None)
    assert opt.result_checks == {"bound": 9, "snapshot": 1}
    assert len(calls) == 10


@pytest.mark.parametrize("change", ["state", "loss"])
def test_a_trial_for_other_inputs_is_not_adopted(monkeypatch, change):
    """A trial left by the bound (here made by hand), then BBI's state or the loss changes before
    a step that does not run the bound (nonfinite='ignore'): the step runs the shell logic on
    its own inputs, and its result equals that of an optimizer that never had the trial.
    Catches: a trial adopted by key of the step counter alone, or without the state's values."""
    from dynopt.optim import bbi as bbi_module

    runs = []
    for with_trial in (True, False):
        p, opt = _run(64, 5, t0=None, t1=None)
        loss = _loss(p)
        if with_trial:
            opt._gradients_finite(loss)
            assert bound_module.bbi_bounded(opt, loss)
            assert bbi_module.TRIAL in opt.__dict__
        if change == "state":
            opt.global_state["bbi"]["counter"].add_(1.0)
        else:
            loss = loss * 1.5
        opt.nonfinite = "ignore"
        calls = _count_control(monkeypatch)
        opt.step(loss=loss)
        assert len(calls) == 1 and bbi_module.TRIAL not in opt.__dict__
        runs.append((p.detach().clone(), opt.state[p]["momentum"].clone(),
                     {k: v.clone() for k, v in opt.global_state["bbi"].items()}))
    (p1, m1, s1), (p2, m2, s2) = runs
    assert torch.equal(p1, p2) and torch.equal(m1, m2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
