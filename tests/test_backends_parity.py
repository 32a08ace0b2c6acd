"""numba and torch run the same programs: deterministic schemes agree to 1e-10 in float64."""

from __future__ import annotations

import numpy as np
import pytest

import dynopt
from dynopt import potentials as P
from dynopt import systems as S

Q0 = np.array([[0.5, -0.3], [1.2, 0.4], [-0.8, 0.1]])
P0 = np.array([[1.0, 0.2], [-0.3, 0.5], [0.0, -1.0]])

DETERMINISTIC = [
    ("leapfrog double well", S.Hamiltonian(P.DoubleWell(dim=2)), "BAB"),
    ("leapfrog ackley", S.Hamiltonian(P.Ackley(dim=2)), "BAB"),
    ("leapfrog rosenbrock, mass", S.Hamiltonian(P.Rosenbrock(dim=2, b=5.0), mass=[1.0, 3.0]), "BAB"),
    ("rastrigin ABA", S.Hamiltonian(P.Rastrigin(dim=2)), "ABA"),
    ("langevin tau=0", S.Langevin(P.DoubleWell(dim=2), gamma=0.7, temperature=0.0), "BAOAB"),
    ("nose-hoover", S.NoseHoover(P.Harmonic(omega=[1.0, 1.7], dim=2), temperature=0.5, tau=0.7),
     None),
    ("nose-hoover T", S.NoseHoover(P.DoubleWell(dim=2), temperature=0.5), "TBABT"),
    ("nose-hoover chain", S.NoseHooverChain(P.DoubleWell(dim=2), temperature=0.5, chain_length=4,
                                            n_substeps=2, sy_order=5), None),
    ("adaptive langevin sigma=0", S.AdaptiveLangevin(P.DoubleWell(dim=2), temperature=0.3,
                                                     sigma_a=0.0, eps=0.5), None),
    ("adaptive langevin BADODAB sigma=0", S.AdaptiveLangevin(P.DoubleWell(dim=2), temperature=0.3,
                                                             sigma_a=0.0, eps=0.5), "BAEOEAB"),
]


@pytest.mark.parametrize(("label", "system", "scheme"), DETERMINISTIC, ids=[d[0] for d in DETERMINISTIC])
def test_deterministic_parity(label, system, scheme):
    kw = dict(h=0.01, n_steps=400, record_every=20, seed=0, p0=P0)
    a = dynopt.integrate(system, scheme, Q0, **kw)
    b = dynopt.integrate(system, scheme, Q0, backend="torch", **kw)
    assert np.abs(a.q - b.q).max() < 1e-10
    assert np.abs(a.p - b.p).max() < 1e-10
    np.testing.assert_allclose(a.energy, b.energy, rtol=0, atol=1e-10)
    for k in a.extras:
        assert np.abs(a.extras[k] - b.extras[k]).max() < 1e-10, k
    assert np.abs(a.q[:, -1] - Q0).max() > 1e-3  # it moved


def test_overdamped_gradient_flow_parity():
    system = S.OverdampedLangevin(P.Rosenbrock(dim=2, b=2.0), temperature=0.0)
    a = dynopt.integrate(system, "em", Q0, h=0.01, n_steps=300, seed=0)
    b = dynopt.integrate(system, "em", Q0, h=0.01, n_steps=300, seed=0, backend="torch")
    assert np.abs(a.q - b.q).max() < 1e-10


def test_float32_torch_tracks_float64():
    system = S.Hamiltonian(P.DoubleWell(dim=2))
    a = dynopt.integrate(system, "BAB", Q0, p0=P0, h=0.01, n_steps=200, backend="torch")
    b = dynopt.integrate(system, "BAB", Q0, p0=P0, h=0.01, n_steps=200, backend="torch",
                         dtype="float32")
    assert np.abs(a.q - b.q).max() < 1e-4


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_seeded_runs_are_reproducible(backend):
    system = S.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.5)
    kw = dict(h=0.05, n_steps=200, n_chains=5, backend=backend)
    a = dynopt.integrate(system, "BAOAB", [0.0, 0.0], seed=42, **kw)
    b = dynopt.integrate(system, "BAOAB", [0.0, 0.0], seed=42, **kw)
    c = dynopt.integrate(system, "BAOAB", [0.0, 0.0], seed=43, **kw)
    np.testing.assert_array_equal(a.q, b.q)
    np.testing.assert_array_equal(a.p, b.p)
    assert not np.array_equal(a.q, c.q)
    assert a.seed == 42


def test_numba_chain_results_do_not_depend_on_batch_or_chunking():
    """Counter-based noise: chain i's path is a function of (seed, i) only."""
    system = S.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.5)
    kw = dict(h=0.05, seed=9, record_every=10)
    small = dynopt.integrate(system, "BAOAB", [0.3, 0.1], n_steps=300, n_chains=3, **kw)
    big = dynopt.integrate(system, "BAOAB", [0.3, 0.1], n_steps=300, n_chains=150, **kw)
    np.testing.assert_array_equal(small.q, big.q[:3])
    # 300 steps in three pieces through final_state
    first = dynopt.integrate(system, "BAOAB", [0.3, 0.1], n_steps=100, n_chains=3, **kw)
    second = dynopt.integrate(system, "BAOAB", None, n_steps=120, state=first.final_state, **kw)
    third = dynopt.integrate(system, "BAOAB", None, n_steps=80, state=second.final_state, **kw)
    np.testing.assert_array_equal(third.q[:, -1], small.q[:, -1])
    np.testing.assert_array_equal(third.final_state.p, small.final_state.p)
    np.testing.assert_allclose(third.t[-1], small.t[-1])


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_single_step_api_equals_integrate(backend):
    system = S.AdaptiveLangevin(P.DoubleWell(dim=2), temperature=0.5, sigma_a=0.5, eps=0.2)
    scheme = dynopt.integrators.resolve(system.default_scheme)
    state = scheme.init(system, [0.3, 0.1], seed=5, n_chains=4, backend=backend)
    start = state.copy()
    for _ in range(25):
        state = scheme.step(system, state, h=0.05)
    traj = dynopt.integrate(system, scheme, None, h=0.05, n_steps=25, state=start)
    as_np = (lambda t: t.numpy()) if backend == "torch" else np.asarray
    np.testing.assert_array_equal(as_np(state.q), traj.q[:, -1])
    np.testing.assert_array_equal(as_np(state.x)[:, 0], traj.extras["xi"][:, -1])
    assert state.step == 25 and start.step == 0


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_user_arrays_are_never_modified(backend):
    q0, p0 = Q0.copy(), P0.copy()
    dynopt.integrate(S.Hamiltonian(P.DoubleWell(dim=2)), "BAB", q0, p0=p0, h=0.01, n_steps=10,
                     backend=backend)
    np.testing.assert_array_equal(q0, Q0)
    np.testing.assert_array_equal(p0, P0)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_single_step_api_reports_divergence_and_keeps_the_input_state(backend):
    ham = S.Hamiltonian(P.Harmonic())
    scheme = dynopt.integrators.Leapfrog()
    state = scheme.init(ham, [1.0], p0=[0.0], backend=backend)
    with pytest.raises(dynopt.DivergenceError, match="diverged at step"):
        dynopt.stepping.run(ham, scheme, state, n_steps=5000, h=2.5)
    assert state.step == 0 and float(state.q[0, 0]) == 1.0
