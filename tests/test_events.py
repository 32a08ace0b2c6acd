"""Events: trigger logic (numpy and torch alike), latching, logging, and actions in integrate()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt.events import (
    AtStep,
    Bounce,
    EnergyAbove,
    EnergyBelow,
    EventSet,
    LossBelow,
    Plateau,
    RelativeReduction,
    SetFriction,
    StateCondition,
    Stop,
    SwitchDynamics,
    Threshold,
)
from dynopt.systems import Hamiltonian, Langevin, PortHamiltonian


def _run(events, losses, xp):
    """Feed per-chain loss sequences (steps, chains); return the fired masks per step."""
    es = EventSet(events)
    like = np.zeros(losses.shape[1]) if xp is np else torch.zeros(losses.shape[1],
                                                                  dtype=torch.float64)
    st = es.init_state(like)
    out = []
    for k, row in enumerate(losses):
        v = row if xp is np else torch.as_tensor(row)
        fired = es.observe(st, {"loss": v, "step": v * 0 + k, "energy": v}, k)
        es.record(st, fired, {"loss": v, "step": v * 0 + k, "energy": v}, k)
        out.append(np.stack([np.asarray(f) for f in fired]))
    return np.stack(out), es.log(st)


LOSSES = np.array([[10.0, 4.0], [8.0, 3.0], [3.0, 3.5], [2.9, 1.0], [2.95, 0.9], [3.0, 0.4],
                   [3.1, 0.3], [2.0, 0.35]])


@pytest.mark.parametrize("xp", [np, torch], ids=["numpy", "torch"])
def test_trigger_logic(xp):
    fired, log = _run([LossBelow(0.3), RelativeReduction(0.5), Plateau(2), Threshold(0.38),
                       AtStep(3)], LOSSES, xp)
    # LossBelow(0.3): L ≤ 0.3·L₀, once — chain 0 at step 2 (3 ≤ 3), chain 1 at step 3 (1 ≤ 1.2)
    assert [list(np.flatnonzero(fired[:, 0, c])) for c in range(2)] == [[2], [3]]
    # RelativeReduction(0.5): staged goals L_ref/2 with L_ref reset at each firing
    assert [list(np.flatnonzero(fired[:, 1, c])) for c in range(2)] == [[2], [3, 5]]
    # Plateau(2): 2 observations without a new minimum, then the counter restarts
    assert [list(np.flatnonzero(fired[:, 2, c])) for c in range(2)] == [[5], []]
    # Threshold(0.38) below, once; AtStep(3) at the step count 3
    assert [list(np.flatnonzero(fired[:, 3, c])) for c in range(2)] == [[], [6]]
    assert [list(np.flatnonzero(fired[:, 4, c])) for c in range(2)] == [[3], [3]]
    assert len(log) == int(fired.sum())
    f = next(f for f in log if f.event == 0 and f.chain == 1)
    assert (f.step, f.value, f.observable) == (3, 1.0, "loss")


def test_once_can_be_changed():
    fired, _ = _run([Threshold(3.5, once=False)], LOSSES[:, :1], np)
    assert list(np.flatnonzero(fired[:, 0, 0])) == [2, 3, 4, 5, 6, 7]


def test_bad_events():
    with pytest.raises(ValueError, match="fraction must be > 0"):
        LossBelow(0.0)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        RelativeReduction(1.0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        Plateau(0)
    with pytest.raises(TypeError, match="then must be an Action"):
        LossBelow(0.5, then="brake")
    with pytest.raises(TypeError, match=r"must be a dynopt\.events trigger"):
        EventSet([SetFriction(1.0)])
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        SetFriction(-1.0)


def test_stop_freezes_chains_and_ends_the_run():
    sys = Hamiltonian(P.Harmonic(omega=1.0, dim=1))
    tr = dynopt.integrate(sys, "BAB", [[1.0], [2.0]], h=0.1, n_steps=500, seed=0,
                          p0=[[0.0], [1.0]],
                          events=[Threshold(0.0, observable="loss", below=False),
                                  StateCondition(lambda q, p: q[:, 0] < 0.0, then=Stop())])
    # chain 0 crosses q = 0 at t ≈ π/2, chain 1 later: both stop, the run ends early
    steps = tr.events.steps(1)
    assert len(steps) == 2 and tr.n_draws == max(steps) + 1 < 501
    assert tr.events.steps(0) == [0, 0]  # Threshold fired once per chain, at step 0 ...
    for c in range(2):
        k = tr.events.steps(1)[c]
        frozen = tr.q[c, k:]
        np.testing.assert_array_equal(frozen, np.broadcast_to(tr.q[c, k], frozen.shape))
    assert tr.events.steps(1)[0] < tr.events.steps(1)[1]  # one chain stayed frozen meanwhile


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_bounce_action_keeps_norm_and_position(backend):
    sys = Hamiltonian(P.Harmonic(omega=[1.0, 2.0, 3.0], dim=3))
    tr = dynopt.integrate(sys, "BAB", np.ones(3), h=0.05, n_steps=40, seed=3, n_chains=2,
                          p0=[0.5, -0.2, 0.1], backend=backend, events=[AtStep(10, then=Bounce())])
    H = tr.energy
    # a bounce at step 10 keeps θ and |p|, hence H, and changes the direction
    np.testing.assert_allclose(H[:, 11:], np.broadcast_to(H[:, 10:11], H[:, 11:].shape),
                               rtol=1e-2)
    traj_nb = dynopt.integrate(sys, "BAB", np.ones(3), h=0.05, n_steps=40, seed=3, n_chains=2,
                               p0=[0.5, -0.2, 0.1], backend=backend)
    assert np.abs(traj_nb.q[:, -1] - tr.q[:, -1]).max() > 1e-3
    np.testing.assert_array_equal(traj_nb.q[:, :11], tr.q[:, :11])
    assert [f.step for f in tr.events] == [10, 10]


def test_switch_dynamics_per_chain_keeps_other_chains_bit_for_bit():
    pot = P.DoubleWell(1)
    ham = Hamiltonian(pot)
    lang = Langevin(pot, gamma=1.0, temperature=0.0)  # friction only: a deterministic brake
    q0 = np.array([[1.5], [-0.3]])
    ev = [Threshold(0.8, then=SwitchDynamics(lang, "BAOAB"), below=True)]
    tr = dynopt.integrate(ham, "BAB", q0, h=0.05, n_steps=300, seed=0, events=ev)
    plain = dynopt.integrate(ham, "BAB", q0, h=0.05, n_steps=300, seed=0)
    switched = {f.chain: f.step for f in tr.events}
    assert 0 in switched and 1 in switched
    k = switched[0]
    np.testing.assert_array_equal(tr.q[0, :k + 1], plain.q[0, :k + 1])
    assert tr.energy[0, -1] < 0.5 * tr.energy[0, k]  # the friction dissipates after the switch
    with pytest.raises(ValueError, match="same state layout"):
        dynopt.integrate(ham, "BAB", q0, h=0.05, n_steps=3, seed=0, events=[
            AtStep(1, then=SwitchDynamics(PortHamiltonian(pot)))])


def test_integrate_event_errors():
    sys = Hamiltonian(P.Harmonic())
    with pytest.raises(ValueError, match="SetFriction needs a system with a per-chain"):
        dynopt.integrate(sys, "BAB", [1.0], h=0.1, n_steps=3, events=[
            LossBelow(0.5, then=SetFriction(1.0))])


def test_energy_trigger_in_integrate():
    sys = PortHamiltonian(P.Harmonic(omega=1.0, dim=1), gamma=0.5)
    tr = dynopt.integrate(sys, None, [[2.0]], h=0.05, n_steps=400, seed=0,
                          events=[EnergyBelow(0.5, then=Stop())])
    (f,) = tr.events
    assert f.value < 0.5 <= tr.energy[0, f.step - 1]  # first step with H < 0.5
    assert f.step == tr.n_draws - 1



def _baoab_normals(q, p, h, gamma, k=1.0):
    """The O-step normals a BAOAB chain drew (harmonic U = k q²/2, unit mass, T = 1), from its
    recorded path: exact algebra, step by step."""
    c, d = np.exp(-gamma * h), np.sqrt(1.0 - np.exp(-2.0 * gamma * h))
    out = []
    for n in range(len(q) - 1):
        pp = p[n] - 0.5 * h * k * q[n]
        qq = q[n] + 0.5 * h * pp
        p_o = (q[n + 1] - qq) / (0.5 * h)
        out.append((p_o - c * pp) / d)
    return np.array(out)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_switched_runs_draw_fresh_noise_every_step(backend):
    """With two dynamics in use, the torch backend stepped each on a copy of the state,
    generator included, and never advanced the run's generator: every step drew the same
    normals (1 distinct value in 60). The chain that keeps the first dynamics must draw fresh
    standard normals."""
    pot = P.Harmonic(dim=1)
    slow = Langevin(pot, gamma=1.0, temperature=1.0)
    fast = Langevin(pot, gamma=2.0, temperature=1.0)
    q0 = np.array([[1.0], [-1.0]])
    ev = [StateCondition(lambda q, p: q[:, 0] > 0.5, then=SwitchDynamics(fast))]
    tr = dynopt.integrate(slow, "BAOAB", q0, p0=np.zeros((2, 1)), h=0.1, n_steps=60, seed=0,
                          backend=backend, events=ev)
    first = {f.chain: f.step for f in tr.events}
    assert first[0] == 0
    upto = first.get(1, 60)  # chain 1 runs the first dynamics until it switches too
    assert upto >= 15
    z = _baoab_normals(tr.q[1, :upto + 1, 0], tr.p[1, :upto + 1, 0], 0.1, 1.0)
    assert len(np.unique(np.round(z, 10))) == len(z)  # the bug: one value repeated


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_a_chain_diverging_under_another_chains_dynamics_is_not_a_divergence(backend):
    """Each dynamics steps a copy of every chain; a chain overflowing under dynamics it does not
    run used to end the run with a DivergenceError naming it."""
    stable = Langevin(P.Harmonic(dim=1), gamma=1.0, temperature=0.1)
    quartic = Langevin(P.DoubleWell(dim=1), gamma=1.0, temperature=0.1)
    q0 = np.array([[1.0], [1e80]])  # chain 1 is fine under the harmonic, overflows in the well
    ev = [StateCondition(lambda q, p: np.abs(q[:, 0]) < 2.0, then=SwitchDynamics(quartic))]
    tr = dynopt.integrate(stable, "BAOAB", q0, h=0.1, n_steps=20, seed=0, backend=backend,
                          events=ev)
    assert np.isfinite(tr.q).all() and {f.chain for f in tr.events} == {0}


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_a_stopped_chain_overflowing_in_its_trial_step_does_not_end_the_run(backend):
    """Stopped chains are stepped with the rest and restored; the single-dynamics path still
    returned their overflow as the run's divergence ("stop runaway chains" ended the run)."""
    q0 = np.array([[30.0], [1.2]])
    tr = dynopt.integrate(Hamiltonian(P.DoubleWell(1)), "leapfrog", q0, h=0.05, n_steps=50,
                          seed=0, backend=backend, p0=np.zeros((2, 1)),
                          events=[EnergyAbove(1e150, then=Stop())])
    assert [(f.step, f.chain) for f in tr.events] == [(4, 0)]
    assert tr.n_draws == 51 and np.isfinite(tr.q).all()
    np.testing.assert_array_equal(tr.q[0, 5:], np.broadcast_to(tr.q[0, 4], tr.q[0, 5:].shape))
    assert np.ptp(tr.q[1, :, 0]) > 0.1  # the healthy chain kept moving
    # every chain stopped on the initial state: no step is taken
    tr = dynopt.integrate(Hamiltonian(P.DoubleWell(1)), "leapfrog", q0, h=0.05, n_steps=5,
                          seed=0, backend=backend, events=[AtStep(0, then=Stop())])
    assert tr.final_state.step == 0 and tr.n_draws == 1


