"""Whole-step letters: BornInfeld's and ECDSep's shell ``S`` and ECDSep's rotation ``R`` are
once-per-step maps whose ops ignore the fraction of h, so a scheme may use each at most once,
with fraction 1 (``AbstractIntegrator.check``, shared by integrate(), stepping, the optimizers'
``optimizer_form`` and the diagnostics). Before, ``"SBARR"`` rotated twice with the full ν and
``"SBABS"`` projected (and advanced the bounce clocks) twice per step, silently."""

from __future__ import annotations

import re

import numpy as np
import pytest

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.integrators import Splitting
from dynopt.integrators.base import AbstractIntegrator, LetterSequence

BACKENDS = ["numba", "torch"]


def _bbi() -> S.BornInfeld:
    return S.BornInfeld(P.Harmonic(dim=3), delta_energy=0.5, t0=3, t1=None)


def _ecd() -> S.ECDSep:
    return S.ECDSep(P.Harmonic(dim=3), nu=0.1, delta_energy=0.5)


class _HalfShell(AbstractIntegrator):
    """A scheme that gives S half a step once (Splitting itself refuses fractions of a letter
    that do not sum to 1, so only a hand-written integrator reaches this)."""

    name = "half-shell"

    def letters(self) -> LetterSequence:
        return [("S", 0.5), ("B", 1.0), ("A", 1.0)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("make", "scheme", "letter", "fracs"), [
    (_ecd, "SBARR", "R", "[0.5, 0.5]"),
    (_ecd, "SBABS", "S", "[0.5, 0.5]"),
    (_ecd, "RSBAR", "R", "[0.5, 0.5]"),
    (_bbi, "SBABS", "S", "[0.5, 0.5]"),
    (_bbi, "SSBA", "S", "[0.5, 0.5]"),
], ids=["ecd-RR", "ecd-SS", "ecd-R-R", "bbi-SS", "bbi-SS-adjacent"])
def test_integrate_refuses_a_whole_step_letter_used_twice(backend, make, scheme, letter, fracs):
    system = make()
    msg = (f"integrator '{scheme}' (letters '{scheme}') gives letter '{letter}' of "
           f"{type(system).__name__} the fractions {fracs} of h")
    with pytest.raises(ValueError, match=re.escape(msg)) as err:
        dynopt.integrate(system, scheme, np.ones(3), h=0.05, n_steps=3, seed=0, backend=backend)
    assert "whole-step map" in str(err.value) and "once per step with fraction 1" in str(err.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stepping_refuses_a_whole_step_letter_used_twice(backend):
    """The single-step API checks with the same rule (init and run)."""
    system = _ecd()
    with pytest.raises(ValueError, match=r"letter 'R' of ECDSep the fractions \[0\.5, 0\.5\]"):
        dynopt.stepping.init(system, Splitting("SBARR"), np.ones(3), backend=backend, seed=0)
    state = dynopt.stepping.init(system, Splitting("SBAR"), np.ones(3), backend=backend, seed=0)
    with pytest.raises(ValueError, match=r"letter 'R' of ECDSep the fractions \[0\.5, 0\.5\]"):
        dynopt.stepping.step(system, Splitting("SBARR"), state, h=0.05)


def test_a_whole_step_letter_with_a_fraction_other_than_one_is_refused():
    with pytest.raises(ValueError, match=re.escape(
            "integrator 'half-shell' (letters 'SBA') gives letter 'S' of BornInfeld the "
            "fractions [0.5] of h")):
        _HalfShell().check(_bbi())


@pytest.mark.parametrize(("make", "scheme"), [
    (_bbi, "SBA"), (_bbi, "BASAB"), (_ecd, "SBAR"), (_ecd, "RSBA"), (_ecd, "BASRAB"),
])
def test_schemes_with_each_whole_step_letter_once_still_run(make, scheme):
    """Once per step is allowed anywhere in the scheme, and other letters may still split."""
    traj = dynopt.integrate(make(), scheme, np.ones(3), h=0.05, n_steps=3, seed=0,
                            backend="numba")
    assert np.all(np.isfinite(traj.q))


def test_other_systems_are_unaffected():
    """Systems without whole-step letters split every letter as before (S/R are no letters of
    theirs; a repeated O is legal on Langevin)."""
    assert S.Langevin(P.Harmonic(dim=1)).whole_step_letters == frozenset()
    Splitting("OBABO").check(S.Langevin(P.Harmonic(dim=1)))
    assert S.BornInfeld.whole_step_letters == frozenset("S")
    assert S.ECDSep.whole_step_letters == frozenset("SR")
