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


# --- exact bin probabilities: the edges are checked ---------------------------------------------

@pytest.mark.parametrize("potential", [P.DoubleWell(dim=2), P.Rosenbrock()],
                         ids=["separable", "dim-2 grid"])
@pytest.mark.parametrize(("edges", "error", "message"), [
    (np.array([np.nan, 0.0, 1.0]), ValueError, r"edges must be finite, got nan at index \(0,\)"),
    (np.array([1.0, 0.0, -1.0]), ValueError, r"edges: bin edges must be increasing"),
    (np.array([1.0]), ValueError, r"edges: bin edges must be increasing with at least 2"),
])
def test_bin_probabilities_refuses_bad_edges_by_name(potential, edges, error, message):
    """Before: NaN edges gave a NaN probability, decreasing edges zeros (separable) or
    negative probabilities (-0.42, Rosenbrock), one edge a ZeroDivisionError."""
    from dynopt import diagnostics as dg

    with pytest.raises(error, match=message):
        dg.bin_probabilities(potential, 0.5, 0, [edges])


def test_gibbs_distance_names_a_potential_that_is_not_one():
    """Before: AttributeError: 'function' object has no attribute 'check_dim'."""
    from dynopt import diagnostics as dg

    with pytest.raises(TypeError, match="potential must be a dynopt.potentials potential"):
        dg.gibbs_distance(np.zeros((1, 10, 1)), potential=lambda x: x, temperature=1.0)


# --- chains of different lengths ----------------------------------------------------------------

@pytest.mark.parametrize("fn", ["effective_sample_size", "rhat", "mcse", "batch_means_se",
                                "integrated_autocorrelation_time", "energy_drift"])
def test_chains_of_different_lengths_are_named_as_such(fn):
    """Before: TypeError "x must be array-like of real numbers, got [[...], [...]]" (the whole
    list), which does not say what is wrong."""
    from dynopt import diagnostics as dg

    rng = np.random.default_rng(0)
    chains = [rng.normal(size=40), rng.normal(size=37)]
    with pytest.raises(ValueError, match=r"chains of different lengths \[40, 37\].*shortest, 37"):
        getattr(dg, fn)(chains)
    same = [c[:37] for c in chains]  # trimmed, the list is the stacked array
    assert getattr(dg, fn)(same) == getattr(dg, fn)(np.stack(same))


@pytest.mark.parametrize("cls", ["Theta", "Projections", "Loss"])
def test_an_observable_class_instead_of_an_object_is_named(cls):
    """Before: the class, being callable, became Callback(cls) and failed at the first record
    with 'Theta() takes no arguments' or 'k must be an integer, got State(...)'."""
    import dynopt.observables as O
    from dynopt.observables.names import resolve

    with pytest.raises(TypeError, match=rf"not classes: got {cls}; pass {cls}\(\)"):
        resolve([getattr(O, cls)])


# --- top Hessian eigenvalue: the point and weight_decay are checked ------------------------------

@pytest.mark.parametrize(("q", "error", "message"), [
    ([0.0, 0.0, 1.0], ValueError, r"q has 3 coordinate\(s\) .* DoubleWell\(dim=2\) has dim=2"),
    (torch.zeros(3), ValueError, r"q has 3 coordinate\(s\) .* DoubleWell\(dim=2\) has dim=2"),
    ([np.nan, 0.0], ValueError, r"q must be finite, got nan at index \(0,\)"),
    (torch.tensor([0.0, np.inf]), ValueError, r"q must be finite, got a tensor of shape \(2,\)"),
    (np.zeros((2, 2)), ValueError, r"q must be one point, shape \(dim,\) or \(1, dim\), got"),
])
def test_potential_top_eigenvalue_checks_the_point(q, error, message):
    """Before: three coordinates for a dim-2 double well gave λ_max = 8.0 (a different
    problem), a NaN coordinate 'FloatingPointError: a Hessian-vector product is not finite'."""
    from dynopt import diagnostics as dg

    with pytest.raises(error, match=message):
        dg.potential_top_eigenvalue(P.DoubleWell(dim=2), q)
    # the accepted shapes agree (λ_max of the double well at 0 is U''(0) = -4)
    assert dg.potential_top_eigenvalue(P.DoubleWell(dim=2), [[0.0, 0.0]]).value == pytest.approx(
        -4.0, abs=1e-12)


def test_model_top_eigenvalue_names_a_bad_weight_decay():
    """Before: weight_decay='a' raised "'<' not supported between instances of 'str' and 'int'"."""
    from dynopt import diagnostics as dg

    model = torch.nn.Linear(2, 1)
    data = (torch.ones(3, 2), torch.ones(3, 1))
    with pytest.raises(TypeError, match="weight_decay must be a real number, got 'a'"):
        dg.model_top_eigenvalue(model, torch.nn.functional.mse_loss, data, weight_decay="a")
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -1.0"):
        dg.model_top_eigenvalue(model, torch.nn.functional.mse_loss, data, weight_decay=-1)


# --- stability limits and the reference flow: arguments named ------------------------------------

@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda dg, L, NH: dg.transfer_matrix(L, "BAOAB", 0.1, "a"), TypeError,
     r"lam must be a real number, got 'a'"),                 # was: could not convert string
    (lambda dg, L, NH: dg.transfer_matrix("L", "BAOAB", 0.1, 1.0), TypeError,
     r"system must be a dynopt system .* got 'L'"),          # was: AttributeError 'offers'
    (lambda dg, L, NH: dg.critical_step("L", "BAOAB", 1.0), TypeError,
     r"system must be a dynopt system .* got 'L'"),          # was: AttributeError 'has_momentum'
    (lambda dg, L, NH: dg.stability_limit(NH, None, 0.1, extras={"xi": "a"}), TypeError,
     r"extras\['xi'\] must be a real number, got 'a'"),      # was: could not convert string
    (lambda dg, L, NH: dg.stability_limit(NH, None, 0.1, extras=[("xi", 1.0)]), TypeError,
     r"extras must be a dict of name -> value, got \[\('xi', 1.0\)\]"),  # was: no 'items'
    (lambda dg, L, NH: dg.reference_flow(S.Hamiltonian(P.Harmonic()), [1.0], [0.0],
                                         x0=[5.0, 6.0], t=1.0), ValueError,
     r"x0 must have shape \(1, 0\), got \(1, 2\)"),          # was: x0 silently ignored
])
def test_stability_and_reference_flow_name_bad_arguments(call, error, message):
    from dynopt import diagnostics as dg

    L = S.Langevin(None, gamma=1.0, temperature=0.0)
    NH = S.NoseHoover(None, temperature=1.0)
    with pytest.raises(error, match=message):
        call(dg, L, NH)
    # the accepted forms are unchanged
    assert dg.stability_limit(NH, None, 0.1, extras={"xi": np.float32(2.0)}).lam == \
        dg.stability_limit(NH, None, 0.1, extras={"xi": 2.0}).lam
