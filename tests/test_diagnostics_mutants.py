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
