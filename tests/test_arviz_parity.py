"""ESS (mean, bulk, tail, quantile), split/rank R̂ and MCSE equal ArviZ's; Trajectory.to_arviz().

The parity tests run against the real ``arviz`` package (skipped without it). ArviZ's numba
path is switched off for them: with numba installed, arviz 0.23's ``mcse(method="sd")`` fails on
numpy 2 (``float()`` of a 1-element array) and its variances differ from numpy's in the last bit.
The arrays cover both ends of Geyer's truncation: AR(1) chains, where the positive sequence stops
at a negative pair (the "improved estimation" term matters), and short random walks, where it runs
to the end of the chains (Stan's ⌊(n − 3)/2⌋ stopping pair matters: 5–7 % on ESS).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import signal

import dynopt
from dynopt import diagnostics as dg
from dynopt import potentials as P
from dynopt import systems as S

REL = 1e-8


def ar1(rng: np.random.Generator, phi: float, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary AR(1) along axis 1 of ``shape`` = (chain, draw, ...)."""
    e = rng.normal(size=shape)
    x0 = rng.normal(size=(shape[0], 1, *shape[2:])) / math.sqrt(1.0 - phi**2)
    out, _ = signal.lfilter([1.0], [1.0, -phi], e, axis=1, zi=phi * x0)
    return out


