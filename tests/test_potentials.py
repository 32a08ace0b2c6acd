"""Built-in potentials: numba kernel code == array form == autograd, on numpy and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynopt import potentials as P
from dynopt.backends.numba.kernel import potential_grads, potential_values
from dynopt.backends.numba.runner import pack_potential

BUILTINS = [
    P.Harmonic(omega=[0.5, 1.3, 2.0], dim=3),
    P.DoubleWell(dim=2),
    P.Ackley(dim=2),
    P.Ackley(dim=3, b=0.02),
    P.Rastrigin(dim=2),
    P.Rosenbrock(dim=3),
]


@pytest.fixture(params=BUILTINS, ids=repr)
def pot(request):
    return request.param


def _points(dim, n=50, seed=0):
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=(n, dim))


def test_numba_matches_array_form(pot):
    q = _points(pot.dim)
    kind, par, vfn, gfn = pack_potential(pot)
    np.testing.assert_allclose(potential_values(q, kind, par, vfn), pot.value(q), rtol=1e-13,
                               atol=1e-13)
    np.testing.assert_allclose(potential_grads(q, kind, par, gfn), pot.grad(q), rtol=1e-12,
                               atol=1e-12)


def test_grad_matches_autograd_and_torch_agrees_with_numpy(pot):
    q = _points(pot.dim, seed=1)
    qt = torch.as_tensor(q)
    np.testing.assert_allclose(pot.value(qt).numpy(), pot.value(q), rtol=1e-14, atol=1e-14)
    auto = pot.grad_autograd(qt.clone()).detach().numpy()
    np.testing.assert_allclose(pot.grad(q), auto, rtol=1e-12, atol=1e-12)


def test_laplacian_matches_autograd_hessian_trace(pot):
    q = _points(pot.dim, n=10, seed=2)
    exact = P.base.AbstractPotential.laplacian(pot, q)  # autograd trace of the Hessian
    np.testing.assert_allclose(pot.laplacian(q), exact, rtol=1e-10, atol=1e-10)


def test_known_values():
    assert P.Ackley(dim=2).value(np.zeros(2)) == pytest.approx(0.0, abs=1e-14)
    assert P.Rastrigin(dim=2).value(np.zeros(2)) == 0.0
    assert P.Rosenbrock(dim=4).value(np.ones(4)) == 0.0
    assert P.DoubleWell(dim=3).value(np.array([1.0, -1.0, 1.0])) == 0.0
    assert P.Harmonic(omega=2.0, dim=1).value(np.array([1.5])) == pytest.approx(0.5 * 4 * 2.25)
    np.testing.assert_array_equal(P.Ackley(dim=2).grad(np.zeros((1, 2))), np.zeros((1, 2)))


def test_custom_potential_on_both_backends():
    def value(q):
        return (q**4).sum(-1) - q[..., 0] * q[..., 1]

    def nvalue(q):
        return q[0] ** 4 + q[1] ** 4 - q[0] * q[1]

    def ngrad(q, out):
        out[0] = 4 * q[0] ** 3 - q[1]
        out[1] = 4 * q[1] ** 3 - q[0]

    pot = P.Custom(2, value=value, numba_value=nvalue, numba_grad=ngrad)
    q = _points(2, seed=3)
    kind, par, vfn, gfn = pack_potential(pot)
    assert kind == 0
    np.testing.assert_allclose(potential_values(q, kind, par, vfn), pot.value(q), rtol=1e-13)
    np.testing.assert_allclose(potential_grads(q, kind, par, gfn), pot.grad(q), rtol=1e-12)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: P.Harmonic(omega=-1.0), "omega must be > 0"),
        (lambda: P.Harmonic(omega=[1.0, 2.0], dim=3), "omega has 2 entries but dim=3"),
        (lambda: P.DoubleWell(dim=0), "dim must be >= 1"),
        (lambda: P.Ackley(b=0.0), "b must be > 0"),
        (lambda: P.Rastrigin(A=math.nan), "A must be finite"),
        (lambda: P.Rosenbrock(dim=1), "Rosenbrock needs dim >= 2"),
        (lambda: P.Custom(2), "at least one of value= or numba_value="),
        (lambda: P.Custom(2, numba_value=lambda q: 0.0), "must be given together"),
    ],
)
def test_bad_parameters(factory, message):
    with pytest.raises((ValueError, TypeError), match=message):
        factory()


def test_custom_without_numba_functions_is_a_clear_error_on_numba():
    import dynopt

    pot = P.Custom(1, value=lambda q: (q**2).sum(-1))
    with pytest.raises(ValueError, match=r"backend='numba' cannot integrate Custom.*'torch'"):
        dynopt.integrate(dynopt.systems.Hamiltonian(pot), "BAB", [1.0], h=0.1, n_steps=1,
                         backend="numba")


def test_placeholder_functions_are_passed_by_address():
    """A built-in potential's value/grad functions and a program's unused extended-op slot are
    placeholders the kernel never calls: they go in as :class:`Unused` addresses, which numba
    resolves without the two compile-result lookups a dispatcher argument costs on every kernel
    call (the per-step calls of an ``integrate()`` with events)."""
    from numba.experimental.function_type import _get_wrapper_address

    from dynopt.backends.numba.kernel import EXTENDED_SIG, no_extended_ops
    from dynopt.backends.numba.potentials import VALUE_SIG, Unused, dummy_value
    from dynopt.backends.numba.runner import _extended_ops
    from dynopt.program import OpCode

    kind, _, vfn, gfn = pack_potential(P.DoubleWell(dim=2))
    assert kind > 0 and isinstance(vfn, Unused) and isinstance(gfn, Unused)
    assert vfn.__wrapper_address__() == _get_wrapper_address(dummy_value, VALUE_SIG)
    assert vfn.signature() == VALUE_SIG
    stub = _extended_ops(np.array([int(OpCode.KICK), int(OpCode.DRIFT)]))
    assert isinstance(stub, Unused)
    assert stub.__wrapper_address__() == _get_wrapper_address(no_extended_ops, EXTENDED_SIG)
    assert not isinstance(_extended_ops(np.array([int(OpCode.THERMOSTAT)])), Unused)
