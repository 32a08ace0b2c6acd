"""Probes of the integration API and its state (session 15): resume, the single-step API,
shapes and the State / Trajectory objects."""

from __future__ import annotations

import numpy as np
import pytest

import dynopt
from dynopt import integrators as I
from dynopt import potentials as P
from dynopt import systems as S

BACKENDS = ["numba", "torch"]


def _np(a):
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


# --- LM noise memory under discrete noise ---------------------------------------------------

def _lm_system() -> S.OverdampedLangevin:
    return S.OverdampedLangevin(P.DoubleWell(dim=1), temperature=0.3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lm_single_steps_with_discrete_noise_equal_integrate(backend):
    """Discrete noise is 0 with probability 2/3, so an LM memory of one chain in one dimension
    is all zeros at most steps. Every step() used to take such a memory for that of an
    Euler–Maruyama state and replace it by LM's start draw (the same value each time: a
    systematic drift); the steps now equal integrate() bit for bit."""
    system, lm = _lm_system(), I.LeimkuhlerMatthews()
    full = dynopt.integrate(system, lm, [0.3], h=0.02, n_steps=30, seed=5, backend=backend,
                            noise="discrete")
    assert (full.extras["noise_prev"][0, 1:] == 0.0).sum() >= 5  # the case under test occurs
    state = lm.init(system, [0.3], seed=5, backend=backend, noise="discrete")
    for _ in range(30):
        state = lm.step(system, state, h=0.02)
    np.testing.assert_array_equal(_np(state.q), _np(full.final_state.q))
    np.testing.assert_array_equal(_np(state.x), _np(full.final_state.x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lm_run_resumed_where_its_discrete_memory_is_zero_is_the_long_run(backend):
    """integrate(a) then integrate(b, state=final_state) equals integrate(a + b) when the split
    falls on a step whose (discrete) LM memory is all zeros."""
    system = _lm_system()
    kw = dict(h=0.02, seed=5, backend=backend, noise="discrete")
    full = dynopt.integrate(system, "lm", [0.3], n_steps=30, **kw)
    zero = np.flatnonzero(full.extras["noise_prev"][0] == 0.0)
    a = int(zero[zero > 0][0])
    head = dynopt.integrate(system, "lm", [0.3], n_steps=a, **kw)
    assert np.all(_np(head.final_state.x) == 0.0)
    tail = dynopt.integrate(system, "lm", None, n_steps=30 - a, h=0.02, state=head.final_state)
    np.testing.assert_array_equal(tail.q, full.q[:, a:])
    np.testing.assert_array_equal(_np(tail.final_state.x), _np(full.final_state.x))


def test_a_state_whose_memory_flag_is_unknown_falls_back_to_its_values():
    """A state built by hand or saved by an older version has ``noise_memory=None``: an
    all-zero memory then counts as none (LM draws its start memory), any other is kept; a
    flag that is not None or a bool is refused by name."""
    system = _lm_system()
    em = dynopt.integrate(system, "em", [0.3], h=0.02, n_steps=3, seed=5)
    lm = dynopt.integrate(system, "lm", [0.3], h=0.02, n_steps=3, seed=5)
    assert em.final_state.noise_memory is False and lm.final_state.noise_memory is True
    for traj in (em, lm):
        unknown = traj.final_state.copy()
        unknown.noise_memory = None
        a = dynopt.integrate(system, "lm", None, h=0.02, n_steps=4, state=unknown)
        b = dynopt.integrate(system, "lm", None, h=0.02, n_steps=4, state=traj.final_state)
        np.testing.assert_array_equal(a.q, b.q)
    bad = lm.final_state.copy()
    bad.noise_memory = 1
    with pytest.raises(TypeError, match=r"state.noise_memory must be None or a bool, got 1"):
        dynopt.integrate(system, "lm", None, h=0.02, n_steps=1, state=bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_states_and_trajectories_compare_by_identity(backend):
    """``==`` between two runs used to raise numpy's "truth value of an array ... is ambiguous"
    (the dataclass compared the array fields) and ``hash`` a TypeError; both are now the
    identity's, and the arrays are compared explicitly."""
    system = S.Langevin(P.DoubleWell(dim=2), temperature=0.3)
    a, b = (dynopt.integrate(system, None, [0.1, 0.2], h=0.05, n_steps=3, seed=1, n_chains=2,
                             backend=backend) for _ in range(2))
    assert a == a and a != b and a.final_state == a.final_state
    assert a.final_state != b.final_state
    assert len({a, b, a.final_state, b.final_state, a}) == 4
    np.testing.assert_array_equal(a.q, b.q)


@pytest.mark.parametrize("backend", BACKENDS)
def test_init_takes_noise_none_as_the_default_like_integrate(backend):
    """integrate(noise=None) means Gaussian noise; scheme.init(noise=None) refused None as not
    one of the kinds, so a wrapper forwarding integrate's arguments to init failed."""
    system, scheme = S.Langevin(P.DoubleWell(dim=2), temperature=0.3), I.BAOAB()
    state = scheme.init(system, [0.1, 0.2], seed=3, backend=backend, noise=None)
    assert state.noise == "gaussian"
    ref = scheme.init(system, [0.1, 0.2], seed=3, backend=backend)
    np.testing.assert_array_equal(_np(scheme.step(system, state, h=0.05).q),
                                  _np(scheme.step(system, ref, h=0.05).q))


def test_system_reprs_quote_their_text_parameters():
    """``BornInfeld(...)`` showed ``bounce_direction=cube``: not the Python that makes it."""
    text = repr(S.BornInfeld(P.DoubleWell(dim=2), bounce_direction="sphere", t0=None))
    assert "bounce_direction='sphere'" in text and "t0=None" in text


def test_a_splitting_repr_shows_its_fractions_and_name():
    """``Splitting("BAB", fractions=[0.3, 1.0, 0.7])`` printed as ``Splitting('BAB')``, the
    Strang scheme: the trajectory's repr and the ArviZ attributes named the wrong scheme. The
    repr now rebuilds the integrator."""
    custom = I.Splitting("BAB", fractions=[0.3, 1.0, 0.7], name="asym")
    text = repr(custom)
    assert text == "Splitting('BAB', fractions=(0.3, 1.0, 0.7), name='asym')"
    again = eval(text, {"Splitting": I.Splitting})
    assert again.letters() == custom.letters() and again.name == custom.name
    assert repr(I.Splitting("BAOAB")) == "Splitting('BAOAB')"
    assert repr(I.Splitting("B A B", fractions=[0.5, 1, 0.5])) == "Splitting('BAB')"
    assert repr(I.BAOAB()) == "BAOAB()"
    traj = dynopt.integrate(S.Hamiltonian(P.Harmonic()), custom, [1.0], h=0.1, n_steps=2)
    assert "fractions=(0.3, 1.0, 0.7)" in repr(traj)


# --- a state continued by a system whose extras mean something else --------------------------

POT = P.Rosenbrock(dim=2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("first", "then", "names"), [
    (S.AdaptiveLangevin(POT, temperature=0.3), S.PortHamiltonian(POT, gamma=0.0),
     r"\{'xi': 1\}.*\{'gamma': 1\}"),
    (S.BornInfeld(POT, delta_energy=0.5), S.NoseHooverChain(POT, chain_length=5),
     r"\{'E0': 1, .*\{'v': 5, 'eta': 5\}"),
    (S.NoseHoover(POT), S.NoseHooverChain(POT, chain_length=1),
     r"\{'xi': 1, 'eta': 1\}.*\{'v': 1, 'eta': 1\}"),
])
def test_a_state_is_not_continued_by_a_system_whose_extras_differ(backend, first, then, names):
    """check_state compared only the widths of q, p and x, so a state of another system with as
    many extras was continued with them reinterpreted: adaptive Langevin's ξ became the
    port-Hamiltonian friction (its gamma=0.0 ignored), Born–Infeld's E0, V, ... NHC's thermostat
    velocities. The state now carries its extras' names and sizes, checked like the shapes."""
    traj = dynopt.integrate(first, None, [0.5, 0.2], h=0.01, n_steps=3, seed=0, backend=backend)
    state = traj.final_state
    with pytest.raises(ValueError, match=r"state.layout: .*" + names):
        dynopt.integrate(then, None, None, h=0.01, n_steps=2, state=state)
    with pytest.raises(ValueError, match=names):
        dynopt.stepping.run(then, I.resolve(then.default_scheme), state, n_steps=2, h=0.01)
    state.layout = None  # deliberately reinterpreted: allowed, as before
    dynopt.integrate(then, None, None, h=0.01, n_steps=2, state=state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_is_continued_by_a_system_with_the_same_extras(backend):
    """Langevin burn-in continued as Hamiltonian dynamics (both without extras), and a
    port-Hamiltonian state by another friction: the layouts agree, so the state continues."""
    lang = dynopt.integrate(S.Langevin(POT, temperature=0.3), None, [0.5, 0.2], h=0.01,
                            n_steps=3, seed=0, backend=backend)
    ham = dynopt.integrate(S.Hamiltonian(POT), None, None, h=0.01, n_steps=2,
                           state=lang.final_state)
    assert ham.final_state.step == 5 and ham.final_state.layout == ()
    port = dynopt.integrate(S.PortHamiltonian(POT, gamma=0.3), None, [0.5, 0.2], h=0.01,
                            n_steps=3, seed=0, backend=backend)
    again = dynopt.integrate(S.PortHamiltonian(POT, gamma=1.0), None, None, h=0.01, n_steps=2,
                             state=port.final_state)
    assert again.final_state.layout == (("gamma", 1),)


def test_a_malformed_layout_is_refused_by_name():
    state = dynopt.integrate(S.PortHamiltonian(POT), None, [0.5, 0.2], h=0.01, n_steps=1,
                             seed=0).final_state
    state.layout = "gamma"
    with pytest.raises(TypeError, match=r"state.layout must be None or \(\(name, size\), \.\.\.\), "
                                        r"got 'gamma'"):
        dynopt.integrate(S.PortHamiltonian(POT), None, None, h=0.01, n_steps=1, state=state)
    state.layout = [["gamma", 1]]  # a list of lists (e.g. from JSON) is the same layout
    dynopt.integrate(S.PortHamiltonian(POT), None, None, h=0.01, n_steps=1, state=state)


# --- an Euler–Maruyama chain switched to Leimkuhler–Matthews by an event ------------------------

def _switch_to_lm(pot, at: int = 0):
    from dynopt import events as E

    return [E.AtStep(at, then=E.SwitchDynamics(S.OverdampedLangevin(pot, temperature=1.0),
                                               "lm"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_em_chain_switched_to_lm_by_an_event_gets_lm_s_start_memory(backend):
    """EM keeps no noise memory, so LM's first step after a SwitchDynamics from EM added
    R_prev = 0: half the increment variance (0.49 for τh = 1 on a flat potential, 20,000
    chains). The switched chains now get the memory LM's own start draws, as
    integrate(state=<EM state>) with "lm" does: variance τh within 4 SE."""
    pot = P.Harmonic(np.array([1e-6]), 1)
    system, n = S.OverdampedLangevin(pot, temperature=1.0), 20_000
    tr = dynopt.integrate(system, "em", np.zeros(1), h=1.0, n_steps=2, n_chains=n, seed=3,
                          backend=backend, events=_switch_to_lm(pot))
    first = tr.q[:, 1, 0] - tr.q[:, 0, 0]
    se = first.var() * np.sqrt(2.0 / n)
    assert se < 0.015 and abs(first.var() - 1.0) < 4 * se
    assert tr.final_state.noise_memory is True


def test_an_em_run_switched_to_lm_at_its_start_is_the_lm_run_on_numba():
    """On numba (noise keyed by seed, chain and step) switching every chain from EM to LM on
    the initial state is the LM run itself, bit for bit; switching half of them gives those
    chains the LM run's paths and leaves the others on EM's."""
    from dynopt import events as E

    pot = P.DoubleWell(dim=2)
    system = S.OverdampedLangevin(pot, temperature=1.0)
    q0 = np.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2], [0.7, 0.0]])
    kw = dict(h=0.01, n_steps=6, seed=9, backend="numba")
    lm = dynopt.integrate(system, "lm", q0, **kw)
    em = dynopt.integrate(system, "em", q0, **kw)
    switched = dynopt.integrate(system, "em", q0, events=_switch_to_lm(pot), **kw)
    np.testing.assert_array_equal(switched.q, lm.q[:, :])
    calls = []

    def chains_1_and_2_at_the_start(q, p):
        calls.append(1)
        return np.array([False, True, True, False]) & (len(calls) == 1)

    half = dynopt.integrate(system, "em", q0, events=[E.StateCondition(
        chains_1_and_2_at_the_start, then=E.SwitchDynamics(S.OverdampedLangevin(pot), "lm"))],
        **kw)
    np.testing.assert_array_equal(half.q[[1, 2]], lm.q[[1, 2]])
    np.testing.assert_array_equal(half.q[[0, 3]], em.q[[0, 3]])
    assert half.final_state.noise_memory is None  # some chains hold a memory, some none


@pytest.mark.parametrize("backend", BACKENDS)
def test_lm_continuing_an_em_start_draws_a_memory_independent_of_its_noise(backend):
    """An EM state at step 0 continued by LM: on torch the memory came from a new generator
    seeded like the run's, i.e. the very normals LM's first step then drew (R_prev = R), so
    that step had variance 2τh (2.02 measured) instead of τh. It is now drawn from the run's
    live generator (numba: the extras' own Philox stream)."""
    pot = P.Harmonic(np.array([1e-6]), 1)
    system, n = S.OverdampedLangevin(pot, temperature=1.0), 20_000
    start = I.EulerMaruyama().init(system, np.zeros(1), n_chains=n, seed=3, backend=backend)
    moved = _np(I.LeimkuhlerMatthews().step(system, start, h=1.0).q)[:, 0]
    se = moved.var() * np.sqrt(2.0 / n)
    assert se < 0.015 and abs(moved.var() - 1.0) < 4 * se
    assert np.all(_np(start.x) == 0.0)  # the input state is unchanged
