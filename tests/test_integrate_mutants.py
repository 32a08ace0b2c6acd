"""integrate()/run() contracts that one-line bugs would break (found by mutation testing)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dynopt
from dynopt.potentials import Harmonic
from dynopt.stepping import run, step
from dynopt.systems import Hamiltonian


def test_run_and_step_advance_the_state_time_from_where_it_was():
    """run(n_steps) adds n·h to the state's time (and step), starting from the state's own
    time: a run continued from t = 0.5 is at t = 0.8 after 3 steps of 0.1, as integrate().
    (The clock is backend-independent Python: torch is enough.)"""
    sys = Hamiltonian(Harmonic(1.0, 1))
    tr = dynopt.integrate(sys, "BAB", [1.0], h=0.1, n_steps=5, seed=0, backend="torch")
    s0 = tr.final_state
    assert s0.time == pytest.approx(0.5, abs=1e-15) and s0.step == 5
    s1 = run(sys, tr.integrator, s0, n_steps=3, h=0.1)
    assert s1.step == 8 and s1.time == pytest.approx(0.8, abs=1e-14)
    s2 = step(sys, tr.integrator, s1, h=0.25)
    assert s2.step == 9 and s2.time == pytest.approx(1.05, abs=1e-14) and s2.h == 0.25
    assert s0.time == pytest.approx(0.5, abs=1e-15)  # the input state is unchanged
    more = dynopt.integrate(sys, "BAB", None, h=0.1, n_steps=3, state=s0)
    assert more.final_state.time == pytest.approx(s1.time, abs=1e-14)


@pytest.mark.parametrize("field, value", [("q", math.inf), ("q", -math.inf), ("p", math.inf),
                                          ("q", math.nan)])
def test_a_state_with_an_infinite_or_nan_coordinate_is_refused(field, value):
    """q and p must be finite (only the extras may hold +inf as a marker): a diverged state
    cannot be continued, and the message names the field."""
    sys = Hamiltonian(Harmonic(1.0, 2))
    tr = dynopt.integrate(sys, "BAB", [1.0, 0.5], h=0.1, n_steps=2, seed=0, backend="torch")
    state = tr.final_state.copy()
    getattr(state, field)[0, 1] = value
    with pytest.raises(ValueError, match=f"state.{field} holds non-finite values"):
        dynopt.integrate(sys, "BAB", None, h=0.1, n_steps=1, state=state)
    with pytest.raises(ValueError, match=f"state.{field} holds non-finite values"):
        run(sys, tr.integrator, state, n_steps=1, h=0.1)
    assert np.isfinite(tr.final_state.q.numpy()).all()
