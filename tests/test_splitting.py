"""Splitting strings, lowering to ops, and the optimizer (FSAL) rotation."""

from __future__ import annotations

import math

import pytest

from dynopt import integrators as I
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.program import OpCode

LANGEVIN = S.Langevin(P.Harmonic(), gamma=0.1, temperature=1e-4)


def test_default_fractions_and_symmetry():
    s = I.Splitting("BAOAB")
    assert s.letters() == [("B", 0.5), ("A", 0.5), ("O", 1.0), ("A", 0.5), ("B", 0.5)]
    assert s.weak_order == 2 and not s.is_symplectic
    assert I.Leapfrog().letters() == [("B", 0.5), ("A", 1.0), ("B", 0.5)]
    assert I.Leapfrog().is_symplectic
    assert I.Splitting("AB").weak_order == 1
    assert I.Splitting("B A O A B").scheme == "BAOAB"


def test_explicit_fractions_must_be_consistent():
    s = I.Splitting("BAB", fractions=[0.3, 1.0, 0.7])
    assert s.letters()[0] == ("B", 0.3)
    with pytest.raises(ValueError, match="fractions of letter 'B' in scheme 'BAB' sum to 0.8"):
        I.Splitting("BAB", fractions=[0.3, 1.0, 0.5])
    with pytest.raises(ValueError, match="fractions has 2 entries but scheme 'BAB' has 3"):
        I.Splitting("BAB", fractions=[0.5, 0.5])


def test_unknown_and_unoffered_letters_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown letter\(s\) \['X'\]"):
        I.Splitting("BXB")
    with pytest.raises(ValueError, match="empty"):
        I.Splitting("")
    with pytest.raises(ValueError, match=r"uses letter\(s\) \['O'\] that Hamiltonian does not offer"):
        I.BAOAB().program(S.Hamiltonian(P.Harmonic()), 0.1)
    with pytest.raises(ValueError, match="EulerMaruyama integrates OverdampedLangevin only"):
        I.EulerMaruyama().program(LANGEVIN, 0.1)


def test_lowered_constants_match_the_reference_driver():
    """h = 0.25, γ = 0.1: c = e^{−γh} ≈ 0.975310, d = √(1 − c²)·√τ ≈ 0.22084·√τ (reference §2.2)."""
    prog = I.BAOAB().program(LANGEVIN, 0.25)
    codes = [op.code for op in prog.ops]
    assert codes == [OpCode.KICK, OpCode.DRIFT, OpCode.OU, OpCode.DRIFT, OpCode.KICK]
    c, d = prog.ops[2].f
    assert c == pytest.approx(math.exp(-0.025), rel=1e-15)
    assert c == pytest.approx(0.975310, abs=1e-6)
    assert d / math.sqrt(1e-4) == pytest.approx(0.22084, abs=1e-5)
    assert prog.ops[0].f == (0.125,) and prog.ops[1].f == (0.125,)
    assert prog.n_noise_ops == 1


@pytest.mark.parametrize(
    ("integrator", "system", "first", "steady"),
    [
        (I.BAOAB(), LANGEVIN, [("B", 0.5), ("A", 0.5), ("O", 1.0), ("A", 0.5)],
         [("B", 1.0), ("A", 0.5), ("O", 1.0), ("A", 0.5)]),
        (I.OBABO(), LANGEVIN, [("O", 0.5), ("B", 0.5), ("A", 1.0)],
         [("B", 0.5), ("O", 0.5), ("O", 0.5), ("B", 0.5), ("A", 1.0)]),
        (I.ABOBA(), LANGEVIN, [("A", 0.5)],
         [("B", 0.5), ("O", 1.0), ("B", 0.5), ("A", 1.0)]),
        (I.Leapfrog(), S.Hamiltonian(P.Harmonic()), [("B", 0.5), ("A", 1.0)],
         [("B", 1.0), ("A", 1.0)]),
        (I.EulerMaruyama(), S.OverdampedLangevin(P.Harmonic()), [("G", 1.0), ("W", 1.0)],
         [("G", 1.0), ("W", 1.0)]),
        (I.Splitting("TBABT"), S.NoseHooverChain(P.Harmonic()), [("T", 0.5), ("B", 0.5), ("A", 1.0)],
         [("B", 0.5), ("T", 0.5), ("T", 0.5), ("B", 0.5), ("A", 1.0)]),
    ],
)
def test_optimizer_form(integrator, system, first, steady):
    f, s = integrator.optimizer_form(system)
    assert f == first
    assert s == steady
    # one steady call is exactly one period: every letter's fractions sum to 1
    for letter in {letter for letter, _ in s}:
        assert sum(fr for l2, fr in s if l2 == letter) == pytest.approx(1.0)


def test_optimizer_form_rejects_two_gradient_points():
    with pytest.raises(ValueError, match="needs gradients at more than one point"):
        I.Splitting("BABAB").optimizer_form(S.Hamiltonian(P.Harmonic()))


def test_resolve_names():
    assert isinstance(I.resolve("baoab"), I.BAOAB)
    assert isinstance(I.resolve("leapfrog"), I.Leapfrog)
    assert isinstance(I.resolve("LM"), I.LeimkuhlerMatthews)
    assert isinstance(I.resolve("euler-maruyama"), I.EulerMaruyama)
    custom = I.resolve("OBAB O")
    assert isinstance(custom, I.Splitting) and custom.scheme == "OBABO"
    with pytest.raises(TypeError, match="integrator must be"):
        I.resolve(3)


@pytest.mark.parametrize("scheme, fractions, letter", [
    ("OBABO", [1.5, 0.5, 1.0, 0.5, -0.5], "O"),   # anti-friction without noise: Var q 1.41
    ("GWW", [1.0, 1.5, -0.5], "W"),               # a negative variance: math domain error
    ("GLL", [1.0, 1.5, -0.5], "L"),
    ("BAFAB", [0.5, 0.5, -1.0 + 2.0, 0.5, 0.5], None),  # legal: F's only fraction is 1
])
def test_noise_and_friction_letters_refuse_negative_fractions(scheme, fractions, letter):
    if letter is None:
        assert I.Splitting(scheme, fractions).fractions == tuple(fractions)
        return
    with pytest.raises(ValueError, match=f"letter '{letter}': its sub-flow .* cannot run "
                                         "backwards in time"):
        I.Splitting(scheme, fractions)


def test_forest_ruth_keeps_its_negative_drift_and_kick():
    theta = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
    fr = [theta / 2, theta, (1 - theta) / 2, 1 - 2 * theta, (1 - theta) / 2, theta, theta / 2]
    integ = I.Splitting("ABABABA", fr)
    assert min(integ.fractions) < 0
