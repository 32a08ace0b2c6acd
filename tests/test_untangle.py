"""Facts kept in one place: scheme names registered where each scheme is defined, honest weak
orders, backends owning their state conversions, and the moved modules' old import paths."""

from __future__ import annotations

import numpy as np
import pytest

import dynopt.integrators as I
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.diagnostics import global_error


def test_weak_order_is_one_for_palindromes_with_a_non_symmetric_letter():
    assert I.Splitting("BAOAB").weak_order == 2
    assert I.Splitting("FBABF").weak_order == 1  # explicit-Euler friction: not self-adjoint
    assert I.Splitting("BAB").weak_order == 2 and I.Splitting("GWG").weak_order == 1


def test_fbabf_is_measured_first_order():
    """The claim checked against the flow: FBABF's global error on a damped oscillator halves
    with h (order 1), BAB-with-exact-friction style palindromes would quarter it."""
    system = S.PortHamiltonian(P.Harmonic(omega=[1.0], dim=1), gamma=0.8)
    errs = global_error(system, "FBABF", [[1.0]], [[0.5]], T=2.0, hs=[0.04, 0.02])
    ratio = float(np.max(errs[0]) / np.max(errs[1]))
    assert 1.7 < ratio < 2.3, ratio


def test_named_schemes_register_their_own_names():
    for name, cls in [("BAOAB", I.BAOAB), ("velocity_verlet", I.Leapfrog), ("Verlet", I.Leapfrog),
                      ("sgld", I.EulerMaruyama), ("LM", I.LeimkuhlerMatthews)]:
        assert type(I.resolve(name)) is cls
    assert type(I.resolve("BAOBA")) is I.Splitting  # not a name: a letter string
    with pytest.raises(ValueError, match="'lm' is already taken by LeimkuhlerMatthews"):
        I.named("lm")(I.BAOAB)


def test_identical_results_through_every_name():
    system = S.Langevin(P.Harmonic(omega=[1.3], dim=1), gamma=1.0, temperature=0.0)
    a = I.resolve("verlet").program(system, 0.1)
    b = I.Splitting("BAB").program(system, 0.1)
    assert a == b


def test_moved_modules_keep_their_old_import_paths():
    import dynopt.ddp.layers
    import dynopt.ddp.trajectory
    import dynopt.optim
    import dynopt.optim.registry
    import dynopt.systems
    import dynopt.systems.ddp_layers
    import dynopt.systems.ddp_trajectory

    assert dynopt.systems.ddp_layers is dynopt.ddp.layers  # the same module object
    assert dynopt.systems.ddp_trajectory is dynopt.ddp.trajectory
    assert dynopt.systems.DDPTrajectory is dynopt.ddp.trajectory.DDPTrajectory
    assert dynopt.optim.REGISTRY is dynopt.optim.registry.REGISTRY
    assert dynopt.optim.make is dynopt.optim.registry.make
    assert {"langevin", "heavyball", "bbi", "ddpnopt"} <= set(dynopt.optim.REGISTRY)


@pytest.mark.parametrize("name", ["numba", "torch"])
def test_backends_own_copy_record_and_bounce(name):
    """What callers used to branch on the backend's name for, each backend now does itself."""
    from dynopt.backends import get_backend
    from dynopt.stepping import State

    be = get_backend(name)
    system = S.Langevin(P.Harmonic(omega=[1.0, 2.0], dim=2), gamma=1.0, temperature=0.5)
    integ = I.BAOAB()
    state = integ.init(system, [[0.3, -0.2], [1.0, 0.5], [0.1, 0.1]], backend=name, seed=4)
    assert isinstance(state, State)
    twin = state.copy()
    a = integ.step(system, state, h=0.1)
    b = integ.step(system, twin, h=0.1)  # the copy carries the RNG state: same draws
    na, nb = be.state_to_numpy(a), be.state_to_numpy(b)
    for k in ("q", "p", "x"):
        np.testing.assert_array_equal(na[k], nb[k])
    twin.q[0, 0] = 99.0
    assert be.state_to_numpy(state)["q"][0, 0] != 99.0  # independent arrays
    rec = be.allocate_records(a, 2, 1)
    be.write_record(rec, 1, a, system)
    out = be.records_to_numpy(rec)
    np.testing.assert_array_equal(out["q"][:, 1], na["q"])
    np.testing.assert_allclose(out["u"][:, 1], 0.5 * (na["q"] ** 2 * [1.0, 4.0]).sum(-1),
                               rtol=1e-14)
    assert np.isnan(out["u"][:, 0]).all()
    before = be.state_to_numpy(a)["p"].copy()
    fired = np.array([True, False, True])
    mass = np.array([1.0, 4.0])
    be.bounce_momenta(a, fired, mass)
    after = be.state_to_numpy(a)["p"]
    np.testing.assert_allclose((after**2 / mass).sum(1), (before**2 / mass).sum(1), rtol=1e-13)
    np.testing.assert_array_equal(after[1], before[1])
    assert not np.allclose(after[0], before[0])
    assert be.itemsize(a) == 8
    assert be.supports_chain_ids == be.supports_observables == (name == "torch")
