"""Diagnostics properties that one-line bugs in the statistics would break (found by mutation
testing: each test here failed on a realistic mutant that the rest of the suite let through)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from dynopt import diagnostics as dg


def ar1(rng: np.random.Generator, phi: float, chains: int, draws: int) -> np.ndarray:
    """Stationary AR(1) x_t = φ x_{t−1} + e_t, e ~ N(0, 1), shape (chains, draws)."""
    e = rng.normal(size=(chains, draws))
    x0 = rng.normal(size=(chains, 1)) / math.sqrt(1.0 - phi**2)
    out, _ = signal.lfilter([1.0], [1.0, -phi], e, axis=1, zi=phi * x0)
    return out


def test_ess_of_antithetic_chains_is_capped_at_s_log10_s():
    # AR(1) with φ = −0.9 has τ = (1 + φ)/(1 − φ) = 0.053, below Stan's floor 1/log₁₀(S):
    # τ̂ is capped there, so ESS = S·log₁₀(S) exactly (autocorrelation module docstring).
    x = ar1(np.random.default_rng(3), -0.9, chains=4, draws=1000)
    s = x.size
    assert dg.integrated_autocorrelation_time(x) == pytest.approx(1.0 / math.log10(s),
                                                                    rel=1e-12)
    assert dg.effective_sample_size(x) == pytest.approx(s * math.log10(s), rel=1e-12)


def test_tail_ess_with_one_probability_means_the_symmetric_pair():
    # method="tail", prob=p is documented as the pair (p, 1 − p): the min of the two quantile
    # ESS. The drifting chains give the two tails different ESS; mirroring x swaps the tails,
    # so one of the two cases has its smaller ESS in the upper tail.
    rng = np.random.default_rng(2)
    base = ar1(rng, 0.7, chains=4, draws=400) + np.linspace(0.0, 1.5, 400)
    for x in (base, -base):
        low = dg.effective_sample_size(x, method="quantile", prob=0.1)
        high = dg.effective_sample_size(x, method="quantile", prob=0.9)
        assert abs(low - high) > 0.1 * min(low, high)
        tail = dg.effective_sample_size(x, method="tail", prob=0.1)
        assert tail == dg.effective_sample_size(x, method="tail", prob=(0.1, 0.9))
        assert tail == min(low, high)


def test_batch_means_by_hand():
    # One chain of 9 draws in 4 batches of 2: the 9 mod 4 = 1 leading draw (the outlier) is
    # dropped, the batch means are 0, 2, 4, 6 and SE = sqrt(var(means, ddof=1)/B) (module
    # docstring): sqrt((20/3)/4).
    x = np.array([[1000.0, 0.0, 0.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0]])
    se = math.sqrt(20.0 / 3.0 / 4.0)
    assert dg.batch_means_se(x, n_batches=4) == pytest.approx(se, rel=1e-14)
    est = dg.estimate_mean(x, n_batches=4)
    assert (est.value, est.se) == (pytest.approx(3.0, rel=1e-15), pytest.approx(se, rel=1e-14))


def test_default_batches_per_chain():
    # ⌈32/chains⌉, at most ⌊√draws⌋, at least 2 in total (default_n_batches docstring)
    assert dg.batch_means.default_n_batches(10_000, 3) == 11
    assert dg.batch_means.default_n_batches(10_000, 1) == 32
    assert dg.batch_means.default_n_batches(100, 1) == 10
    assert dg.batch_means.default_n_batches(10_000, 40) == 1
    assert dg.batch_means.default_n_batches(1, 1) == 2


def test_ratio_standard_error_by_hand_with_a_negative_denominator():
    # batch means a_j = 1, 3, 2, 5 and d_j = −1, −2, −3, −4 (batches of 2 equal draws):
    # R = ā/d̄ and SE(R) = SE(ā − R d̄)/|d̄| (batch_means module docstring), positive.
    a_means, d_means = np.array([1.0, 3.0, 2.0, 5.0]), np.array([-1.0, -2.0, -3.0, -4.0])
    num, den = np.repeat(a_means, 2)[None], np.repeat(d_means, 2)[None]
    r = a_means.mean() / d_means.mean()
    se = math.sqrt(np.var(a_means - r * d_means, ddof=1) / 4) / abs(d_means.mean())
    est = dg.estimate_ratio(num, den, n_batches=4)
    assert est.value == pytest.approx(r, rel=1e-14)
    assert est.se == pytest.approx(se, rel=1e-12)
    assert est.se > 0


def test_stability_value_is_the_dimensionless_h2_lambda_over_m():
    # Leapfrog on U = λq²/2 with mass m is stable iff hω < 2, ω² = λ/m: λ_c = 4m/h², and the
    # dimensionless limit .value = h²λ_c/m = 4 whatever the mass (StabilityLimit docstring).
    from dynopt import systems

    for m, h in ((3.0, 0.5), (0.25, 0.2)):
        lim = dg.stability_limit(systems.Hamiltonian(None, mass=m), "BAB", h)
        assert lim.lam == pytest.approx(4.0 * m / h**2, rel=1e-12)
        assert lim.value == pytest.approx(4.0, rel=1e-12)
        assert lim.variable == "h²λ/m"


@pytest.mark.parametrize("kind, name", [("NoseHoover", "xi"), ("NoseHooverChain", "v")])
def test_chain_step_damps_with_the_frozen_first_thermostat_velocity(kind, name):
    # "BAT" (kick, drift, chain step) with the chain velocities frozen at v₁ = 0.5 is the
    # heavy ball with exact friction c = e^{−v₁h}: h²λ/m < 2(1 + c), det K = c (stability
    # module docstring: NHC t ↦ p ← e^{−v₁t} p).
    from dynopt import systems

    h, v1 = 0.1, 0.5
    lim = dg.stability_limit(getattr(systems, kind)(None, temperature=1.0), "BAT", h,
                             extras={name: v1})
    c = math.exp(-v1 * h)
    assert lim.det == pytest.approx(c, rel=1e-14)
    assert lim.value == pytest.approx(2.0 * (1.0 + c), rel=1e-10)


def test_energy_drift_is_the_fixed_effects_least_squares_slope():
    # Three chains with their own offsets, a common slope and alternating (antithetic) wiggles.
    # The slope is the least-squares b of ΔE_ck = a_c + b t_k + r_ck (one intercept per chain),
    # σ̂² the residual variance on C·N − C − 1 degrees of freedom, and the residuals'
    # τ̂ < 1 is clamped to 1: SE = sqrt(σ̂²/(C Σ(t − t̄)²)) (energy module docstring).
    n = 20
    t = np.linspace(0.0, 9.5, n)
    alt = (-1.0) ** np.arange(n)
    e = np.stack([1.0 + 0.01 * t + 0.1 * alt, 2.0 + 0.01 * t - 0.2 * alt,
                  3.0 + 0.01 * t + 0.05 * alt])
    c = e.shape[0]
    design = np.zeros((c * n, c + 1))
    for k in range(c):
        design[k * n:(k + 1) * n, k] = 1.0
    design[:, c] = np.tile(t, c)
    coef = np.linalg.lstsq(design, (e - e[:, :1]).ravel(), rcond=None)[0]
    resid = (e - e[:, :1]).ravel() - design @ coef
    sigma2 = (resid @ resid) / (c * n - c - 1)
    from dynopt.diagnostics.autocorrelation import _geyer_tau

    assert _geyer_tau(resid.reshape(c, n)[:, :, None])[0] < 1.0  # so the clamp applies
    d = dg.energy_drift(e, t)
    assert d.slope == pytest.approx(coef[c], rel=1e-12)
    assert d.slope_se == pytest.approx(math.sqrt(sigma2 / (c * ((t - t.mean()) ** 2).sum())),
                                       rel=1e-12)
    # the error summaries (EnergyDrift docstring): ΔE = E − E(t₀); the final error is the mean
    # over chains of |ΔE(t_end)|, the relative error per chain is max|ΔE|/|E(t₀)|
    err = e - e[:, :1]
    assert d.max_abs_error == pytest.approx(np.abs(err).max(), rel=1e-14)
    assert d.final_abs_error == pytest.approx(np.abs(err[:, -1]).mean(), rel=1e-14)
    assert d.max_rel_error == pytest.approx((np.abs(err).max(1) / np.abs(e[:, 0])).max(),
                                            rel=1e-14)
    assert d.rms_error == pytest.approx(math.sqrt((err * err).mean()), rel=1e-14)


def test_temperatures_discard_the_burn_in_of_every_chain():
    # burn_in = b drops the first b draws of each chain. Here they are huge outliers; the rest
    # gives T_kin = mean p²/m over chains, draws and coordinates, and for U = ω²|q|²/2 in
    # d = 3, T_conf = ⟨ω⁴|q|²⟩/(3ω²) = ω² mean q².
    from dynopt.potentials import Harmonic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 40, 3))
    x[:, :10] = 50.0
    kin = dg.kinetic_temperature(x, mass=2.0, burn_in=10)
    assert kin.value == pytest.approx(np.mean(x[:, 10:] ** 2) / 2.0, rel=1e-12)
    conf = dg.configurational_temperature(x, Harmonic(1.5, dim=3), burn_in=10)
    assert conf.value == pytest.approx(1.5**2 * np.mean(x[:, 10:] ** 2), rel=1e-12)


def test_crossings_count_a_value_exactly_on_a_level_as_committed():
    # crossings module docstring: state −1 when x ≤ lower, +1 when x ≥ upper; values inside
    # (lower, upper) keep the previous state. Values exactly on the levels therefore commit.
    x = np.array([[-0.5, 0.5, 0.0, -0.5, 0.49, 0.5], [0.5, -0.49, 0.49, -0.5, -1.0, 0.5]])
    assert dg.barrier_crossings(x, levels=(-0.5, 0.5)).tolist() == [3, 2]


def test_a_mass_of_the_wrong_length_is_refused_by_name():
    # one mass per coordinate: a length that differs from dim is refused naming mass, also
    # when NumPy would broadcast it (a single entry)
    p = np.ones((1, 5, 3))
    for mass in ([1.0, 2.0], [2.0]):
        with pytest.raises(ValueError, match=f"mass has {len(mass)} entries but p has dim=3"):
            dg.kinetic_temperature(p, mass=mass)


# --- global error (dynopt/diagnostics/order.py) -----------------------------------------------------
def test_global_error_is_the_maximum_over_chains():
    """e(h) = max_c |state_c^{(h)}(T) − state_c^{ref}(T)|: two harmonic chains of amplitudes 1
    and 3 (errors proportional to the amplitude) give the larger chain's error, not a mean."""
    from dynopt.potentials import Harmonic
    from dynopt.systems import Hamiltonian

    system = Hamiltonian(Harmonic(1.0, 1))
    kw = dict(T=1.0, hs=[0.25], backend="torch")
    both = dg.global_error(system, "BAB", [[1.0], [3.0]], [[0.0], [0.0]], **kw)
    small = dg.global_error(system, "BAB", [[1.0]], [[0.0]], **kw)
    large = dg.global_error(system, "BAB", [[3.0]], [[0.0]], **kw)
    np.testing.assert_allclose(large, 3.0 * small, rtol=1e-6)   # linear dynamics
    np.testing.assert_allclose(both, large, rtol=1e-6)