def test_state_conditions_and_other_triggers_apply_in_list_order():
    """integrate() applied StateCondition actions before all others; like the optimizers, every
    trigger sees the same state and the actions apply in list order (the later one wins)."""
    sys = PortHamiltonian(P.DoubleWell(2), gamma=0.0)
    always = StateCondition(lambda q, p: np.ones(len(q), dtype=bool), then=SetFriction(5.0))
    for events, want in (([AtStep(0, then=SetFriction(1.0)), always], 5.0),
                         ([always, AtStep(0, then=SetFriction(1.0))], 1.0)):
        tr = dynopt.integrate(sys, None, [[1.6, -1.4]], h=0.05, n_steps=2, seed=0,
                              events=events)
        assert tr.extras["gamma"][0, 1] == want
        assert [f.event for f in tr.events][:2] == [0, 1]


@pytest.mark.parametrize("result", [True, None, np.ones(3, dtype=bool)])
def test_a_state_predicate_of_the_wrong_shape_is_refused_clearly(result):
    bad = StateCondition(lambda q, p: result, then=Stop())
    with pytest.raises(ValueError, match=r"predicate must return one boolean per chain, "
                                         r"shape \(2,\)"):
        dynopt.integrate(Hamiltonian(P.Harmonic()), "BAB", [[1.0], [2.0]], h=0.1, n_steps=3,
                         events=[bad])


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_bounce_keeps_the_kinetic_energy_with_a_non_unit_mass(backend):
    """A bounce rescaled |p| instead of pᵀM⁻¹p: with masses (1, 100) H went 2.56 → 0.81. On a
    harmonic well at h = 1e-3 leapfrog's energy error is ~1e-7, so H is kept across the bounce;
    the new direction is random (θ paths differ) and, in the M-metric, isotropic: the
    kinetic-energy share of the heavy coordinate over many chains is ½ ± its standard error."""
    mass = np.array([1.0, 100.0])
    sys = Hamiltonian(P.Harmonic(omega=[1.0, 0.1], dim=2), mass=mass)
    n = 4000
    p0 = np.tile([2.0, 0.0], (n, 1))
    ev = [AtStep(10, then=Bounce())]
    tr = dynopt.integrate(sys, "BAB", [1.0, 0.5], h=1e-3, n_steps=12, seed=4, n_chains=n,
                          p0=p0, backend=backend, events=ev)
    H = tr.energy
    np.testing.assert_allclose(H[:, 12], H[:, 10], rtol=1e-5)
    share = (tr.p[:, 11, 1] ** 2 / mass[1]) / (tr.p[:, 11] ** 2 / mass).sum(-1)
    se = share.std() / np.sqrt(n)
    assert abs(share.mean() - 0.5) < 4 * se and se < 0.006  # Beta(½, ½): sd 0.354


