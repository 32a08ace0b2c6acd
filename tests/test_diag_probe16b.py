"""Session 16, second diagnostics probe: each test failed before its fix, except the two marked
as guards (they keep what the fix must not change)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import _validation as V
from dynopt import diagnostics as dg
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.observables import Callback

# --- error messages summarize big values -----------------------------------------------------


def test_as_finite_array_summarizes_a_big_bool_array_instead_of_printing_it():
    """Before: the 400 booleans were printed in full (a message of ~2,400 characters)."""
    with pytest.raises(TypeError) as info:
        V.as_finite_array("mass", np.zeros(400, dtype=bool))
    msg = str(info.value)
    assert msg.startswith("mass must be array-like of real numbers, got ndarray of shape (400,) "
                          "and dtype bool")
    assert len(msg) < 200


def test_as_finite_array_names_the_first_offending_entry_of_a_long_list():
    """Before: the whole 301-item list was printed and nothing said which entry was wrong."""
    with pytest.raises(TypeError) as info:
        V.as_finite_array("x", [*range(300), None])
    msg = str(info.value)
    assert "(list of 301 items" in msg and "None at index (300,)" in msg
    assert len(msg) < 200


@pytest.mark.parametrize("check,value,start", [
    ("check_real", list(range(1000)), "v must be a real number, got [0, 1, 2, 3, 4, 5, ...] "
                                    "(list of 1000 items) of type list"),
    ("check_int", np.arange(1000.0), "v must be an integer, got ndarray of shape (1000,) and "
                                   "dtype float64"),
    ("check_bool", "n" * 1000, "v must be a bool (True or False), got 'nnnn"),
])
def test_the_other_validators_summarize_big_values(check, value, start):
    with pytest.raises(TypeError) as info:
        getattr(V, check)("v", value)
    assert str(info.value).startswith(start)
    assert len(str(info.value)) < 200


def test_short_repr_keeps_small_values_exact():
    assert V.short_repr("x") == "'x'"
    assert V.short_repr(True) == "True"
    assert V.short_repr([1.0, 2.0]) == "[1.0, 2.0]"
    assert V.short_repr(torch.zeros(7)) == "Tensor of shape (7,) and dtype torch.float32"


def test_bin_edges_error_shows_where_they_stop_increasing_not_the_whole_array():
    edges = np.linspace(-3, 3, 500)
    edges[250] = edges[249]
    with pytest.raises(ValueError) as info:
        dg.bin_probabilities(P.DoubleWell(dim=1), 0.5, 0, [edges])
    msg = str(info.value)
    assert "ndarray of shape (500,) and dtype float64 (edge 250" in msg
    assert len(msg) < 250


# --- booleans are 0/1 samples for the chain diagnostics --------------------------------------


def test_bool_chains_are_taken_as_0_1_as_arviz_does():
    """Before: TypeError. ArviZ 0.23 gives the same ESS for a bool array and its float copy
    (2058.24 for this draw): an indicator chain estimates a probability."""
    rng = np.random.default_rng(0)
    x = rng.random((4, 500)) < 0.3
    f = x.astype(float)
    assert dg.effective_sample_size(x) == dg.effective_sample_size(f)
    assert dg.rhat(x) == dg.rhat(f)
    assert dg.integrated_autocorrelation_time(x) == dg.integrated_autocorrelation_time(f)
    assert float(dg.mcse(x)) == float(dg.mcse(f))
    np.testing.assert_array_equal(dg.autocorrelation(x), dg.autocorrelation(f))


def test_bool_is_still_refused_where_it_cannot_stand_for_a_number():
    """Guard: a mass, or an energy, is not an indicator."""
    with pytest.raises(TypeError, match="mass must be array-like of real numbers, got True"):
        S.Hamiltonian(P.Harmonic(dim=1), mass=True)
    with pytest.raises(TypeError, match="energy must be array-like of real numbers"):
        dg.energy_drift(np.ones((2, 10), dtype=bool))


# --- flags must be bools -----------------------------------------------------------------------

X = np.random.default_rng(1).standard_normal((2, 64))


@pytest.mark.parametrize("call,name", [
    (lambda v: dg.integrated_autocorrelation_time(X, split=v), "split"),
    (lambda v: dg.autocorrelation(X, average=v), "average"),
    (lambda v: dg.gibbs_distance(np.zeros((1, 10, 1)), P.Harmonic(dim=1), 1.0, per_chain=v),
     "per_chain"),
])
@pytest.mark.parametrize("value", ["no", 0, None])
def test_diagnostics_flags_must_be_bools(call, name, value):
    """Before: split="no" split the chains (a truthy string), average=0 returned per-chain
    ACFs, per_chain=None pooled the chains."""
    with pytest.raises(TypeError, match=rf"{name} must be a bool \(True or False\), got "
                                        rf"{value!r}"):
        call(value)


def test_numpy_bools_are_bools():
    """Guard: np.True_ is a bool to check_bool."""
    assert dg.integrated_autocorrelation_time(X, split=np.True_) == \
        dg.integrated_autocorrelation_time(X, split=True)


def test_a_separable_attribute_must_be_a_bool():
    """Before: potential.separable = "no" declared the potential separable."""
    pot = P.Custom(2, value=lambda q: q[..., 0] ** 2 * q[..., 1] ** 2 + q[..., 0] ** 2)
    pot.separable = "no"
    with pytest.raises(TypeError, match="potential.separable must be a bool"):
        dg.is_separable(pot)


# --- observables: two lambdas, and the monitor's own names ------------------------------------


def _run(observables):
    system = S.OverdampedLangevin(P.Harmonic(dim=2), temperature=0.1)
    return dynopt.integrate(system, None, [0.5, -0.3], h=0.05, n_steps=10, n_chains=2,
                            record_every=5, seed=0, backend="torch", observables=observables)


def test_two_lambdas_are_refused_with_how_to_name_them():
    """Before: "observable Callback('<lambda>') records ['<lambda>'], a name already recorded
    or reserved ...; give it another name", which a lambda cannot be given."""
    with pytest.raises(ValueError, match=r"entries 0 and 1 are both functions named "
                                         r"'<lambda>'.*Callback\('a_name', fn\)"):
        _run([lambda s: s.q[:, 0], lambda s: s.q[:, 1]])
    traj = _run([Callback("q0", lambda s: s.q[:, 0]), Callback("q1", lambda s: s.q[:, 1])])
    assert set(traj.extras) >= {"q0", "q1"}


