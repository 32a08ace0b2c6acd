"""The numba kernel draws no normals when every noise op of the program has amplitude 0
(temperature 0), and only then."""

from __future__ import annotations

import numpy as np

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.program import Op, OpCode

Q0 = np.array([[0.9, -0.3], [-1.1, 0.2], [0.1, 0.5], [0.4, -0.8]])


class _QuietExtra(S.Langevin):
    """Langevin plus a letter D: an added-noise op of amplitude 0 (always quiet)."""

    letters = {**S.Langevin.letters, "D": "added noise of amplitude 0"}

    def _lower(self, letter: str, t: float) -> Op:
        if letter == "D":
            return Op(OpCode.ADD_NOISE, (0.0,), letter=letter)
        return super()._lower(letter, t)


def _run(system, scheme, seed, backend="numba"):  # type: ignore[no-untyped-def]
    p0 = 0.3 * Q0 if system.has_momentum else None
    return dynopt.integrate(system, scheme, Q0, h=0.05, n_steps=60, seed=seed, p0=p0,
                            record_every=20, backend=backend)


def test_temperature_zero_needs_no_normals_and_matches_torch():
    """τ = 0: the numba run is the same for every seed and equals the torch backend's (whose
    normals are drawn and multiplied by 0) to rounding."""
    system = S.Langevin(P.DoubleWell(dim=2), gamma=0.7, temperature=0.0)
    a, b = _run(system, "BAOAB", 1), _run(system, "BAOAB", 2)
    np.testing.assert_array_equal(a.q, b.q)
    np.testing.assert_array_equal(a.p, b.p)
    t = _run(system, "BAOAB", 1, backend="torch")
    np.testing.assert_allclose(a.q, t.q, rtol=0, atol=1e-12)
    assert np.abs(a.q - Q0[:, None, :]).max() > 0.01  # it moved


def test_one_nonzero_amplitude_keeps_the_noise_on():
    """A program with a zero-amplitude noise op beside a nonzero one is not quiet: the result
    depends on the seed, and at τ = 0 (both zero) it does not."""
    pot = P.DoubleWell(dim=2)
    hot = _QuietExtra(pot, gamma=0.7, temperature=0.5)
    a, b = _run(hot, "BAODAB", 1), _run(hot, "BAODAB", 2)
    assert np.abs(a.q - b.q).max() > 1e-3
    cold = _QuietExtra(pot, gamma=0.7, temperature=0.0)
    np.testing.assert_array_equal(_run(cold, "BAODAB", 1).q, _run(cold, "BAODAB", 2).q)


def test_lm_memory_is_drawn_at_temperature_zero():
    """The LM noise memory keeps real normals at τ = 0 (a resumed run at τ > 0 needs them), so
    an LM program is never quiet: q does not move by noise, the memory differs by seed."""
    system = S.OverdampedLangevin(P.DoubleWell(dim=2), temperature=0.0)
    a, b = _run(system, "lm", 1), _run(system, "lm", 2)
    np.testing.assert_array_equal(a.q, b.q)
    xa, xb = a.final_state.x, b.final_state.x
    assert xa.shape == Q0.shape
    assert 0.5 < np.sqrt(np.mean(xa**2)) < 2.0  # normals, not zeros
    assert np.abs(xa - xb).max() > 0.1


def test_skippable_amplitudes_come_from_the_op_table():
    """Both kernels read one table: every op that draws normals has its amplitude field there,
    except the op that keeps its normals (LM), which must always draw."""
    from dynopt.program import OPS, skippable_amplitudes

    fields = skippable_amplitudes()
    for code, info in OPS.items():
        if info.normals == 0 or info.keeps_normals:
            assert fields[int(code)] == -1, code
        else:
            assert fields[int(code)] == info.amplitude, code
    assert [c for c, o in OPS.items() if o.keeps_normals] == [OpCode.LM_NOISE]