def random_walk(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.cumsum(rng.normal(size=shape), axis=1)


CASES = {
    "ar1-0.9-(4,1000)": lambda r: ar1(r, 0.9, (4, 1000)),
    "ar1-0.5-(4,1001)": lambda r: ar1(r, 0.5, (4, 1001)),  # odd draws: split drops the middle
    "ar1-0.95-(1,500)": lambda r: ar1(r, 0.95, (1, 500)),
    "ar1-0.99-(2,200)": lambda r: ar1(r, 0.99, (2, 200)),
    "ar1-0.3-(3,37,2)": lambda r: ar1(r, 0.3, (3, 37, 2)),  # trailing dims
    "ar1-0.7-(4,300,2,3)": lambda r: ar1(r, 0.7, (4, 300, 2, 3)),
    "rw-(4,100)": lambda r: random_walk(r, (4, 100)),
    "rw-(2,21)": lambda r: random_walk(r, (2, 21)),
    "rw-(3,60,2)": lambda r: random_walk(r, (3, 60, 2)),
}


@pytest.fixture(scope="module")
def az():
    arviz = pytest.importorskip("arviz")
    was = arviz.Numba.numba_flag
    arviz.Numba.disable_numba()
    yield arviz
    if was:
        arviz.Numba.enable_numba()


def arviz_stat(az, fn, x: np.ndarray, **kw) -> np.ndarray:
    """ArviZ's statistic over the trailing dims of a (chain, draw, ...) array."""
    ds = az.convert_to_dataset({"x": x})
    return np.asarray(fn(ds, **kw)["x"].values, dtype=float)


def assert_rel(ours, theirs, what: str) -> None:
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    assert ours.shape == theirs.shape, what
    assert np.all(np.isfinite(theirs)), what
    np.testing.assert_allclose(ours, theirs, rtol=REL, atol=0, err_msg=what)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("method", ["mean", "bulk", "tail"])
def test_ess_equals_arviz(az, name, method):
    x = CASES[name](np.random.default_rng(list(CASES).index(name)))
    assert_rel(dg.effective_sample_size(x, method=method), arviz_stat(az, az.ess, x, method=method),
               f"{method} ESS on {name}")


@pytest.mark.parametrize("name", ["ar1-0.5-(4,1001)", "ar1-0.3-(3,37,2)", "rw-(4,100)"])
@pytest.mark.parametrize("prob", [0.05, 0.3, (0.1, 0.8)])
def test_quantile_and_tail_ess_with_prob_equal_arviz(az, name, prob):
    x = CASES[name](np.random.default_rng(7))
    if isinstance(prob, tuple):
        ours = dg.effective_sample_size(x, method="tail", prob=prob)
        theirs = arviz_stat(az, az.ess, x, method="tail", prob=prob)
    else:
        ours = dg.effective_sample_size(x, method="quantile", prob=prob)
        theirs = arviz_stat(az, az.ess, x, method="quantile", prob=prob)
    assert_rel(ours, theirs, f"ESS prob={prob} on {name}")


@pytest.mark.parametrize("name", [n for n in CASES if "(1," not in n])  # ArviZ needs 2 chains
@pytest.mark.parametrize("method", ["split", "rank"])
def test_rhat_equals_arviz(az, name, method):
    x = CASES[name](np.random.default_rng(11))
    assert_rel(dg.rhat(x, method=method), arviz_stat(az, az.rhat, x, method=method),
               f"{method} R-hat on {name}")


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("method,prob", [("mean", None), ("sd", None), ("median", None),
                                         ("quantile", 0.2), ("quantile", 0.9)])
def test_mcse_equals_arviz(az, name, method, prob):
    x = CASES[name](np.random.default_rng(5))
    kw = {} if prob is None else {"prob": prob}
    assert_rel(dg.mcse(x, method=method, **kw), arviz_stat(az, az.mcse, x, method=method, **kw),
               f"{method} MCSE on {name}")


def test_old_truncation_differences_are_gone(az):
    """The two conventions that made dynopt's ESS differ from ArviZ's, each on its own array."""
    # AR(1) 0.5 with odd draws: the positive sequence stops at a negative pair whose even ρ̂ > 0.
    x = CASES["ar1-0.5-(4,1001)"](np.random.default_rng(0))
    assert float(dg.effective_sample_size(x)) == pytest.approx(
        float(az.ess(x, method="mean")), rel=1e-12)
    # Short random walk: all pairs positive, the sequence stops at pair ⌊(n − 3)/2⌋.
    x = random_walk(np.random.default_rng(0), (4, 100))
    tau = dg.integrated_autocorrelation_time(x)
    assert dg.effective_sample_size(x) * tau == pytest.approx(400, rel=1e-12)
    assert float(dg.effective_sample_size(x)) == pytest.approx(
        float(az.ess(x, method="mean")), rel=1e-12)


# --- without ArviZ -----------------------------------------------------------------------------

def test_mcse_of_iid_normal_draws():
    x = np.random.default_rng(3).normal(size=(4, 5000))
    s = x.size
    # MCSE(mean) = sd/√ESS exactly; for iid draws ESS ≈ S, so MCSE ≈ 1/√S (ESS's own error ~5 %).
    assert dg.mcse(x) == pytest.approx(x.std(ddof=1) / math.sqrt(dg.effective_sample_size(x)),
                                       rel=1e-14)
    assert dg.mcse(x) == pytest.approx(1 / math.sqrt(s), rel=0.1)
    # sd: Var(σ̂²) = 2σ⁴/S for a normal, so MCSE(σ̂) ≈ σ/√(2S).
    assert dg.mcse(x, method="sd") == pytest.approx(1 / math.sqrt(2 * s), rel=0.1)
    # median: asymptotic SE √(π/2)/√S (normal density at 0 is 1/√(2π)).
    assert dg.mcse(x, method="median") == pytest.approx(math.sqrt(math.pi / 2 / s), rel=0.15)
    for method in ("tail", "bulk"):
        assert 0.85 * s < dg.effective_sample_size(x, method=method) < 1.15 * s


def test_quantile_mcse_is_nan_where_the_quantile_ess_is_undefined():
    """Draws all on one side of the quantile (0/1 data whose median is 1; prob = 1): the NaN
    ESS gave NaN Beta points and the fallback indices 0 and S−1, i.e. half the range of the
    draws (0.5 and 3.58 here) as the standard error."""
    rng = np.random.default_rng(0)
    ones = (rng.random((4, 1000)) < 0.95).astype(float)
    assert math.isnan(dg.mcse(ones, method="median"))
    assert math.isnan(dg.mcse(rng.normal(size=(4, 1000)), method="quantile", prob=1.0))
    both = np.stack([ones, rng.normal(size=(4, 1000))], axis=-1)
    out = dg.mcse(both, method="median")
    assert math.isnan(out[0]) and 0 < out[1] < 0.1           # one column does not spoil another
    assert dg.mcse(np.zeros((2, 10, 0))).shape == (0,)       # as ess and rhat: no columns


def test_rank_based_ess_is_invariant_under_increasing_maps():
    # Bulk, tail and quantile ESS see only the ordering of the draws: exp(3x) changes the mean's
    # ESS but leaves them bit-identical (a value-based quantile or ranking bug breaks this).
    x = ar1(np.random.default_rng(4), 0.8, (4, 2000))
    y = np.exp(3.0 * x)
    for method, prob in (("bulk", None), ("tail", None), ("quantile", 0.3)):
        assert dg.effective_sample_size(y, method=method, prob=prob) == \
            dg.effective_sample_size(x, method=method, prob=prob)
    assert abs(dg.effective_sample_size(y) / dg.effective_sample_size(x) - 1) > 0.05


def test_ess_and_mcse_validate():
    x = np.random.default_rng(0).normal(size=(2, 50))
    with pytest.raises(ValueError, match="method='quantile' needs prob"):
        dg.effective_sample_size(x, method="quantile")
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 1.5"):
        dg.effective_sample_size(x, method="quantile", prob=1.5)
    with pytest.raises(ValueError, match="prob is only used"):
        dg.effective_sample_size(x, method="bulk", prob=0.1)
    with pytest.raises(ValueError, match="a pair"):
        dg.effective_sample_size(x, method="tail", prob=(0.1, 0.5, 0.9))
    with pytest.raises(ValueError, match="method must be one of"):
        dg.mcse(x, method="mode")
    with pytest.raises(ValueError, match="prob is required by method='quantile' and only by it"):
        dg.mcse(x, method="mean", prob=0.5)
    with pytest.raises(ValueError, match="prob is required"):
        dg.mcse(x, method="quantile")
    with pytest.raises(ValueError, match="at least 4 draws"):
        dg.mcse(x[:, :3])


# --- Trajectory.to_arviz -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def traj():
    system = S.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.5)
    return dynopt.integrate(system, "BAOAB", [0.1, 0.2], h=0.05, n_steps=2000, n_chains=4,
                            record_every=5, seed=1, backend="torch")