def test_a_callback_clash_points_to_callback():
    def kinetic(s):
        return s.q[:, 0]

    with pytest.raises(ValueError, match=r"records \['kinetic'\].*Callback\('a_name', fn\)"):
        _run([kinetic])


def _monitor(observables, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    return dynopt.TrainingMonitor(model, opt, torch.nn.functional.mse_loss, (x, y), every=1,
                                  observables=observables, **kw)


def _const(value):
    return Callback("lambda_max", lambda s: torch.full((s.q.shape[0],), value,
                                                       dtype=torch.float64))


def test_training_monitor_refuses_an_observable_it_would_overwrite():
    """Before: the monitor wrote its lambda_max over the observable's (1000.0 was lost)."""
    with pytest.raises(ValueError, match=r"records \['lambda_max'\].*here 'lambda_max' "
                                         r"\(TrainingMonitor's curvature"):
        _monitor([_const(1000.0)], curvature_every=1)
    stab = Callback("stability_limit", lambda s: s.q[:, 0])
    with pytest.raises(ValueError, match=r"records \['stability_limit'\]"):
        _monitor([stab], curvature_every=1)
    xi = Callback("xi:group0", lambda s: s.q[:, 0])
    with pytest.raises(ValueError, match=r"records \['xi:group0'\].*xi:group\.\.\. "
                                         r"\(TrainingMonitor's thermostats\)"):
        _monitor([xi])
    # without curvature_every the monitor writes no lambda_max: the observable's name is free
    mon = _monitor([_const(1000.0)])
    np.testing.assert_array_equal(mon.trajectory().extras["lambda_max"], [[1000.0]])


# --- gibbs_mean_potential: coordinates share a quadrature only with the same marginal --------


def _separable(value):
    pot = P.Custom(2, value=value)
    pot.separable = True
    return pot


def test_gibbs_mean_potential_tells_apart_marginals_that_differ_beyond_3():
    """u₀ = q²/2, u₁ = q²/2 + 5(|q| − 3)₊²: equal on [−3, 3], so the old probe merged them
    and gave ⟨U⟩ = 2·τ/2 = 10.0 at τ = 10; u₁'s own quadrature gives 3.081."""
    pot = _separable(lambda q: 0.5 * q[..., 0] ** 2 + 0.5 * q[..., 1] ** 2
                     + 5.0 * np.maximum(np.abs(q[..., 1]) - 3.0, 0.0) ** 2)
    for tau in (1.0, 10.0):
        u1 = dg.gibbs_moment(pot, tau, lambda x: 0.5 * x**2 + 5.0 * max(abs(x) - 3.0, 0.0) ** 2,
                             coord=1)
        assert dg.gibbs_mean_potential(pot, tau) == pytest.approx(tau / 2 + u1, rel=1e-9)
    assert dg.gibbs_mean_potential(pot, 10.0) == pytest.approx(8.0810, abs=1e-4)


def test_gibbs_mean_potential_tells_apart_marginals_equal_on_the_old_probe_grid():
    """u₁ = q²/2 + sin²(10πq) equals q²/2 at every point of the old 0.1-spaced probe."""
    pot = _separable(lambda q: 0.5 * q[..., 0] ** 2 + 0.5 * q[..., 1] ** 2
                     + np.sin(10 * np.pi * q[..., 1]) ** 2)
    tau = 0.05
    u1 = dg.gibbs_moment(pot, tau, lambda x: 0.5 * x**2 + np.sin(10 * np.pi * x) ** 2, coord=1)
    assert dg.gibbs_mean_potential(pot, tau) == pytest.approx(tau / 2 + u1, rel=1e-9)
    assert u1 > 0.05  # far from the merged answer τ/2 = 0.025
