"""Unit tests of dynopt.diagnostics on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal, stats

import dynopt
from dynopt import diagnostics as dg
from dynopt.potentials import Ackley, DoubleWell, Harmonic, Rastrigin, Rosenbrock


def ar1(rng: np.random.Generator, phi: float, chains: int, draws: int) -> np.ndarray:
    """Stationary AR(1) x_t = φ x_{t−1} + e_t, e ~ N(0, 1), shape (chains, draws)."""
    e = rng.normal(size=(chains, draws))
    x0 = rng.normal(size=(chains, 1)) / math.sqrt(1.0 - phi**2)
    out, _ = signal.lfilter([1.0], [1.0, -phi], e, axis=1, zi=phi * x0)
    return out


def replicate_mean_ok(values: list[float], exact: float, bias: float = 0.0) -> bool:
    """|mean − exact| < 4·SE(mean) + bias for independent replicates."""
    v = np.asarray(values)
    return abs(v.mean() - exact) < 4.0 * v.std(ddof=1) / math.sqrt(len(v)) + bias


# --- autocorrelation, IAT, ESS ---------------------------------------------------------------

def test_autocovariance_matches_direct_sum(rng):
    x = rng.normal(size=(3, 257))
    acov = dg.autocovariance(x)
    xc = x - x.mean(axis=1, keepdims=True)
    n = x.shape[1]
    for t in (0, 1, 5, 100, 256):
        direct = (xc[:, : n - t] * xc[:, t:]).sum(axis=1) / n
        np.testing.assert_allclose(acov[:, t], direct, rtol=1e-10, atol=1e-13)
    rho = dg.autocorrelation(x, max_lag=10, average=False)
    np.testing.assert_allclose(rho, acov[:, :11] / acov[:, :1], rtol=1e-12)
    assert dg.autocorrelation(x, max_lag=10).shape == (11,)


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_iat_and_ess_of_ar1(phi):
    exact_tau = (1 + phi) / (1 - phi)
    taus, ess = [], []
    for seed in range(12):
        x = ar1(np.random.default_rng(seed), phi, chains=4, draws=20_000)
        tau = dg.integrated_autocorrelation_time(x)
        taus.append(tau)
        ess.append(dg.effective_sample_size(x))
        # ESS and IAT are the same estimate: ESS · τ = total draws.
        assert ess[-1] * tau == pytest.approx(x.size, rel=1e-12)
    assert replicate_mean_ok(taus, exact_tau)
    assert replicate_mean_ok(ess, 4 * 20_000 / exact_tau)


def test_acf_of_ar1_is_geometric():
    vals = np.array([dg.autocorrelation(ar1(np.random.default_rng(s), 0.7, 4, 20_000), 3)
                     for s in range(10)])
    for k in (1, 2, 3):
        assert replicate_mean_ok(list(vals[:, k]), 0.7**k, bias=3e-4)  # O(1/N) ACF bias


def test_ess_vectorizes_over_trailing_dims(rng):
    x = ar1(rng, 0.8, 4, 5000)
    stacked = np.stack([x, 3.0 * x + 1.0, rng.normal(size=x.shape)], axis=-1)
    ess = dg.effective_sample_size(stacked)
    assert ess.shape == (3,)
    assert ess[0] == pytest.approx(dg.effective_sample_size(x), rel=1e-12)
    assert ess[1] == pytest.approx(ess[0], rel=1e-9)  # affine invariance
    assert ess[2] > 5 * ess[0]  # iid column has a much larger ESS
    bulk = dg.effective_sample_size(stacked, method="bulk")
    assert bulk.shape == (3,) and bulk[0] == pytest.approx(bulk[1], rel=1e-12)  # rank-based


# --- R-hat -------------------------------------------------------------------------------------

def test_rhat_iid_chains_near_one(rng):
    x = rng.normal(size=(4, 5000))
    assert dg.rhat(x) < 1.01
    assert dg.rhat(x, method="rank") < 1.01


def test_rhat_detects_shifted_means(rng):
    x = rng.normal(size=(4, 5000)) + 0.5 * np.arange(4)[:, None]
    assert dg.rhat(x) > 1.1
    assert dg.rhat(x, method="rank") > 1.1


def test_rank_rhat_detects_different_scales(rng):
    # Same mean, different spread: the classic split-R̂ misses it, the folded rank R̂ does not.
    x = rng.normal(size=(4, 5000)) * np.array([1.0, 1.0, 1.0, 3.0])[:, None]
    assert dg.rhat(x) < 1.01
    assert dg.rhat(x, method="rank") > 1.05


def test_rhat_split_detects_a_trend_within_one_chain(rng):
    x = rng.normal(size=(1, 4000)) + np.linspace(0, 2, 4000)
    assert dg.rhat(x) > 1.1


# --- batch means -------------------------------------------------------------------------------

def test_batch_means_se_of_ar1_mean_matches_asymptotic_se():
    phi, chains, draws = 0.9, 4, 20_000
    n = chains * draws
    exact = 1.0 / (1.0 - phi) / math.sqrt(n)  # σ_x √(τ/N) with σ_x² = 1/(1 − φ²)
    b = dg.batch_means.default_n_batches(draws, chains)
    length = draws // b
    # Finite-batch bias of Var(batch mean) for AR(1): −2φ(1 − φ^L)/(L(1 − φ)²) relative to τ.
    rel_bias = 2 * phi * (1 - phi**length) / (length * (1 - phi) ** 2) / ((1 + phi) / (1 - phi))
    ses = [dg.batch_means_se(ar1(np.random.default_rng(s), phi, chains, draws))
           for s in range(20)]
    assert replicate_mean_ok(ses, exact, bias=exact * rel_bias / 2)


def test_estimate_mean_is_calibrated():
    # z-scores of the batch-means estimate of an AR(1) mean must have unit spread.
    z = [dg.estimate_mean(ar1(np.random.default_rng(100 + s), 0.8, 8, 4000)).z(0.0)
         for s in range(40)]
    k = len(z)
    s2 = np.var(z, ddof=1)
    lo, hi = stats.chi2.ppf([1e-4, 1 - 1e-4], k - 1) / (k - 1)
    assert lo < s2 < hi * 1.1  # batch means are biased low by ~τ/L; allow 10%


def test_estimate_ratio_delta_method(rng):
    a = 2.0 + rng.normal(size=(16, 2000))
    d = 4.0 + rng.normal(size=(16, 2000))
    est = dg.estimate_ratio(a, d)
    assert est.agrees(0.5)
    # delta method for independent samples: SE² = (Var a + R² Var d)/(N ȳ²)
    exact_se = math.sqrt((1 + 0.25) / (a.size * 16.0))
    assert est.se == pytest.approx(exact_se, rel=0.15)  # 32 batches: ~13% precision


def test_batch_means_vectorizes_and_validates(rng):
    x = rng.normal(size=(4, 1000, 2))
    se = dg.batch_means_se(x)
    assert se.shape == (2,)
    with pytest.raises(ValueError, match="n_batches"):
        dg.batch_means_se(x, n_batches=2000)
    with pytest.raises(ValueError, match="x must be finite"):
        dg.batch_means_se(np.array([[1.0, np.nan, 2.0]]))
    with pytest.raises(ValueError, match="at least 2 batches"):
        dg.batch_means_se(rng.normal(size=(1, 100)), n_batches=1)


# --- energy drift --------------------------------------------------------------------------------

def test_energy_drift_recovers_planted_slope():
    t = np.linspace(0.0, 100.0, 5001)
    zs = []
    for s in range(30):
        rng = np.random.default_rng(200 + s)
        noise = 1e-3 * ar1(rng, 0.9, 4, t.size)
        energy = 2.0 + 3e-5 * t + noise + rng.normal(size=(4, 1))  # per-chain offsets
        d = dg.energy_drift(energy, t)
        zs.append((d.slope - 3e-5) / d.slope_se)
    zs = np.array(zs)
    assert np.all(np.abs(zs) < 4.5)
    k = len(zs)
    lo, hi = stats.chi2.ppf([1e-4, 1 - 1e-4], k - 1) / (k - 1)
    assert lo < np.var(zs, ddof=1) < hi  # the SE is calibrated, not just large


def test_energy_drift_fields_and_zero_slope_for_oscillation():
    t = np.linspace(0.0, 500.0, 20001)
    e = 1.0 + 1e-3 * np.sin(3.0 * t)[None, :] * np.array([[1.0], [2.0]])
    d = dg.energy_drift(e, t)
    assert d.max_abs_error == pytest.approx(2e-3, rel=1e-6)  # E(0) = 1 on both chains
    assert d.max_rel_error == pytest.approx(2e-3, rel=1e-6)
    assert d.rms_error == pytest.approx(math.sqrt((1 + 4) / 2 * 0.5e-6), rel=1e-3)
    assert abs(d.slope) < 4 * d.slope_se
    assert d.n_chains == 2 and d.n_draws == t.size


def test_energy_drift_validates():
    with pytest.raises(ValueError, match="t has 3 entries"):
        dg.energy_drift(np.ones((2, 5)), t=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        dg.energy_drift(np.ones(3), t=[0.0, 1.0, 1.0])


# --- temperatures ---------------------------------------------------------------------------------

def test_temperatures_on_exact_canonical_samples(rng):
    tau = 0.7
    omega = np.array([0.5, 1.3, 2.0])
    mass = np.array([1.0, 2.0, 0.5])
    pot = Harmonic(omega, dim=3)
    q = rng.normal(size=(8, 5000, 3)) * np.sqrt(tau) / omega
    p = rng.normal(size=(8, 5000, 3)) * np.sqrt(tau * mass)
    tk = dg.kinetic_temperature(p, mass)
    tc = dg.configurational_temperature(q, pot)
    assert tk.agrees(tau) and tc.agrees(tau)
    # independent samples: SE = √(2τ²/(3 n)) for a mean over 3 coordinates (tk exactly;
    # tc by the delta method, measured 1.22× that)
    ref = math.sqrt(2 * tau**2 / 3 / p[..., 0].size)
    assert tk.se < 1.3 * ref and tc.se < 1.6 * ref, (tk.se, tc.se, ref)
    # and they detect a wrong temperature
    assert not dg.kinetic_temperature(1.05 * p, mass).agrees(tau)
    assert not dg.configurational_temperature(1.05 * q, pot).agrees(tau)


def test_temperatures_from_trajectory():
    system = dynopt.systems.Langevin(Harmonic(1.3), gamma=1.0, temperature=0.7)
    traj = dynopt.integrate(system, "BAOAB", [0.0], h=0.1, n_steps=20_000, n_chains=64,
                            seed=5, record_every=10)
    tk = dg.kinetic_temperature(traj, burn_in=10)
    assert tk.agrees(0.7 * (1 - 0.01 * 1.69 / 4), n_se=4.0)  # integer-step O(h²) bias
    assert dg.configurational_temperature(traj, burn_in=10).agrees(0.7)
    # records 1 time unit apart are nearly independent: SE ≈ √(2τ²/n) (measured 0.94, 1.14×)
    ref = math.sqrt(2 * 0.7**2 / traj.q[:, 10:].size)
    assert tk.se < 2 * ref, (tk.se, ref)
    assert dg.configurational_temperature(traj, burn_in=10).se < 2 * ref
    od = dynopt.systems.OverdampedLangevin(Harmonic(1.0), temperature=1.0)
    traj2 = dynopt.integrate(od, "lm", [0.0], h=0.1, n_steps=100, n_chains=2, seed=0)
    with pytest.raises(ValueError, match="no momenta"):
        dg.kinetic_temperature(traj2)


@pytest.mark.parametrize("make", [
    lambda U: dynopt.systems.BornInfeld(U, delta_energy=0.1, t0=5, t1=None),
    lambda U: dynopt.systems.ECDSep(U, F0=-1.0, eta=1.0, nu=1e-3, delta_energy=1.0),
])
def test_kinetic_temperature_refuses_energy_conserving_momenta(make):
    # H = √(V(V + |Π|²)) is not U + |Π|²/2: a "temperature" of Π would be meaningless.
    traj = dynopt.integrate(make(Harmonic(1.0, dim=2)), None, [0.5, 0.3], h=0.05, n_steps=20,
                            n_chains=2, seed=0)
    with pytest.raises(ValueError, match="is not U.q. \\+ pᵀM⁻¹p/2"):
        dg.kinetic_temperature(traj)


# --- Gibbs references -----------------------------------------------------------------------------

@pytest.mark.parametrize("tau, q2, q4, u", [
    (0.10, 0.972523, 0.997523, 0.052477),
    (0.25, 0.917671, 0.980171, 0.144829),
    (0.50, 0.852136, 0.977136, 0.272864),
    (1.00, 0.832745, 1.082745, 0.417255),
])
def test_double_well_reference_table(tau, q2, q4, u):
    pot = DoubleWell()
    assert dg.gibbs_moment(pot, tau, lambda x: x * x) == pytest.approx(q2, abs=1e-6)
    assert dg.gibbs_moment(pot, tau, lambda x: x**4) == pytest.approx(q4, abs=1e-6)
    assert dg.gibbs_mean_potential(pot, tau) == pytest.approx(u, abs=1e-6)
    assert dg.gibbs_moment(pot, tau, lambda x: float(x > 0)) == pytest.approx(0.5, abs=1e-10)


def test_gibbs_references_exact_cases():
    # Harmonic: ⟨q_i²⟩ = τ/ω_i², ⟨U⟩ = dim·τ/2 (separable, any coordinate).
    pot = Harmonic([1.3, 0.5], dim=2)
    assert dg.gibbs_moment(pot, 0.7, lambda x: x * x, coord=1) == pytest.approx(2.8, rel=1e-9)
    assert dg.gibbs_mean_potential(pot, 0.7) == pytest.approx(0.7, rel=1e-9)
    # Separable DoubleWell in 3-D: ⟨U⟩ = 3 × the 1-D value.
    assert dg.gibbs_mean_potential(DoubleWell(3), 0.25) == pytest.approx(3 * 0.144829, abs=3e-6)
    # Rosenbrock (non-separable, 2-D grid path): u = y − x² makes ⟨U⟩ = τ exactly.
    assert dg.gibbs_mean_potential(Rosenbrock(), 0.25) == pytest.approx(0.25, rel=1e-6)


def test_gibbs_marginal_normalized_and_matches_closed_form():
    m = dg.gibbs_marginal(Harmonic(1.3), 0.7, (0,), grid=np.linspace(-1, 1, 5))
    var = 0.7 / 1.69
    np.testing.assert_allclose(m.density, stats.norm.pdf(np.linspace(-1, 1, 5), scale=var**0.5),
                               rtol=1e-9)
    # Rosenbrock marginal of x is N(a, τ/2) exactly.
    m = dg.gibbs_marginal(Rosenbrock(), 0.25, (0,), grid=np.array([0.0, 1.0, 1.5]))
    np.testing.assert_allclose(m.density, stats.norm.pdf([0.0, 1.0, 1.5], 1.0, 0.125**0.5),
                               rtol=1e-6)
    m2 = dg.gibbs_marginal(DoubleWell(2), 0.25, (0, 1), n_grid=301)
    total = np.trapezoid(np.trapezoid(m2.density, m2.axes[1], axis=1), m2.axes[0])
    assert total == pytest.approx(1.0, abs=1e-6)


def test_gibbs_references_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="not normalizable"):
        dg.gibbs_moment(Ackley(1), 1.0, lambda x: x)
    with pytest.raises(ValueError, match="not normalizable"):
        dg.gibbs_marginal(Ackley(2), 1.0, (0, 1))
    with pytest.raises(ValueError, match="not separable"):
        dg.gibbs_moment(Rosenbrock(3), 1.0, lambda x: x)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        dg.gibbs_moment(DoubleWell(), 0.0, lambda x: x)
    with pytest.raises(ValueError, match="out of range"):
        dg.gibbs_marginal(DoubleWell(2), 1.0, (0, 2))
    # With explicit bounds the restricted measure is available.
    restricted = dg.gibbs_moment(Ackley(1), 1.0, lambda x: x, bounds=(-3, 3))
    assert restricted == pytest.approx(0.0, abs=1e-9)


def _double_well_samples(rng, tau, n):
    """Exact samples by inverse transform on a fine quadrature CDF."""
    x = np.linspace(-2.5, 2.5, 400_001)
    w = np.exp(-((x * x - 1) ** 2) / tau)
    cdf = np.concatenate([[0.0], np.cumsum((w[1:] + w[:-1]) / 2)])
    return np.interp(rng.uniform(size=n), cdf / cdf[-1], x)


def test_gibbs_distance_small_for_exact_samples_large_for_wrong_temperature(rng):
    pot = DoubleWell()
    good = _double_well_samples(rng, 0.25, 8 * 20_000).reshape(8, 20_000, 1)
    bad = _double_well_samples(rng, 0.35, 8 * 20_000).reshape(8, 20_000, 1)
    for metric in ("tv", "kl"):
        d_good = dg.gibbs_distance(good, pot, 0.25, metric=metric)
        d_bad = dg.gibbs_distance(bad, pot, 0.25, metric=metric)
        assert d_good.value < 2.0 * d_good.noise_floor
        assert d_bad.value > 10.0 * d_bad.noise_floor
    # multinomial floor with the true sample size agrees with the batch-means floor
    d = dg.gibbs_distance(good, pot, 0.25, n_eff=good.size)
    assert d.noise_floor == pytest.approx(dg.gibbs_distance(good, pot, 0.25).noise_floor, rel=0.2)


def test_gibbs_distance_two_dimensional_paths(rng):
    tau = 0.25
    # Rosenbrock exact samples: x ~ N(a, τ/2), y | x ~ N(x², τ/(2b)).
    n = 100_000
    x = 1.0 + rng.normal(size=n) * math.sqrt(tau / 2)
    y = x * x + rng.normal(size=n) * math.sqrt(tau / 200)
    q = np.stack([x, y], -1).reshape(4, n // 4, 2)
    d = dg.gibbs_distance(q, Rosenbrock(), tau, (0, 1), bins=20)
    assert d.value < 2.0 * d.noise_floor
    assert dg.gibbs_distance(q, Rosenbrock(), 0.5, (0, 1), bins=20).value > 10 * d.noise_floor
    # Separable product path, coordinates swapped.
    q2 = _double_well_samples(rng, tau, 2 * n).reshape(4, n // 4, 2)
    d2 = dg.gibbs_distance(q2, DoubleWell(2), tau, (1, 0), bins=20)
    assert d2.value < 2.0 * d2.noise_floor


def test_gibbs_distance_per_chain_exposes_non_mixing_chains(rng):
    # Each chain stuck in one well: the pooled histogram is right, every chain is wrong.
    s = np.abs(_double_well_samples(rng, 0.25, 8 * 5000)).reshape(8, 5000, 1)
    s *= np.array([1, -1] * 4)[:, None, None]
    pooled = dg.gibbs_distance(s, DoubleWell(), 0.25)
    per = dg.gibbs_distance(s, DoubleWell(), 0.25, per_chain=True)
    assert per.value.shape == (8,)
    assert np.all(per.value > 0.45)  # half the mass is missing in every chain
    assert pooled.value < 0.05


# --- crossings, orders, reference flow ------------------------------------------------------------

def test_barrier_crossings_counts_committed_transitions():
    x = np.array([[1.0, 0.1, -0.1, 0.2, -0.9, -1.0, 0.8, 0.4, 0.6],
                  [0.0, 0.0, -0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert dg.barrier_crossings(x).tolist() == [2, 0]
    with pytest.raises(ValueError, match="lower < upper"):
        dg.barrier_crossings(x, levels=(0.5, -0.5))


def test_empirical_order_and_asymptotic_check():
    hs = np.array([0.2, 0.1, 0.05, 0.025])
    fit = dg.empirical_order(hs, 3.0 * hs**2 + 1e-9)
    assert fit.order == pytest.approx(2.0, abs=1e-3) and fit.asymptotic
    assert fit.constant == pytest.approx(3.0, rel=1e-2)
    with pytest.warns(RuntimeWarning, match="asymptotic"):
        fit = dg.empirical_order(hs, hs**2 + 0.5 * hs**4 / hs.min() ** 2)
    assert fit.asymptotic is False
    with pytest.raises(ValueError, match="errors must be > 0"):
        dg.empirical_order(hs, [1.0, 0.0, 1.0, 1.0])


def test_reference_flow_harmonic_closed_form():
    system = dynopt.systems.Hamiltonian(Harmonic(1.0))
    t = np.linspace(0.0, 10.0, 11)
    sol = dg.reference_flow(system, [[1.0], [0.0]], [[0.0], [2.0]], t=t)
    np.testing.assert_allclose(sol.q[0, :, 0], np.cos(t), atol=1e-10)
    np.testing.assert_allclose(sol.q[1, :, 0], 2 * np.sin(t), atol=1e-10)
    np.testing.assert_allclose(sol.p[1, :, 0], 2 * np.cos(t), atol=1e-10)


@pytest.mark.parametrize("make", [
    lambda pot: dynopt.systems.NoseHoover(pot, temperature=0.5, tau=0.7),
    lambda pot: dynopt.systems.NoseHooverChain(pot, temperature=0.5, tau=0.7, chain_length=3),
])
def test_reference_flow_conserves_thermostat_invariant(make):
    # The vector field and the invariant are written separately; the exact flow must conserve it.
    system = make(DoubleWell(2))
    t = np.linspace(0.0, 20.0, 41)
    sol = dg.reference_flow(system, [[0.9, -1.2]], [[0.3, 0.8]], t=t)
    u = DoubleWell(2).value(sol.q)
    k = 0.5 * (sol.p**2).sum(-1)
    layout = system.extras_layout(2)
    extras, off = {}, 0
    for name, size in layout.items():
        extras[name] = sol.x[..., off:off + size]
        off += size
    inv = system.invariant(u, k, extras, 2)
    assert np.abs(inv - inv[:, :1]).max() < 1e-9
    assert np.abs(sol.x[..., 0] - sol.x[:, :1, 0]).max() > 1e-2  # the thermostat did move


def test_global_error_validates():
    system = dynopt.systems.Langevin(DoubleWell(), temperature=1.0)
    with pytest.raises(ValueError, match="draws noise"):
        dg.global_error(system, "BAOAB", [1.0], [0.0], T=1.0, hs=[0.1])
    ham = dynopt.systems.Hamiltonian(DoubleWell())
    with pytest.raises(ValueError, match="T/h must be an integer"):
        dg.global_error(ham, "leapfrog", [1.0], [0.0], T=1.0, hs=[0.3])


def test_input_validation_messages(rng):
    with pytest.raises(ValueError, match="method must be one of"):
        dg.effective_sample_size(rng.normal(size=(2, 100)), method="bogus")
    with pytest.raises(ValueError, match="at least 4 draws"):
        dg.rhat(np.ones((2, 3)))
    with pytest.raises(ValueError, match="metric must be one of"):
        dg.gibbs_distance(rng.normal(size=(1, 10, 1)), DoubleWell(), 0.25, metric="l2")
    with pytest.raises(ValueError, match="needs potential="):
        dg.configurational_temperature(rng.normal(size=(1, 10, 1)))
    with pytest.raises(TypeError, match="must be array-like"):
        dg.rhat("abc")
    assert np.isnan(dg.effective_sample_size(np.ones((2, 50))))
    assert dg.is_separable(Rastrigin(3)) and not dg.is_separable(Rosenbrock(2))


@pytest.mark.parametrize("fn", [dg.effective_sample_size, dg.rhat, dg.autocorrelation,
                                dg.integrated_autocorrelation_time])
def test_diagnostics_refuse_zero_chains(fn):
    """rhat and autocorrelation returned NaN with RuntimeWarnings, ESS a numpy reshape error."""
    with pytest.raises(ValueError, match="x has no chains"):
        fn(np.zeros((0, 10)))


def test_tail_ess_keeps_the_informative_tail():
    """min over the two tails: a tail whose indicator is constant (NaN) must not hide the other
    (np.minimum propagated the NaN)."""
    x = np.random.default_rng(5).normal(size=(1, 19))  # 95 % indicator constant per split
    low = dg.effective_sample_size(x, method="quantile", prob=0.05)
    high = dg.effective_sample_size(x, method="quantile", prob=0.95)
    assert np.isfinite(low) and np.isnan(high)
    assert dg.effective_sample_size(x, method="tail") == low


def test_temperatures_of_an_observables_run_say_what_was_not_recorded():
    import torch

    system = dynopt.systems.Langevin(DoubleWell(dim=1), gamma=1.0, temperature=0.5)
    tr = dynopt.integrate(system, "BAOAB", [0.5], h=0.1, n_steps=20, seed=0, backend="torch",
                          dtype=torch.float64, observables=[lambda s: s.q[:, 0] ** 2])
    with pytest.raises(ValueError, match="did not record the momenta"):
        dg.kinetic_temperature(tr)
    with pytest.raises(ValueError, match="did not record the positions"):
        dg.configurational_temperature(tr)
    with pytest.raises(ValueError, match="q has 3 coordinate"):
        dg.configurational_temperature(np.zeros((2, 5, 3)), DoubleWell(dim=2))


def test_gibbs_mean_potential_at_a_tiny_temperature_and_with_distinct_marginals():
    """At τ = 1e-12 the support was narrower than the first grid's step: Z underflowed and
    ``dynopt study --temperature 1e-12`` ended in ZeroDivisionError after the run. The grid now
    zooms in (harmonic: ⟨U⟩ = τ/2 exactly), and what it cannot resolve (two wells far apart at
    that τ) is a ValueError naming the temperature. Coordinates share one quadrature only when
    their marginals agree: u₀ = q², u₁ = q⁴ give τ/2 + τ/4."""
    from dynopt.potentials import Custom, DoubleWell, Harmonic

    for tau in (1e-12, 1e-20):
        assert dg.gibbs_mean_potential(Harmonic(1.0, 1), tau) == pytest.approx(tau / 2,
                                                                              rel=1e-9)
    with pytest.raises(ValueError, match="temperature=1e-12: the Gibbs density"):
        dg.gibbs_mean_potential(DoubleWell(1), 1e-12)
    pot = Custom(2, value=lambda q: 0.5 * q[..., 0] ** 2 + 0.25 * q[..., 1] ** 4)
    pot.separable = True
    assert dg.gibbs_mean_potential(pot, 0.3) == pytest.approx(0.3 / 2 + 0.3 / 4, rel=1e-9)
    many = dg.gibbs_mean_potential(DoubleWell(200), 0.25)
    assert many == pytest.approx(200 * dg.gibbs_mean_potential(DoubleWell(1), 0.25), rel=1e-10)
