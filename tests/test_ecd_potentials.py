"""Zakharov and the BBI two-basin potential: numba == array form == autograd, known values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynopt import potentials as P
from dynopt.backends.numba.kernel import potential_grads, potential_values
from dynopt.backends.numba.runner import pack_potential

POTS = [P.Zakharov(dim=10), P.Zakharov(dim=3), P.MultiBasin(), P.MultiBasin(dim=3)]


@pytest.mark.parametrize("pot", POTS, ids=repr)
def test_numba_array_autograd_agree(pot):
    q = np.random.default_rng(0).uniform(-3.0, 3.0, size=(40, pot.dim))
    kind, par, vfn, gfn = pack_potential(pot)
    np.testing.assert_allclose(potential_values(q, kind, par, vfn), pot.value(q), rtol=1e-13)
    np.testing.assert_allclose(potential_grads(q, kind, par, gfn), pot.grad(q), rtol=1e-12,
                               atol=1e-12)
    qt = torch.as_tensor(q)
    np.testing.assert_allclose(pot.value(qt).numpy(), pot.value(q), rtol=1e-14)
    auto = pot.grad_autograd(qt.clone()).detach().numpy()
    np.testing.assert_allclose(pot.grad(q), auto, rtol=1e-11, atol=1e-11)
    exact = P.base.AbstractPotential.laplacian(pot, q[:5])
    np.testing.assert_allclose(pot.laplacian(q[:5]), exact, rtol=1e-10)


def test_known_values():
    # the BBI paper's start: 10 + 27.5² + 27.5⁴ = 572 680.3125 (quoted as 572 680)
    assert P.Zakharov(10).value(np.ones(10)) == 572680.3125
    assert P.Zakharov(4).value(np.zeros(4)) == 0.0
    mb = P.MultiBasin()
    # both minima are within 2e-8 of zero (−7.6e-12 and −1.1e-8), and the Hessians are
    # isotropic with the paper's eigenvalues 0.864 and 1.664: the Liouville ratio is 1.926
    for c, lam in zip((mb.c1, mb.c2), mb.basin_curvatures(), strict=True):
        assert abs(mb.value(c)) < 2e-8
        x = torch.tensor(c).requires_grad_(True)  # (c is read-only: a potential's constant)
        hess = torch.autograd.functional.hessian(lambda y: mb.value(y), x).numpy()
        np.testing.assert_allclose(np.linalg.eigvalsh(hess), [lam, lam], rtol=1e-4)
    assert mb.basin_curvatures() == pytest.approx((0.864, 1.664), rel=1e-5)
    assert mb.basin_curvatures()[1] / mb.basin_curvatures()[0] == pytest.approx(1.926, abs=1e-3)


def test_bad_parameters():
    with pytest.raises(ValueError, match="c1 has 3 entries but dim=2"):
        P.MultiBasin(c1=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="a1 must be > 0"):
        P.MultiBasin(a1=0.0)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        P.Zakharov(0)
