"""BornInfeld (BBI) as a system: energy shell, bounces, loss ceiling, speed limit, backends."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt.backends.torch.energy_ops import BBIConstants, bbi_control
from dynopt.program import BBI_EXTRAS
from dynopt.systems import BornInfeld

ACKLEY = P.Ackley(2, b=0.02)
QUAD = P.Harmonic(omega=np.linspace(0.5, 2.0, 6), dim=6)
BACKENDS = ["numba", "torch"]


def _bbi(pot=ACKLEY, **kw):
    base = {"v0": 1e-4, "delta_energy": 2.0, "t0": 20, "n_bounces": 4, "t1": 100}
    base.update(kw)
    return BornInfeld(pot, **base)


def _bounce_flags(traj):
    """bounced[c, k]: step k (0-based) was a bounce step."""
    return np.diff(traj.extras["bounces"], axis=1) > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_projection_puts_momentum_on_the_energy_shell(backend):
    sys = _bbi()
    tr = dynopt.integrate(sys, None, [-4.0, 3.0], h=0.00965, n_steps=300, seed=2,
                          n_chains=4, backend=backend)
    # one more step of the shell alone ("S": projection, no kick/drift) from the final state
    st = tr.final_state
    one = dynopt.integrate(sys, "S", None, h=0.00965, n_steps=1, state=st)
    V = one.extras["potential"][:, -1] - sys.v0
    pi2 = (one.p[:, -1] ** 2).sum(-1)
    E0 = one.extras["E0"][:, -1]
    H_before = tr.conserved[:, -1]  # H(θ_k, Π_k) before the projection
    assert np.abs(H_before / E0 - 1).max() > 1e-8  # the kick/drift map does not conserve H ...
    np.testing.assert_allclose(V * (V + pi2), E0**2, rtol=1e-12)  # ... the projection does


def test_bounce_keeps_norm_and_position_and_fixed_schedule():
    t0, nb = 7, 3
    sys = BornInfeld(QUAD, delta_energy=0.5, t0=t0, n_bounces=nb, t1=None)
    for backend in BACKENDS:
        tr = dynopt.integrate(sys, None, np.ones(6), h=0.05, n_steps=60, seed=1,
                              backend=backend)
        b = np.flatnonzero(_bounce_flags(tr)[0])
        # fixed bounces after T0, 2T0, ..., N_b·T0 non-bounce steps, never again (T1 off)
        np.testing.assert_array_equal(b, [k * (t0 + 1) - 1 for k in range(1, nb + 1)])
        for k in b:
            np.testing.assert_array_equal(tr.q[0, k + 1], tr.q[0, k])
            n_before = np.linalg.norm(tr.p[0, k])
            assert np.linalg.norm(tr.p[0, k + 1]) == pytest.approx(n_before, rel=1e-14)
            assert abs(np.dot(tr.p[0, k + 1], tr.p[0, k])) < 0.999 * n_before**2  # new direction


def _replay(V_seq, t0, nb, t1):
    """The authors' counter logic in plain Python: which steps bounce, given V at each step."""
    c0 = c = fixed = 0
    vmin = math.inf
    out = []
    for v in V_seq:
        if (c0 == t0 and fixed < nb) or c == t1:
            if c0 == t0:
                fixed += 1
                c0 = 0 if fixed < nb else c0 + 1
            c = 0
            out.append(True)
        else:
            c0 += 1
            c += 1
            if v < vmin:
                vmin, c = v, 0
            out.append(False)
    return np.array(out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_progress_and_fixed_bounces_follow_the_authors_counters(backend):
    sys = _bbi(t0=15, n_bounces=3, t1=25)
    tr = dynopt.integrate(sys, None, [[-4.0, 3.0], [2.5, -1.0]], h=0.00965, n_steps=800,
                          seed=5, backend=backend)
    flags = _bounce_flags(tr)
    V_at_step = tr.extras["V"][:, 1:]  # the V(θ_k) read by the shell of step k
    for c in range(2):
        expected = _replay(V_at_step[c], 15, 3, 25)
        np.testing.assert_array_equal(flags[c], expected)
        assert expected.sum() > 5  # progress bounces did happen


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_ceiling_and_speed_limit(backend):
    h = 0.02
    sys = _bbi(v0=0.0, delta_energy=1.0)
    tr = dynopt.integrate(sys, None, np.random.default_rng(0).uniform(-4, 4, (8, 2)), h=h,
                          n_steps=2000, seed=3, backend=backend)
    V = tr.extras["potential"] - sys.v0
    E0 = tr.extras["E0"][:, -1:]
    g = np.linalg.norm(ACKLEY.grad(tr.q), axis=-1)
    # H ≥ V and the map changes H by O(Δt²) per step before the next projection
    assert (V - E0).max() <= 0.5 * h**2 * (g**2).max()
    # speed: (V/E0)|Π − Δt·½(V/E0 + E0/V)∇V| ≤ √V + Δt|∇V| exactly (|Π| on the shell)
    dq = np.linalg.norm(np.diff(tr.q, axis=1), axis=-1)
    bound = h * (np.sqrt(V[:, :-1]) + h * g[:, :-1])
    assert (dq / bound).max() <= 1.0 + 1e-12
    assert (dq / (h * np.sqrt(V[:, :-1]))).max() > 1.0  # the Δt term is needed


def test_numba_and_torch_agree_without_bounces():
    sys = _bbi(t0=None, n_bounces=0, t1=None)
    q0 = np.random.default_rng(1).uniform(-4, 4, (5, 2))
    a = dynopt.integrate(sys, None, q0, h=0.00965, n_steps=400, seed=0, backend="numba")
    b = dynopt.integrate(sys, None, q0, h=0.00965, n_steps=400, seed=0, backend="torch")
    np.testing.assert_allclose(a.q, b.q, rtol=0, atol=1e-11)
    np.testing.assert_allclose(a.extras["E0"], b.extras["E0"], rtol=1e-15)


def test_freeze_below_the_floor_and_given_direction_is_kept():
    sys = BornInfeld(QUAD, v0=10.0, t0=None, t1=None)  # U(1,…,1) < v0: frozen
    tr = dynopt.integrate(sys, None, np.ones(6), h=0.05, n_steps=20, seed=0, p0=np.ones(6))
    np.testing.assert_array_equal(tr.q[0, -1], np.ones(6))
    np.testing.assert_array_equal(tr.p[0, -1], np.ones(6))
    # with p0 given its direction is kept and its norm set by the shell
    sys = BornInfeld(QUAD, delta_energy=0.3, t0=None, t1=None)
    one = dynopt.integrate(sys, "S", np.ones(6), h=0.05, n_steps=1, seed=0, p0=np.arange(6.0))
    p = one.p[0, -1]
    np.testing.assert_allclose(p / np.linalg.norm(p), np.arange(6.0) / np.linalg.norm(
        np.arange(6.0)), rtol=1e-14)


def test_continuous_flow_conserves_H_and_respects_the_speed_limit():
    sys = _bbi()
    rng = np.random.default_rng(4)
    q = torch.as_tensor(rng.uniform(-3, 3, (20, 2)), dtype=torch.float64).requires_grad_(True)
    p = torch.as_tensor(rng.normal(size=(20, 2)), dtype=torch.float64).requires_grad_(True)
    H = sys.energy(q, p)
    gq, gp = torch.autograd.grad(H.sum(), (q, p))
    dq, dp, _ = sys.vector_field(q.detach(), p.detach(), torch.zeros(20, len(BBI_EXTRAS),
                                                                    dtype=torch.float64))
    np.testing.assert_allclose(dq.numpy(), gp.numpy(), rtol=1e-12)  # θ̇ = ∂H/∂Π
    np.testing.assert_allclose(dp.numpy(), -gq.numpy(), rtol=1e-10, atol=1e-12)  # Π̇ = −∂H/∂θ
    speed2 = (dq**2).sum(-1)
    assert bool((speed2 < sys.speed_limit(q.detach()) ** 2).all())


def test_control_logic_single_chain_tensors():
    c = BBIConstants(v0=0.0, delta_energy=0.0, t0=3.0, n_bounces=1.0, t1=4.0, eps1=1e-10,
                     eps2=1e-40, project=True, cube=True)
    st = {k: torch.zeros(1, dtype=torch.float64) for k in BBI_EXTRAS}
    bounces = []
    for V in [5.0, 4.0, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5]:
        dec = bbi_control(torch.tensor([V]), torch.tensor([1.0]), torch.tensor([1.0]), st, c)
        bounces.append(bool(dec.bounce))
    # fixed bounce after 3 steps, then a progress bounce after 4 steps without a new minimum
    # (the last minimum, 4.0, was at step 1; the counter resets at each bounce)
    assert bounces == [False, False, False, True, False, False, False, False, True, False,
                       False]
    assert float(st["fixed_bounces"]) == 1 and float(st["bounces"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"t0": 0}, "t0 must be >= 1"),
        ({"n_bounces": -1}, "n_bounces must be >= 0"),
        ({"delta_energy": -1.0}, "delta_energy must be >= 0"),
        ({"v0": math.nan}, "v0 must be finite"),
        ({"bounce_direction": "ball"}, "bounce_direction must be one of"),
        ({"eps2": -1.0}, "eps2 must be >= 0"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BornInfeld(ACKLEY, **kwargs)
    with pytest.raises(TypeError, match="consistent_energy must be a bool"):
        BornInfeld(ACKLEY, consistent_energy=1)


def test_float32_bbi_reaches_a_loss_floor_far_below_its_energy():
    """Near v0 the shell's V((E0/V)² − 1) overflowed float32 once E0/V > 1.8e19: the torch
    backend stopped with a DivergenceError (every value finite) where the optimizer went on."""
    import torch

    from dynopt.potentials import Zakharov
    from dynopt.systems import BornInfeld

    system = BornInfeld(Zakharov(10), v0=1e-22, t0=None, t1=None)
    tr = dynopt.integrate(system, None, np.ones(10), h=0.0026, n_steps=6000, seed=0,
                          backend="torch", dtype=torch.float32, record_every=100)
    assert np.isfinite(tr.q).all()
    assert tr.extras["potential"][0, -1] < 1e-12