def test_global_error_with_extras_adds_the_thermostat_error_to_the_norm():
    """include_extras=True measures |(q, p, ξ) error|, a norm over more components: at least
    the (q, p) error, and larger where ξ is off; a system without extras is unaffected."""
    from dynopt.potentials import Harmonic
    from dynopt.systems import Hamiltonian, NoseHoover

    nh = NoseHoover(Harmonic(1.0, 1), temperature=1.0, tau=0.5)
    kw = dict(T=1.0, hs=[0.25], backend="torch")
    qp = dg.global_error(nh, None, [[1.0]], [[0.5]], **kw)
    full = dg.global_error(nh, None, [[1.0]], [[0.5]], include_extras=True, **kw)
    assert np.all(full > qp * (1 + 1e-6)), (full, qp)
    ham = Hamiltonian(Harmonic(1.0, 1))
    np.testing.assert_array_equal(dg.global_error(ham, "BAB", [1.0], [0.0], **kw),
                                  dg.global_error(ham, "BAB", [1.0], [0.0], include_extras=True,
                                                  **kw))


# --- gibbs_distance (dynopt/diagnostics/gibbs_distance.py) ------------------------------------------
def test_gibbs_distance_counts_the_exact_mass_outside_the_bins():
    """K bins plus one outside cell: for U = q²/2 at τ = 1 the exact mass outside [−1, 1] is
    erfc(1/√2) = 0.3173; samples all inside give TV = ½(|1 − (1 − m)| + |0 − m|) = m."""
    from dynopt.potentials import Harmonic

    m = math.erfc(1.0 / math.sqrt(2.0))
    q = np.concatenate([np.full(30, -0.5), np.full(30, 0.5)])[:, None]
    d = dg.gibbs_distance(q, Harmonic(1.0), 1.0, bins=np.array([-1.0, 0.0, 1.0]), n_eff=60.0)
    assert d.outside[1] == pytest.approx(m, rel=1e-9)
    assert d.outside[0] == 0.0
    np.testing.assert_allclose(d.exact, [(1 - m) / 2] * 2, rtol=1e-9)
    assert d.value == pytest.approx(m, rel=1e-9)


