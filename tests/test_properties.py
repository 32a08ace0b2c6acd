"""Property-based tests (hypothesis): reversibility of symmetric splittings, generator slicing,
and potential implementations agreeing on arbitrary points."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import dynopt
from dynopt import potentials, systems
from dynopt.backends.numba.kernel import potential_grads, potential_values
from dynopt.backends.numba.philox import normals_for
from dynopt.backends.numba.runner import pack_potential

HALF = st.text(alphabet="AB", min_size=1, max_size=4)


@settings(max_examples=25, deadline=None)
@given(half=HALF, middle=st.sampled_from(["", "A", "B"]), n=st.integers(1, 40),
       h=st.floats(0.005, 0.05))
def test_palindromic_splittings_are_time_reversible(half, middle, n, h):
    """Any palindrome over A, B is a symmetric composition of exact flows: n steps forward, a
    momentum flip, n steps forward again returns to the start (up to rounding)."""
    scheme = dynopt.integrators.Splitting(half + middle + half[::-1])
    ham = systems.Hamiltonian(potentials.DoubleWell(dim=2))
    q0, p0 = np.array([[0.7, -0.4]]), np.array([[0.3, 0.9]])
    fwd = dynopt.integrate(ham, scheme, q0, p0=p0, h=h, n_steps=n, backend="torch",
                           record_every=n)
    back = dynopt.integrate(ham, scheme, fwd.q[:, -1], p0=-fwd.p[:, -1], h=h, n_steps=n,
                            backend="torch", record_every=n)
    np.testing.assert_allclose(back.q[:, -1], q0, atol=1e-10)
    np.testing.assert_allclose(-back.p[:, -1], p0, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), first=st.integers(0, 10_000), n=st.integers(1, 64),
       chains=st.integers(1, 5))
def test_normals_are_a_pure_function_of_the_index(seed, first, n, chains):
    whole = normals_for(seed, chains, first + n)
    np.testing.assert_array_equal(normals_for(seed, chains, n, first=first), whole[:, first:])


POTS = [potentials.DoubleWell(dim=3), potentials.Rastrigin(dim=3), potentials.Ackley(dim=3),
        potentials.Rosenbrock(dim=3), potentials.Harmonic(omega=[0.5, 1.0, 2.0], dim=3)]


@settings(max_examples=40, deadline=None)
@given(which=st.integers(0, len(POTS) - 1),
       q=st.lists(st.floats(-5.0, 5.0, allow_nan=False), min_size=3, max_size=3))
def test_numba_and_array_potentials_agree_everywhere(which, q):
    pot = POTS[which]
    x = np.array([q])
    kind, par, vfn, gfn = pack_potential(pot)
    np.testing.assert_allclose(potential_values(x, kind, par, vfn), pot.value(x), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(potential_grads(x, kind, par, gfn), pot.grad(x), rtol=1e-11,
                               atol=1e-11)
