"""integrate(): outputs, validation of every parameter, and divergence handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.errors import DivergenceError

LANGEVIN = S.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.5)


def test_trajectory_layout_and_energies():
    traj = dynopt.integrate(LANGEVIN, "BAOAB", [0.1, 0.2], h=0.05, n_steps=100, n_chains=4,
                            record_every=10, seed=1)
    assert traj.q.shape == (4, 11, 2) and traj.p.shape == (4, 11, 2)
    assert traj.energy.shape == (4, 11)
    np.testing.assert_allclose(traj.t, np.arange(11) * 0.5)
    np.testing.assert_array_equal(traj.q[:, 0], np.tile([0.1, 0.2], (4, 1)))
    u = P.DoubleWell(dim=2).value(traj.q)
    np.testing.assert_allclose(traj.extras["potential"], u, rtol=1e-14)
    np.testing.assert_allclose(traj.energy, u + 0.5 * (traj.p**2).sum(-1), rtol=1e-14)
    assert traj.final_state.step == 100
    np.testing.assert_array_equal(traj.final_state.q, traj.q[:, -1])
    assert set(traj.to_arviz_dict()) >= {"q", "p"}


def test_default_momenta_are_maxwell_boltzmann_and_reproducible():
    traj = dynopt.integrate(LANGEVIN, None, [0.0, 0.0], h=0.05, n_steps=0, n_chains=20000, seed=3)
    p0 = traj.p[:, 0].reshape(-1)
    assert abs(p0.var() - 0.5) < 4 * 0.5 * math.sqrt(2 / p0.size)
    again = dynopt.integrate(LANGEVIN, None, [0.0, 0.0], h=0.05, n_steps=0, n_chains=20000, seed=3)
    np.testing.assert_array_equal(p0, again.p[:, 0].reshape(-1))


def test_overdamped_has_no_momenta_and_energy_is_potential():
    ov = S.OverdampedLangevin(P.Harmonic(), temperature=0.3)
    traj = dynopt.integrate(ov, "lm", [1.0], h=0.1, n_steps=10, seed=0)
    assert traj.p is None
    np.testing.assert_allclose(traj.energy, 0.5 * traj.q[..., 0] ** 2)


def test_nose_hoover_trajectory_reports_its_invariant():
    nh = S.NoseHoover(P.Harmonic(dim=2), temperature=1.0)
    traj = dynopt.integrate(nh, None, [1.0, 0.0], p0=[0.0, 1.0], h=0.01, n_steps=100)
    assert "invariant" in traj.extras and traj.extras["xi"].shape == (1, 101)
    np.testing.assert_allclose(traj.conserved, traj.extras["invariant"])


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"h": 0.0}, ValueError, "h must be > 0, got 0.0"),
        ({"h": -0.1}, ValueError, "h must be > 0, got -0.1"),
        ({"h": float("nan")}, ValueError, "h must be finite"),
        ({"n_steps": -1}, ValueError, "n_steps must be >= 0, got -1"),
        ({"n_steps": 2.5}, TypeError, "n_steps must be an integer"),
        ({"record_every": 0}, ValueError, "record_every must be >= 1, got 0"),
        ({"backend": "jax"}, ValueError, "backend must be one of"),
        ({"noise": "uniform"}, ValueError, "noise must be one of"),
        ({"seed": -3}, ValueError, "seed must be >= 0, got -3"),
        ({"q0": [np.nan, 0.0]}, ValueError, r"q0 must be finite, got nan at index \(0,\)"),
        ({"q0": [0.0, 0.0, 0.0]}, ValueError, "q0 has 3 coordinate"),
        ({"q0": np.zeros((3, 2)), "n_chains": 4}, ValueError, "q0 has 3 chains .rows. but n_chains=4"),
        ({"p0": [1.0, 2.0, 3.0]}, ValueError, "p0 has shape"),
        ({"p0": [np.inf, 0.0]}, ValueError, "p0 must be finite"),
        ({"n_chains": 0}, ValueError, "n_chains must be >= 1"),
        ({"integrator": "BXB"}, ValueError, r"unknown letter\(s\) \['X'\]"),
        ({"integrator": "BACAB"}, ValueError, r"letter\(s\) \['C'\] that Langevin does not offer"),
        ({"dtype": "float32"}, ValueError, "backend='numba' runs in float64"),
        ({"progress": "yes"}, TypeError, "progress must be None or a bool"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, exc, message):
    call = {"integrator": "BAOAB", "q0": [0.0, 0.0], "h": 0.05, "n_steps": 10}
    call.update(kwargs)
    integrator = call.pop("integrator")
    q0 = call.pop("q0")
    with pytest.raises(exc, match=message):
        dynopt.integrate(LANGEVIN, integrator, q0, **call)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: S.Langevin(P.Harmonic(), gamma=-1.0), "gamma must be >= 0, got -1.0"),
        (lambda: S.Langevin(P.Harmonic(), temperature=-0.1), "temperature must be >= 0"),
        (lambda: S.Langevin(P.Harmonic(), mass=0.0), "mass must be > 0"),
        (lambda: S.Langevin(P.Harmonic(dim=2), mass=[1.0, 2.0, 3.0]), "mass has 3 entries"),
        (lambda: S.OverdampedLangevin(P.Harmonic(), gamma=0.0), "gamma must be > 0"),
        (lambda: S.AdaptiveLangevin(P.Harmonic(), eps=-1.0), "eps must be > 0"),
        (lambda: S.AdaptiveLangevin(P.Harmonic(), sigma_a=-1.0), "sigma_a must be >= 0"),
        (lambda: S.NoseHoover(P.Harmonic(), tau=0.0), "tau must be > 0"),
        (lambda: S.NoseHooverChain(P.Harmonic(), chain_length=0), "chain_length must be >= 1"),
        (lambda: S.NoseHooverChain(P.Harmonic(), sy_order=4), "sy_order must be one of"),
        (lambda: S.Hamiltonian("double well"), "potential must be a dynopt.potentials potential"),
    ],
)
def test_bad_system_parameters(factory, message):
    with pytest.raises((ValueError, TypeError), match=message):
        factory()


def _first_nonfinite_step(h, q0, p0, n):
    """Leapfrog on U = q²/2 in plain float64 numpy: the step whose position is first non-finite."""
    q, p = q0, p0
    with np.errstate(all="ignore"):
        for k in range(1, n + 1):
            p = p - 0.5 * h * q
            q = q + h * p
            p = p - 0.5 * h * q
            if not np.isfinite(q):
                return k
    return None


def _linear_force(q, out):
    out[0] = q[0]


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_divergence_names_the_exact_step_and_keeps_the_records(backend):
    h = 2.5  # leapfrog is unstable for h·ω > 2
    expected = _first_nonfinite_step(h, 1.0, 0.0, 2000)
    assert expected is not None
    # the harmonic force with U = 0 recorded: q²/2 would overflow (a non-finite recorded U
    # stops the run too) near step 260, long before q and p do
    ham = S.Hamiltonian(P.Custom(1, value=lambda q: 0.0 * q[..., 0], grad=lambda q: 1.0 * q,
                                 numba_value=lambda q: 0.0, numba_grad=_linear_force))
    with pytest.raises(DivergenceError, match=f"diverged at step {expected} ") as info:
        dynopt.integrate(ham, "BAB", [1.0], p0=[0.0], h=h, n_steps=2000, record_every=10,
                         backend=backend)
    err = info.value
    assert err.step == expected
    partial = err.trajectory
    assert partial.n_draws == (expected - 1) // 10 + 1
    assert np.isfinite(partial.q).all()


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("make", [
    lambda pot: S.NoseHoover(pot, temperature=0.7, mass=[0.25, 4.0]),
    lambda pot: S.NoseHooverChain(pot, temperature=0.7, mass=[0.25, 4.0]),
    lambda pot: S.AdaptiveLangevin(pot, temperature=0.7, mass=[0.25, 4.0]),
    lambda pot: S.Langevin(pot, gamma=1.0, temperature=0.7, mass=[0.25, 4.0]),
])
def test_default_momenta_are_maxwell_boltzmann_for_every_thermostat(backend, make):
    """p0 defaults to N(0, τM) for every system with a temperature, as documented: Nosé–Hoover
    and its chains started at p = 0 (a chain at a minimum never moved)."""
    system = make(P.Harmonic(dim=2))
    n = 20_000
    tr = dynopt.integrate(system, None, np.zeros((n, 2)), h=0.01, n_steps=1, seed=1,
                          backend=backend)
    ratio = np.asarray(tr.p[:, 0, :]) ** 2 / np.array([0.25, 4.0])  # p²/m: mean τ each
    mean, se = ratio.mean(0), ratio.std(0) / np.sqrt(n)
    assert np.all(np.abs(mean - 0.7) < 4 * se), (mean, se)
    assert np.all(se < 1.1 * 0.7 * np.sqrt(2.0 / n)), se  # a χ²₁ mean's SE: not wider


def test_torch_backend_seeds_count_all_64_bits_and_small_seeds_are_unchanged():
    """torch's CPU generator keeps 32 bits of its seed: seeds 1 and 1 + 2³² drew identical
    runs. Seeds ≥ 2³² are now folded by a hash of all 64 bits; smaller ones are used as they
    are (earlier runs reproduce)."""
    import torch

    from dynopt.backends.torch.ops import seeded

    system = S.Langevin(P.DoubleWell(dim=1), gamma=1.0, temperature=0.3)

    def run(seed):
        return dynopt.integrate(system, "BAOAB", [1.0], h=0.1, n_steps=50, n_chains=4,
                                seed=seed, backend="torch").q

    for low, high in [(1, 1 + 2**32), (7, 7 + 2**63)]:
        assert not np.array_equal(run(low), run(high))
    assert np.array_equal(run(2**40), run(2**40))
    for seed in (0, 5, 2**32 - 1):
        a = torch.randn(8, generator=seeded(torch.Generator(), seed))
        assert torch.equal(a, torch.randn(8, generator=torch.Generator().manual_seed(seed)))
    folded = {torch.randn(4, generator=seeded(torch.Generator(), s)).sum().item()
              for s in (2**32, 2**33, 2**63, 2**64 - 1, 3 * 2**32 + 1)}
    assert len(folded) == 5


def test_optimizer_generators_count_all_64_bits():
    import torch

    from dynopt.optim import Langevin

    def noise(seed):
        p = torch.zeros(16, requires_grad=True)
        p.grad = torch.zeros(16)
        Langevin([p], lr=0.1, temperature=1.0, seed=seed, foreach=True).step()
        return p.detach().clone()

    assert not torch.equal(noise(3), noise(3 + 2**32))


@pytest.mark.parametrize(("call", "exc", "message"), [
    (lambda: dynopt.integrate(S.Langevin(P.Harmonic()), "BAOAB", None, h=0.1, n_steps=2),
     ValueError, "q0 is required"),
    (lambda: dynopt.integrate(S.Langevin(P.Harmonic(dim=2)), "BAOAB", np.zeros((0, 2)),
                              h=0.1, n_steps=2), ValueError, "q0 has 0 chains"),
    (lambda: dynopt.integrate("langevin", "BAOAB", [0.0], h=0.1, n_steps=2), TypeError,
     "system must be a dynopt system"),
    (lambda: dynopt.integrate(None, "BAOAB", [0.0], h=0.1, n_steps=2), TypeError,
     "system must be a dynopt system"),
])
def test_integrate_input_errors_name_the_argument(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_numba_backend_accepts_torch_float64_as_its_dtype():
    import torch

    a = dynopt.integrate(S.Langevin(P.Harmonic()), "BAOAB", [0.5], h=0.1, n_steps=5, seed=0,
                         backend="numba", dtype=torch.float64)
    b = dynopt.integrate(S.Langevin(P.Harmonic()), "BAOAB", [0.5], h=0.1, n_steps=5, seed=0,
                         backend="numba")
    assert np.array_equal(a.q, b.q)
    with pytest.raises(ValueError, match="runs in float64"):
        dynopt.integrate(S.Langevin(P.Harmonic()), "BAOAB", [0.5], h=0.1, n_steps=5,
                         backend="numba", dtype=torch.float32)


def test_a_torch_only_custom_potential_defaults_to_torch():
    pot = P.Custom(1, value=lambda q: 0.5 * (q**2).sum(-1))
    tr = dynopt.integrate(S.Langevin(pot, gamma=1.0, temperature=1.0), "BAOAB", [0.5], h=0.1,
                          n_steps=3, seed=0)
    assert np.isfinite(tr.q).all()


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_maxwell_boltzmann_momenta_are_gaussian_with_discrete_noise(backend):
    """noise="discrete" made the default momenta three-point values (2/3 of them exactly 0):
    the momenta must be N(0, τM) whatever the kernels' noise."""
    p = dynopt.integrate(LANGEVIN, "BAOAB", [1.0, 0.0], h=0.1, n_steps=0, n_chains=4000,
                         seed=1, noise="discrete", backend=backend).p[:, 0]
    assert np.mean(p == 0.0) == 0.0
    # kurtosis 3 (three-point: 3 too, so test the fourth moment's density instead: |p| < σ/10
    # holds for 8 % of normals, for 67 % of the three-point values)
    small = np.mean(np.abs(p) < 0.1 * math.sqrt(0.5))
    se = math.sqrt(0.08 * 0.92 / p.size)
    assert abs(small - 0.0797) < 4 * se, small
    assert abs(np.var(p) / 0.5 - 1) < 4 * math.sqrt(2 / p.size)