def test_gibbs_distance_bins_follow_numpy_histogram_the_last_bin_is_closed():
    """np.histogram conventions: [a, b) bins except the last, [a, b]; a sample exactly on the
    upper edge is inside (in the last bin), one just beyond it is outside."""
    from dynopt.potentials import Harmonic

    edges = np.array([-1.0, 0.0, 1.0])
    q = np.array([-1.0, -0.5, 0.0, 1.0, 1.0, np.nextafter(1.0, 2.0), 0.25, -2.0])
    d = dg.gibbs_distance(q[:, None], Harmonic(1.0), 1.0, bins=edges, n_eff=8.0)
    hist, _ = np.histogram(q, edges)
    np.testing.assert_array_equal(d.empirical * q.size, hist)
    assert d.outside[0] == pytest.approx(2 / 8)


def test_estimate_agreement_allows_the_stated_bias_and_z_is_signed():
    """agrees: |value − target| <= n_se·se + bias (a known bias, e.g. a step-size error, is
    allowed on top of the statistical error); z = (value − target)/se."""
    est = dg.Estimate(1.0, 0.1)
    assert est.agrees(1.35) and not est.agrees(1.5)
    assert est.agrees(1.5, bias=0.1 + 1e-12) and not est.agrees(1.5, bias=0.09)
    assert est.agrees(1.5, n_se=5.0) and not est.agrees(1.35, n_se=3.0)
    assert est.z(0.8) == pytest.approx(2.0) and est.z(1.3) == pytest.approx(-3.0)
