"""Branches of the Gibbs-density diagnostics that no other test reached (line-coverage run):
coordinates given in reverse order on a non-separable potential, explicit bin edges, and the
Trajectory input of ``gibbs_distance``."""

from __future__ import annotations

import numpy as np
import pytest

import dynopt
from dynopt import diagnostics as dg
from dynopt import potentials as P
from dynopt import systems
from dynopt.diagnostics.gibbs import bin_probabilities, gibbs_marginal, gibbs_support

TAU = 0.5


@pytest.fixture(scope="module")
def rosenbrock_edges():
    e0, e1 = (np.linspace(lo, hi, 13) for lo, hi in gibbs_support(P.Rosenbrock(), TAU, (0, 1)))
    return e0, e1


def test_reversed_coordinates_give_the_transposed_bin_probabilities(rosenbrock_edges):
    """Rosenbrock is not separable, so (1, 0) takes the 2-D quadrature's transposed branch. The
    result must be the (0, 1) table transposed: rows follow coords[0]. Catches: the transpose
    dropped (bin (i, j) of coordinate 1 read as coordinate 0), or the refined grids paired
    with the wrong coordinate."""
    e0, e1 = rosenbrock_edges
    a = bin_probabilities(P.Rosenbrock(), TAU, (0, 1), (e0, e1))
    b = bin_probabilities(P.Rosenbrock(), TAU, (1, 0), (e1, e0))
    assert a.shape == (12, 12) and b.shape == (12, 12)
    np.testing.assert_allclose(b, a.T, rtol=0, atol=1e-15)
    assert 0.9 < a.sum() <= 1.0 + 1e-12  # the support holds nearly all the mass
    assert np.abs(a - a.T).max() > 1e-3  # the density is not symmetric: the test can fail


def test_reversed_coordinates_give_the_transposed_marginal(rosenbrock_edges):
    e0, e1 = rosenbrock_edges
    m = gibbs_marginal(P.Rosenbrock(), TAU, (0, 1), grid=(e0, e1))
    n = gibbs_marginal(P.Rosenbrock(), TAU, (1, 0), grid=(e1, e0))
    np.testing.assert_allclose(n.density, m.density.T, rtol=0, atol=1e-15)
    assert n.coords == (1, 0) and np.array_equal(n.axes[0], e1)


def test_explicit_bin_edges_equal_the_integer_bins_they_spell_out():
    """``bins`` as edge arrays takes its own path (:func:`_edges`); edges equal to those that
    ``bins=20`` builds from the Gibbs support must give the same histogram, bit for bit; with the
    coordinates reversed the TV distance is the same number."""
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 400, 2))
    R = P.Rosenbrock()
    edges = tuple(np.linspace(lo, hi, 21) for lo, hi in gibbs_support(R, TAU, (0, 1)))
    by_count = dg.gibbs_distance(q, R, TAU, (0, 1), bins=20)
    by_edges = dg.gibbs_distance(q, R, TAU, (0, 1), bins=edges)
    assert by_edges.value == by_count.value and by_edges.noise_floor == by_count.noise_floor
    assert all(np.array_equal(a, b) for a, b in zip(by_edges.edges, edges, strict=True))
    swapped = dg.gibbs_distance(q, R, TAU, (1, 0), bins=edges[::-1])
    assert swapped.value == pytest.approx(by_edges.value, rel=1e-12)
    np.testing.assert_array_equal(swapped.empirical, by_edges.empirical.T)


def test_one_coordinate_takes_a_single_edge_array():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 300, 1))
    edges = np.linspace(-2.0, 2.0, 9)
    d = dg.gibbs_distance(q, P.DoubleWell(), 0.25, bins=edges)
    assert d.empirical.shape == (8,) and np.array_equal(d.edges[0], edges)
    inside = ((q >= -2.0) & (q < 2.0)).mean()
    assert d.empirical.sum() == pytest.approx(inside, abs=1e-12)


@pytest.mark.parametrize(("bins", "message"), [
    (np.array([0.0, 0.0]), "bin edges must be increasing with at least 2 entries"),
    (np.array([1.0]), "bin edges must be increasing with at least 2 entries"),
    (np.array([1.0, 0.5, 2.0]), "bin edges must be increasing"),
    (np.array([0.0, 1.0, np.nan]), "bins must be finite"),
])
def test_bad_bin_edges_are_refused_by_name(bins, message):
    q = np.zeros((1, 10, 1))
    with pytest.raises(ValueError, match=message):
        dg.gibbs_distance(q, P.DoubleWell(), 0.25, bins=bins)


def test_two_coordinates_need_two_edge_arrays():
    q = np.zeros((1, 10, 2))
    with pytest.raises(ValueError, match=r"one edge array per coordinate \(2\)"):
        dg.gibbs_distance(q, P.Rosenbrock(), TAU, (0, 1), bins=(np.linspace(0, 1, 3),))


@pytest.fixture(scope="module")
def langevin_traj():
    system = systems.Langevin(P.DoubleWell(), gamma=1.0, temperature=0.25)
    return dynopt.integrate(system, "BAOAB", [1.0], h=0.05, n_steps=2000, n_chains=4, seed=0,
                            record_every=5)


def test_a_trajectory_supplies_its_potential_and_temperature(langevin_traj):
    """Catches: the Trajectory branch reading another potential or temperature than the run's
    (e.g. τ = 1 by default), which changes the exact bin probabilities."""
    from_traj = dg.gibbs_distance(langevin_traj)
    explicit = dg.gibbs_distance(langevin_traj.q, P.DoubleWell(), 0.25)
    assert from_traj.value == explicit.value
    assert dg.gibbs_distance(langevin_traj, temperature=0.5).value != from_traj.value


def test_a_trajectory_without_temperature_asks_for_one():
    nve = systems.Hamiltonian(P.DoubleWell())
    traj = dynopt.integrate(nve, "BAB", [1.0], h=0.05, n_steps=100, n_chains=2, seed=0,
                            record_every=5)
    with pytest.raises(ValueError, match="Hamiltonian has no temperature; pass temperature="):
        dg.gibbs_distance(traj)
    assert float(dg.gibbs_distance(traj, temperature=0.25)) >= 0.0


def test_array_input_needs_potential_and_temperature():
    with pytest.raises(ValueError, match="needs potential= and temperature= for array input"):
        dg.gibbs_distance(np.zeros((1, 10, 1)), P.DoubleWell())
