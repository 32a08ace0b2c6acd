"""Trigger rules at the values where a one-line slip changes them (found by mutation testing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynopt.events import EventSet, Plateau, RelativeReduction


def _fired_steps(trigger, losses, xp):
    """Steps at which ``trigger`` fires on one chain fed ``losses``."""
    es = EventSet([trigger])
    like = np.zeros(1) if xp is np else torch.zeros(1, dtype=torch.float64)
    st = es.init_state(like)
    steps = []
    for k, v in enumerate(losses):
        val = np.array([v]) if xp is np else torch.tensor([v], dtype=torch.float64)
        (mask,) = es.observe(st, {"loss": val}, k)
        if bool(np.asarray(mask)[0]):
            steps.append(k)
    return steps


@pytest.mark.parametrize("xp", [np, torch], ids=["numpy", "torch"])
def test_relative_reduction_goals_are_one_minus_fraction_of_the_reference(xp):
    # f = 0.25: goals L ≤ 0.75·L_ref, L_ref ← L at each firing: 100 → 75 (step 2) → 56.25
    # (step 4); 80 and 60 are not yet 25 % below their reference. (f = 0.5 cannot tell
    # 1 − f from f.)
    losses = [100.0, 80.0, 75.0, 60.0, 56.25, 50.0]
    assert _fired_steps(RelativeReduction(0.25), losses, xp) == [2, 4]


@pytest.mark.parametrize("xp", [np, torch], ids=["numpy", "torch"])
def test_plateau_counts_an_equal_loss_as_no_improvement(xp):
    # A constant loss makes no new minimum after the first observation: Plateau(2) fires after
    # two such observations and again two after its counter reset.
    assert _fired_steps(Plateau(2), [1.0] * 6, xp) == [2, 4]


def test_a_stopped_chain_fires_no_later_event():
    # Chain 0 stops at step 0; AtStep(10) then fires for chain 1 only (a stopped chain is
    # frozen: no log entry, no action).
    import dynopt
    from dynopt import potentials as P
    from dynopt.events import AtStep, StateCondition, Stop
    from dynopt.systems import Hamiltonian

    tr = dynopt.integrate(Hamiltonian(P.Harmonic(omega=1.0, dim=1)), "BAB", [[2.0], [0.5]],
                          h=0.1, n_steps=20, seed=0, backend="torch",
                          events=[StateCondition(lambda q, p: q[:, 0] > 1.5, then=Stop()),
                                  AtStep(10)])
    assert [(f.step, f.chain) for f in tr.events if f.event == 0] == [(0, 0)]
    assert [(f.step, f.chain) for f in tr.events if f.event == 1] == [(10, 1)]


def test_a_run_with_events_records_every_record_every_steps_like_one_without():
    """With events the run advances one step per kernel call but records the same states:
    record r is the state after r·record_every steps (a trigger that never fires changes
    nothing), bit for bit. (The recording loop is shared by the backends: torch is enough.)"""
    import dynopt
    from dynopt.events import Threshold
    from dynopt.potentials import Harmonic
    from dynopt.systems import Hamiltonian

    sys = Hamiltonian(Harmonic(omega=1.0, dim=1))
    kw = dict(h=0.1, n_steps=9, record_every=3, seed=0, p0=[[0.0], [1.0]], backend="torch")
    plain = dynopt.integrate(sys, "BAB", [[1.0], [2.0]], **kw)
    never = Threshold(-1.0, observable="loss", below=True)   # U >= 0: never fires
    ev = dynopt.integrate(sys, "BAB", [[1.0], [2.0]], events=[never], **kw)
    assert ev.n_draws == 4 and list(ev.events.steps(0)) == []
    np.testing.assert_array_equal(ev.t, plain.t)
    np.testing.assert_array_equal(ev.q, plain.q)
    np.testing.assert_array_equal(ev.p, plain.p)
