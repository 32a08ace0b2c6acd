"""Events and the braking heavy ball: findings of the session-15 probe (integrate() and the
optimizers agreeing on same-step firings, the loss the events read, host synchronisations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt.events import AtStep, SetFriction, Stop
from dynopt.optim import HeavyBall
from dynopt.systems import PortHamiltonian


def _firings(log):
    return [(f.step, f.chain, f.event, f.actions) for f in log]


@pytest.mark.parametrize("stop_first", [True, False], ids=["stop-first", "stop-last"])
def test_a_stop_does_not_hide_the_other_firings_of_its_step(stop_first):
    """Two events fire on the same observation, one of them Stop. integrate() applied the Stop
    before looking at the next event and so dropped that event's firing (no log entry, no
    action) when the Stop came first in the list, while the optimizer logged and applied both
    in either order. Every trigger sees the same state: both are logged, in both orders, and
    integrate() and HeavyBall agree firing for firing and on the final friction."""
    pot = P.DoubleWell(2)
    h, n = 0.05, 12
    q0 = np.array([[1.6, -1.4], [0.2, 1.5]])

    def events():
        ev = [AtStep(5, then=Stop()), AtStep(5, then=SetFriction(1.0))]
        return ev if stop_first else ev[::-1]

    tr = dynopt.integrate(PortHamiltonian(pot, gamma=0.1), None, q0, h=h, n_steps=n, seed=0,
                          events=events())
    brake = 1 if stop_first else 0
    assert sorted((f.step, f.chain, f.event) for f in tr.events) == [
        (5, c, e) for c in (0, 1) for e in (0, 1)]
    np.testing.assert_array_equal(tr.final_state.x[:, 0], [1.0, 1.0])
    for c in range(2):
        th = torch.tensor(q0[c])
        opt = HeavyBall([th], lr=h, gamma=0.1, events=events())
        for _ in range(n):
            th.grad = pot.grad(th)
            opt.step(loss=pot.value(th))
        assert opt.stopped and opt.friction(opt.param_groups[0]) == 1.0
        assert [(s, e, a) for s, ch, e, a in _firings(tr.events) if ch == c] == [
            (s, e, a) for s, _, e, a in _firings(opt.event_log)]
        assert opt.event_log[brake].actions == ("SetFriction(gamma=1)",)
        np.testing.assert_allclose(th.numpy(), tr.final_state.q[c], rtol=1e-12, atol=1e-14)

