"""``Custom`` potentials' Laplacian and refusals (configurational temperature reads ΔU). A
line-coverage run showed that no test asked a ``Custom`` potential for its Laplacian, with or
without ``laplacian=``, or for its name or value without an array form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import diagnostics, systems
from dynopt.potentials import Custom


def _u(q):
    return (q**4).sum(-1) - q[..., 0] * q[..., 1]


def _lap(q):
    return 12.0 * (q**2).sum(-1)


def _points() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(5, 2))


def test_default_laplacian_is_the_trace_of_the_hessian_by_autograd():
    """ΔU = 12(q₀² + q₁²) for U = q₀⁴ + q₁⁴ − q₀q₁ (the cross term has no trace), on numpy
    and torch input. Catches: the default Laplacian missing, or summing the wrong diagonal."""
    pot = Custom(2, value=_u)
    q = _points()
    np.testing.assert_allclose(pot.laplacian(q), _lap(q), rtol=1e-13)
    t = torch.as_tensor(q, dtype=torch.float32)
    out = pot.laplacian(t)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), _lap(q), rtol=1e-6)


def test_a_given_laplacian_is_used_and_its_shape_checked():
    calls = []

    def lap(q):
        calls.append(q.shape)
        return _lap(q)

    q = _points()
    np.testing.assert_array_equal(Custom(2, value=_u, laplacian=lap).laplacian(q), _lap(q))
    assert calls == [(5, 2)]
    wrong = Custom(2, value=_u, laplacian=lambda q: _lap(q)[:, None], name="quartic")
    with pytest.raises(ValueError, match=r"laplacian= of potential 'quartic' \(dim=2\) returned "
                                         r"shape \(5, 1\), expected \(5,\)"):
        wrong.laplacian(q)


def test_configurational_temperature_of_a_custom_potential_is_tau():
    """The estimator ⟨|∇U|²⟩/⟨ΔU⟩ on a Langevin run of the Custom potential (torch backend,
    the Laplacian by autograd) agrees with τ within 4 standard errors, which are themselves
    small (< 0.01)."""
    tau = 0.3
    system = systems.Langevin(Custom(2, value=_u), gamma=1.0, temperature=tau)
    traj = dynopt.integrate(system, "BAOAB", [0.3, -0.2], h=0.05, n_steps=20_000, n_chains=8,
                            seed=0, record_every=10, backend="torch")
    est = diagnostics.configurational_temperature(traj, burn_in=100)
    assert est.se < 0.01
    assert abs(est.value - tau) < 4 * est.se  # BAOAB's O(h²) bias is far below the SE here


def test_a_numba_only_custom_potential_names_what_it_lacks():
    def nvalue(q):
        return q[0] ** 4

    def ngrad(q, out):
        out[0] = 4 * q[0] ** 3

    pot = Custom(1, numba_value=nvalue, numba_grad=ngrad, name="numba-only")
    assert pot.name == "numba-only"
    with pytest.raises(ValueError, match="potential 'numba-only' has no array-form value="):
        pot.value(np.zeros((3, 1)))
