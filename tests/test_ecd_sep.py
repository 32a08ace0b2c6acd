"""ECDSep as a system: its invariant after projection, the exact speed limit, rotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt.program import ECD_EXTRAS
from dynopt.systems import ECDSep

ACKLEY = P.Ackley(2, b=0.02)
BACKENDS = ["numba", "torch"]


def _sys(**kw):
    base = {"F0": 1e-3, "eta": 1.01, "nu": 0.5, "s": 1.0, "delta_energy": 10.0}
    base.update(kw)
    return ECDSep(ACKLEY, **base)


def _invariant(sys, traj, k=-1):
    fd = traj.extras["potential"][:, k] - sys.F0
    return fd**sys.eta * (sys.s + (traj.p[:, k] ** 2).sum(-1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_projection_and_rotation_keep_the_invariant(backend):
    sys = _sys(F0=-1.0)  # below min F, so no chain freezes
    q0 = np.random.default_rng(0).uniform(-4, 4, (6, 2))
    tr = dynopt.integrate(sys, None, q0, h=0.3, n_steps=200, seed=1, backend=backend)
    E = tr.extras["E"][:, -1]
    assert np.abs(_invariant(sys, tr) / E - 1).max() > 1e-6  # the map itself drifts ...
    shell = dynopt.integrate(sys, "S", None, h=0.3, n_steps=1, state=tr.final_state)
    np.testing.assert_allclose(_invariant(sys, shell), E, rtol=1e-12)  # ... projection fixes it
    rot = dynopt.integrate(sys, "SR", None, h=0.3, n_steps=1, state=tr.final_state)
    np.testing.assert_allclose(_invariant(sys, rot), E, rtol=1e-12)  # rotation keeps |p|
    cos = (rot.p[:, -1] * shell.p[:, -1]).sum(-1) / (rot.p[:, -1] ** 2).sum(-1)
    assert (cos < 1 - 1e-6).all()  # ... and turns it


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("s", [1.0, 4.0])
def test_speed_limit_is_exact(backend, s):
    h = 0.7
    sys = _sys(s=s)
    tr = dynopt.integrate(sys, None, np.random.default_rng(2).uniform(-4, 4, (8, 2)), h=h,
                          n_steps=500, seed=3, backend=backend)
    dq = np.linalg.norm(np.diff(tr.q, axis=1), axis=-1)
    assert dq.max() <= h / np.sqrt(s) * (1 + 1e-14)  # 2|p|/(s + |p|²) ≤ 1/√s (AM–GM)
    assert dq.max() > 0.9 * h / np.sqrt(s)  # and it is reached


def test_numba_and_torch_agree_without_noise():
    sys = _sys(nu=0.0)
    q0 = np.random.default_rng(5).uniform(-4, 4, (4, 2))
    a = dynopt.integrate(sys, None, q0, h=0.3, n_steps=50, seed=0, backend="numba")
    b = dynopt.integrate(sys, None, q0, h=0.3, n_steps=50, seed=0, backend="torch")
    np.testing.assert_allclose(a.q, b.q, atol=1e-11)  # (chaotic: rounding grows later)
    np.testing.assert_allclose(a.extras["E"], b.extras["E"], rtol=1e-14)


def test_first_step_momentum_and_energy():
    sys = _sys(delta_energy=3.0, nu=0.0)
    tr = dynopt.integrate(sys, "S", [-4.0, 3.0], h=0.1, n_steps=1, seed=0)
    g = ACKLEY.grad(np.array([-4.0, 3.0]))
    np.testing.assert_allclose(tr.p[0, 1], -g * np.sqrt(3.0 / (g @ g)), rtol=1e-14)
    V0 = (ACKLEY.value(np.array([-4.0, 3.0])) - 1e-3) ** 1.01
    assert tr.extras["E"][0, 1] == pytest.approx(V0 * (1.0 + 3.0), rel=1e-14)
    # s ≠ 1: δE is replaced by 1 (the authors' rule)
    assert _sys(s=2.0, delta_energy=7.0).effective_delta_energy == 1.0


def test_continuous_flow_conserves_H():
    sys = _sys()
    rng = np.random.default_rng(4)
    q = torch.as_tensor(rng.uniform(-3, 3, (10, 2))).requires_grad_(True)
    p = torch.as_tensor(rng.normal(size=(10, 2))).requires_grad_(True)
    gq, gp = torch.autograd.grad(sys.energy(q, p).sum(), (q, p))
    dq, dp, _ = sys.vector_field(q.detach(), p.detach(),
                                 torch.zeros(10, len(ECD_EXTRAS), dtype=torch.float64))
    np.testing.assert_allclose(dq.numpy(), gp.numpy(), rtol=1e-12)
    np.testing.assert_allclose(dp.numpy(), -gq.numpy(), rtol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"eta": 0.5}, "eta must be >= 1"), ({"s": -1.0}, "s must be >= 0"),
     ({"nu": -0.1}, "nu must be >= 0"), ({"delta_energy": -1.0}, "delta_energy must be >= 0")],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ECDSep(ACKLEY, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [
    lambda: _sys(),
    lambda: dynopt.systems.BornInfeld(ACKLEY, delta_energy=0.5, t0=5, t1=None),
])
def test_trajectory_energy_is_the_systems_energy(backend, make):
    # traj.energy was U + |p|²/2 for these non-separable Hamiltonians
    sys = make()
    traj = dynopt.integrate(sys, None, [1.0, -0.5], h=0.05, n_steps=40, n_chains=3, seed=1,
                            backend=backend, record_every=4)
    exact = np.asarray(sys.energy(traj.q, traj.p))
    np.testing.assert_allclose(traj.energy, exact, rtol=1e-12)
    assert not np.allclose(traj.energy, traj.extras["potential"] + traj.extras["kinetic"])
    np.testing.assert_array_equal(traj.conserved, traj.energy)
