"""Events and the braking heavy ball: findings of the session-15 probe (integrate() and the
optimizers agreeing on same-step firings, the loss the events read, host synchronisations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt.events import AtStep, LossBelow, SetFriction, Stop, Threshold
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


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


_X = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
_Y = torch.sin(_X.sum(1, keepdim=True))


def _syncs(events, *, weight_decay, pass_loss, n=6):
    """Host synchronisations (CPU proxy: tensor-to-host conversions) of each steady step."""
    from dynopt.backends.torch.host_syncs import HostSyncs

    m = _mlp()
    opt = HeavyBall(m.parameters(), lr=0.2, gamma=0.5, weight_decay=weight_decay,
                    events=events, nonfinite="ignore", foreach=True, fused=False)
    counts, losses = [], []
    for _ in range(n):
        opt.zero_grad()
        loss = ((m(_X) - _Y) ** 2).mean()
        loss.backward()
        losses.append(loss.detach().double() + 0.5 * weight_decay * sum(
            (p.detach().double() ** 2).sum() for p in m.parameters()))
        with HostSyncs("cpu") as s:
            opt.step(loss=loss) if pass_loss else opt.step()
        counts.append(s.count)
    return counts, opt, losses


def test_weight_decay_costs_the_loss_events_no_host_synchronisation():
    """With weight_decay the events read U = loss + λ|θ|²/2, and the prior term was summed as a
    Python float per parameter tensor: one host synchronisation per tensor and step (4 here; a
    ResNet's hundreds on a GPU), where the docs promise that events add one. The term now stays
    on the device: a loss event adds exactly one, and the value it reads is unchanged."""
    base, _, _ = _syncs(None, weight_decay=1e-2, pass_loss=False)
    counts, opt, losses = _syncs([LossBelow(0.999, then=SetFriction(1.0))], weight_decay=1e-2,
                                 pass_loss=True)
    (f,) = opt.event_log  # fired (once) on the first loss ≤ 0.999 × the first one
    extra = [c - b for c, b in zip(counts, base, strict=True)]
    assert [e for k, e in enumerate(extra) if k not in (0, f.step)] == [1] * (len(extra) - 2)
    assert f.step > 0 and f.value == pytest.approx(float(losses[f.step]), rel=1e-6)
    assert f.value <= 0.999 * float(losses[0]) * (1 + 1e-6)


def test_a_loss_that_no_event_reads_costs_no_host_synchronisation():
    """HeavyBall without loss events does not read the loss, but step(loss=loss) still summed
    the weight-decay prior onto it (one host synchronisation per parameter tensor) before
    dropping it: the docs' "no host synchronisation" for a steady HeavyBall step held only
    without loss=. The prior is now added only when the step reads the loss."""
    for events in (None, [AtStep(3, then=SetFriction(1.0))]):
        without, _, _ = _syncs(events, weight_decay=1e-2, pass_loss=False)
        given, _, _ = _syncs(events, weight_decay=1e-2, pass_loss=True)
        assert given[1:] == without[1:]



@pytest.mark.parametrize("hold", ["paused-group", "no-gradient"])
def test_the_energy_event_counts_the_momenta_that_sit_a_step_out(hold):
    """H = U + ½|p|² over every momentum. A param group paused with lr = 0 (or a tensor that got
    no gradient this step) keeps its momentum unchanged, but the "energy" observable summed
    only the stepping tensors' momenta: pausing a moving group dropped its kinetic energy from
    H (here 6.75 → 6.07), so an EnergyBelow could fire on the pause alone."""
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    opt = HeavyBall([{"params": [a]}, {"params": [b]}], lr=0.1, gamma=0.0,
                    events=[Threshold(-1.0, observable="energy", below=False, once=False)])
    want = []
    for k in range(8):
        opt.zero_grad()
        loss = (a ** 2).sum() / 2 + (b ** 2).sum() / 2
        loss.backward()
        if k >= 4 and hold == "paused-group":
            opt.param_groups[1]["lr"] = 0.0
        elif k >= 4:
            b.grad = None
        kinetic = sum(float((opt.state[p]["momentum"] ** 2).sum()) for p in (a, b)
                      if p in opt.state)
        want.append(float(loss.detach()) + 0.5 * kinetic)
        opt.step(loss=loss.detach())
    assert float(opt.state[b]["momentum"].abs().sum()) > 0.1  # b moved, then held its p
    assert [f.value for f in opt.event_log] == pytest.approx(want, rel=1e-14, abs=0)


def test_unordered_events_and_bad_labels_are_refused_naming_the_value():
    """The actions of events that fire together apply in list order (a later SetFriction
    wins), but a set of triggers was accepted and iterated in its hash order, which changes
    from run to run; ``then="brake"`` was refused naming its first letter ('b'), and a
    StateCondition's ``name`` (a label in the log) took any object."""
    from dynopt.events import EventSet, StateCondition

    for bad in ({AtStep(1), AtStep(2)}, frozenset({AtStep(1)})):
        with pytest.raises(TypeError, match="events must be ordered"):
            EventSet(bad)
        with pytest.raises(TypeError, match="events must be ordered"):
            HeavyBall([torch.nn.Parameter(torch.ones(2))], events=bad)
    with pytest.raises(TypeError, match="got 'brake'"):
        AtStep(1, then="brake")
    with pytest.raises(TypeError, match="name must be a str, got 3"):
        StateCondition(lambda q, p: q[:, 0] > 0, name=3)


def test_a_predicate_returning_nan_is_refused_not_read_as_true():
    """StateCondition accepts a numeric predicate (nonzero = true); a NaN was cast to True and
    fired the event (a Stop froze the chain). It is refused, naming the chain."""
    from dynopt.events import StateCondition

    pot = P.DoubleWell(1)
    cond = StateCondition(lambda q, p: np.where(q[:, 0] > 0, np.nan, 0.0), then=Stop())
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) for chain\(s\) \[0\]"):
        dynopt.integrate(PortHamiltonian(pot, gamma=1.0), "FBA", [[1.0], [-1.0]], h=0.1,
                         n_steps=3, events=[cond])
    ok = StateCondition(lambda q, p: (q[:, 0] > 5.0).astype(float), then=Stop())
    traj = dynopt.integrate(PortHamiltonian(pot, gamma=1.0), "FBA", [[1.0], [-1.0]], h=0.1,
                            n_steps=3, events=[ok])
    assert len(traj.events) == 0


def test_an_atstep_inside_a_fully_paused_stretch_fires_at_the_first_step_that_moves():
    """Documented (docs/energy-conserving.md): steps in which every group sits out (lr = 0)
    observe nothing, so AtStep(3) under five paused steps fires, and is logged, at step 5."""
    th = torch.nn.Parameter(torch.ones(3))
    opt = HeavyBall([th], lr=0.1, gamma=0.5, events=[AtStep(3, then=SetFriction(1.0))])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.0 if s < 5 else 1.0)
    frictions = []
    for _ in range(7):
        th.grad = th.detach().clone()
        opt.step()
        sched.step()
        frictions.append(opt.friction(opt.param_groups[0]))
    assert opt.event_log.steps() == [5]
    assert frictions == [0.5] * 5 + [1.0] * 2
