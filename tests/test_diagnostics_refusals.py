"""Refusals of the diagnostics and observables that a line-coverage run found no test reaching.
Each row: a bad input, the error type and the message, which names the argument and what it got.
The one-line bug each row catches is its check going missing: the input then fails later with
an unrelated numpy/torch error, or yields a number (a histogram of a 3-D array, a drift slope
against the wrong times, an order fitted through one step size)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dynopt
from dynopt import diagnostics as dg
from dynopt import potentials as P
from dynopt import systems
from dynopt.observables.callback import Callback
from dynopt.observables.names import resolve


def _traj():
    system = systems.Langevin(P.DoubleWell(), gamma=1.0, temperature=0.25)
    return dynopt.integrate(system, "BAOAB", [0.5], h=0.05, n_steps=40, n_chains=2, seed=0,
                            record_every=2)


CASES = {
    "scalar draws": (lambda: dg.effective_sample_size(3.0), ValueError,
                     r"x must have a draw axis, got a scalar 3.0"),
    "burn_in too long": (lambda: dg.gibbs_distance(np.zeros((1, 10, 1)), P.DoubleWell(), 0.25,
                                                   burn_in=9),
                         ValueError, r"burn_in=9 leaves fewer than 2 of the 10 draws"),
    "crossings of a 3-D array": (lambda: dg.barrier_crossings(np.zeros((2, 3, 4))), ValueError,
                                 r"x must be \(chain, draw\), got shape \(2, 3, 4\)"),
    "crossings with one level": (lambda: dg.barrier_crossings(np.zeros((2, 3)), levels=(1,)),
                                 TypeError, r"levels must be a pair of numbers, got \(1,\)"),
    "energy_drift: t with a Trajectory": (lambda: dg.energy_drift(_traj(), t=np.arange(21.0)),
                                          ValueError, r"t must not be given with a Trajectory"),
    "energy_drift of a 3-D array": (lambda: dg.energy_drift(np.zeros((2, 5, 3))), ValueError,
                                    r"energy must be \(chain, draw\), got shape \(2, 5, 3\)"),
    "order: lengths differ": (lambda: dg.empirical_order([0.1], [1.0, 2.0]), ValueError,
                              r"hs has 1 entries but errors has 2"),
    "order: one step size": (lambda: dg.empirical_order([0.1, 0.1], [1.0, 2.0]), ValueError,
                             r"hs must hold at least 2 distinct step sizes, got \[0.1, 0.1\]"),
    "reference_flow: q0 width": (lambda: dg.reference_flow(
        systems.Hamiltonian(P.Harmonic(1.0)), [[1.0, 2.0]], t=1.0), ValueError,
        r"q0 must have shape \(chains, 1\), got \(1, 2\)"),
    "reference_flow: t not increasing": (lambda: dg.reference_flow(
        systems.Hamiltonian(P.Harmonic(1.0)), [1.0], t=[0.0, 0.0]), ValueError,
        r"t must be increasing with at least 2 entries, got \[0.0, 0.0\]"),
    "reference_flow: no potential": (lambda: dg.reference_flow(
        systems.Hamiltonian(None), [1.0], t=1.0), ValueError, r"Hamiltonian needs a potential"),
    "critical_step: lam NaN": (lambda: dg.critical_step(
        systems.Hamiltonian(P.Harmonic(1.0)), "BAB", math.nan), ValueError,
        r"lam must be finite, got nan"),
    "gibbs: not a potential": (lambda: dg.gibbs_moment("dw", 0.25, lambda x: x), TypeError,
                               r"potential must be a dynopt.potentials potential, got 'dw'"),
    "gibbs: coords a string": (lambda: dg.gibbs_marginal(P.DoubleWell(2), 0.25, coords="ab"),
                               TypeError, r"coords must be an int or a tuple of ints, got 'ab'"),
    "gibbs: coords repeated": (lambda: dg.gibbs_marginal(P.DoubleWell(2), 0.25, coords=(0, 0)),
                               ValueError, r"coords must be 1 to 2 distinct coordinates"),
    "gibbs: bounds reversed": (lambda: dg.gibbs_moment(P.DoubleWell(), 0.25, lambda x: x,
                                                       bounds=(1.0, -1.0)),
                               ValueError, r"bounds must be \(lo, hi\) with lo < hi"),
    "gibbs: f not callable": (lambda: dg.gibbs_moment(P.DoubleWell(), 0.25, 3.0), TypeError,
                              r"f must be callable, got 3.0"),
    "gibbs: one grid for two coords": (lambda: dg.gibbs_marginal(
        P.DoubleWell(2), 0.25, coords=(0, 1), grid=(np.linspace(0, 1, 3),)), ValueError,
        r"grid must have one array per coordinate \(2\), got 1"),
    "bin_probabilities: one edge array for two coords": (lambda: dg.bin_probabilities(
        P.DoubleWell(2), 0.25, (0, 1), (np.linspace(0, 1, 3),)), ValueError,
        r"edges must have one array per coordinate \(2\), got 1"),
    "kinetic_temperature of a 2-D p": (lambda: dg.kinetic_temperature(np.zeros((3, 4))),
                                       ValueError, r"p must be \(chain, draw, dim\)"),
    "Callback without a name": (lambda: Callback("", lambda s: s.q[:, 0]), TypeError,
                                r"name must be a non-empty string, got ''"),
    "Callback of a number": (lambda: Callback("x", 3), TypeError, r"fn must be callable, got 3"),
    "observables as a dict": (lambda: resolve({"loss": 1}), TypeError,
                              r"observables must be a list of observables, names or callables"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_by_name(case):
    fn, error, message = CASES[case]
    with pytest.raises(error, match=message):
        fn()