def test_to_arviz_holds_the_run(az, traj):
    idata = traj.to_arviz()
    assert isinstance(idata, az.InferenceData)
    post = idata.posterior
    np.testing.assert_array_equal(post["q"].values, traj.q)
    np.testing.assert_array_equal(post["p"].values, traj.p)
    assert post["q"].dims == ("chain", "draw", "dim") and post["p"].dims[-1] == "dim"
    np.testing.assert_array_equal(idata.sample_stats["energy"].values, traj.energy)
    np.testing.assert_array_equal(post["potential"].values, traj.extras["potential"])
    attrs = post.attrs
    assert attrs["h"] == traj.h and attrs["seed"] == 1 and attrs["record_every"] == 5
    np.testing.assert_allclose(attrs["t0"] + np.arange(traj.n_draws) * attrs["dt"], traj.t,
                               rtol=1e-12)
    # ArviZ's own diagnostics on the InferenceData equal dynopt's on the arrays.
    assert_rel(dg.effective_sample_size(traj.q, method="bulk"), az.ess(idata)["q"].values, "ess")
    assert_rel(dg.rhat(traj.q, method="rank"), az.rhat(idata)["q"].values, "rhat")


def test_to_arviz_without_arviz_names_the_package(traj, monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)  # `import arviz` now raises ImportError
    with pytest.raises(ImportError, match=r"needs the optional package arviz \(pip install arviz\)"):
        traj.to_arviz()
