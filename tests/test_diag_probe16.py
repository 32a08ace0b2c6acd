"""Session 16 bug hunt of dynopt/diagnostics and dynopt/observables: each test failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.observables import Callback


def _run(system, observables):
    return dynopt.integrate(system, None, [0.5, -0.3], h=0.05, n_steps=10, n_chains=2,
                            record_every=5, seed=0, backend="torch", observables=observables)


def _const(value):
    return lambda s: torch.full((s.q.shape[0],), value, dtype=s.q.dtype)


@pytest.mark.parametrize("system,name", [
    (S.OverdampedLangevin(P.Harmonic(dim=2), temperature=0.1), "kinetic"),  # no kinetic record
    (S.OverdampedLangevin(P.Harmonic(dim=2), temperature=0.1), "q"),        # θ is Theta's
    (S.NoseHoover(P.Harmonic(dim=2), temperature=0.5), "invariant"),        # traj.conserved
    (S.NoseHoover(P.Harmonic(dim=2), temperature=0.5), "xi"),               # a thermostat record
])
def test_an_observable_cannot_take_a_name_the_trajectory_gives_a_meaning(system, name):
    """Before: a Callback named 'kinetic' on a first-order system became the kinetic term of
    traj.energy (energy 1000.17 instead of 0.17), one named 'invariant' became traj.conserved,
    one named 'xi' replaced the thermostat's record and one named 'q' became a 2-D traj.q."""
    with pytest.raises(ValueError, match=rf"records \['{name}'\], a name already recorded or "
                                         "reserved"):
        _run(system, [Callback(name, _const(1000.0))])


def test_theta_still_records_q_and_other_names_are_free():
    system = S.NoseHoover(P.Harmonic(dim=2), temperature=0.5)
    plain = _run(system, [])
    traj = _run(system, ["theta", Callback("kinetic2", _const(3.0))])
    assert traj.q.shape == (2, 3, 2)
    np.testing.assert_array_equal(traj.extras["kinetic2"], 3.0)
    np.testing.assert_array_equal(traj.energy, plain.energy)
    np.testing.assert_array_equal(traj.conserved, plain.conserved)