@pytest.mark.parametrize(("make", "match"), [
    (lambda: Threshold(1.0, below="no"), "below must be a bool, got 'no'"),
    (lambda: LossBelow(0.5, then=None), "then must be an Action or a list of Actions, got None"),
    (lambda: LossBelow(0.5, then=SetFriction), r"the class SetFriction: write "
                                               r"then=SetFriction\(\.\.\.\)"),
])
def test_trigger_arguments_are_checked(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_switching_to_another_friction_is_refused_naming_set_friction():
    """γ is per-chain state of PortHamiltonian and carries over: a switch to gamma=5 kept the
    old γ silently (energy 3.48 → 3.42 instead of → 0.04)."""
    pot = P.DoubleWell(2)
    ev = [AtStep(10, then=SwitchDynamics(PortHamiltonian(pot, gamma=5.0)))]
    with pytest.raises(ValueError, match=r"gamma=5.0 would be ignored \(current 0.0\).*"
                                         r"SetFriction"):
        dynopt.integrate(PortHamiltonian(pot, gamma=0.0), None, [[1.6, -1.4]], h=0.05,
                         n_steps=20, seed=0, events=ev)
    same = [AtStep(10, then=[SwitchDynamics(PortHamiltonian(pot, gamma=0.0), "FBA"),
                             SetFriction(5.0)])]
    tr = dynopt.integrate(PortHamiltonian(pot, gamma=0.0), None, [[1.6, -1.4]], h=0.05,
                          n_steps=200, seed=0, p0=[[2.0, 0.0]], events=same)
    assert tr.extras["gamma"][0, -1] == 5.0 and tr.energy[0, -1] < 0.5 * tr.energy[0, 10]


def _abs_value(q):
    return abs(q[0])


def _double_well_force(q, out):
    out[0] = 4.0 * q[0] * (q[0] * q[0] - 1.0)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_a_stopped_chains_overflow_does_not_stop_the_clock(backend):
    """The backend counts a step only when every chain stayed finite; a stopped chain's trial
    overflow was then forgiven but the step counter stayed put, so on numba the live chains
    drew one step's noise over and over (keyed by step) and final_state.step/time were wrong.
    The live chain now follows the run whose stopped chain is harmless, bit for bit."""
    # the double well's force with U = |q|, finite at q = 1e200 (its own (q² − 1)² is not, and
    # a non-finite U at a record stops the run)
    system = Langevin(P.Custom(1, value=lambda q: q[..., 0].abs(),
                               grad=lambda q: 4.0 * q * (q * q - 1.0),
                               numba_value=_abs_value, numba_grad=_double_well_force),
                      gamma=1.0, temperature=0.3)
    runs = {}
    for far in (1e4, 1e200):  # 1e200 overflows in every trial step
        runs[far] = dynopt.integrate(
            system, "BAOAB", np.array([[far], [1.0]]), p0=np.zeros((2, 1)), h=0.05,
            n_steps=10, seed=3, backend=backend,
            events=[StateCondition(lambda q, p: np.abs(q[:, 0]) > 1e3, then=Stop())])
    for tr in runs.values():
        assert tr.final_state.step == 10 and tr.final_state.time == pytest.approx(0.5)
        assert tr.n_draws == 11
    np.testing.assert_array_equal(runs[1e4].q[1], runs[1e200].q[1])
    assert np.ptp(runs[1e200].q[1]) > 0  # and it moved


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_the_event_log_survives_a_divergence(backend):
    """err.trajectory of a diverging run with events had events=None, though an event had
    fired (and changed the friction) before the divergence."""
    system = PortHamiltonian(P.DoubleWell(), gamma=0.0)
    with pytest.raises(dynopt.errors.DivergenceError) as err:
        dynopt.integrate(system, None, np.array([[1.0], [1.0], [3.0]]), p0=np.zeros((3, 1)),
                         h=0.3, n_steps=40, seed=0, backend=backend,
                         events=[AtStep(2, then=SetFriction(0.5))])
    # chain 2's U = (q² − 1)² overflows at step 6 (recorded: the run stops there), q at 7
    assert err.value.step == 6 and err.value.chain == 2
    assert "potential energy of chain 2" in str(err.value)
    log = err.value.trajectory.events
    assert [(f.step, f.chain) for f in log] == [(2, 0), (2, 1), (2, 2)]


def test_the_event_log_survives_an_interrupt(monkeypatch):
    """Ctrl-C during a run with events kept the records but dropped the log."""
    from dynopt.errors import Interrupted

    system = PortHamiltonian(P.DoubleWell(), gamma=0.0)
    calls = {"n": 0}
    be = dynopt.backends.get_backend("numba")
    real = type(be).advance

    def advance(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(type(be), "advance", advance)
    with pytest.raises(Interrupted) as err:
        dynopt.integrate(system, None, np.array([[1.0], [1.2]]), p0=np.zeros((2, 1)), h=0.05,
                         n_steps=40, seed=0, backend="numba",
                         events=[AtStep(2, then=SetFriction(0.5))])
    log = err.value.trajectory.events
    assert [(f.step, f.chain) for f in log] == [(2, 0), (2, 1)]