def test_dtype_float_means_float64_on_both_backends():
    import torch

    for backend in ("numba", "torch"):
        q = dynopt.integrate(LANGEVIN, "BAOAB", [1.0, 0.0], h=0.1, n_steps=2, seed=0,
                             backend=backend, dtype=float).final_state.q
        assert q.dtype in (np.float64, torch.float64)
    for dt in (np.dtype("float64"), np.dtype("float32"), np.float32):  # numpy dtypes as before
        got = dynopt.integrate(LANGEVIN, "BAOAB", [1.0, 0.0], h=0.1, n_steps=2, seed=0,
                               backend="torch", dtype=dt).final_state.q.dtype
        assert str(got) == f"torch.{np.dtype(dt).name}"
    with pytest.raises(ValueError, match="'float' is ambiguous"):
        dynopt.integrate(LANGEVIN, "BAOAB", [1.0, 0.0], h=0.1, n_steps=2, backend="torch",
                         dtype="float")


def test_a_resumed_run_with_fewer_normals_per_step_draws_fresh_noise():
    """numba put normal i of step n at Philox index n·S + i, S the normals per step of the
    *current* scheme: GWGW (S = 2) then EM (S = 1) re-read GWGW's normals exactly (the
    increments matched to 1e-16, correlation 1)."""
    s = S.OverdampedLangevin(P.Harmonic(1e-9), temperature=1.0)
    a = dynopt.integrate(s, "GWGW", [0.0], h=0.01, n_steps=400, seed=7, n_chains=4)
    b = dynopt.integrate(s, "EM", None, h=0.01, n_steps=800, state=a.final_state)
    ia = np.diff(a.q[..., 0], axis=1)                           # (4, 400), 2 normals each
    ib = np.diff(b.q[..., 0], axis=1)
    paired = (ib[:, 0::2] + ib[:, 1::2]) / math.sqrt(2)       # EM's normals, paired like GWGW's
    r = np.corrcoef(paired[:, :200].ravel(), ia[:, 200:400].ravel())[0, 1]
    assert abs(r) < 4 / math.sqrt(800), r                      # independent: |r| ~ 1/√n
