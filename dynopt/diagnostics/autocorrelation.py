r"""Autocorrelation and the integrated autocorrelation time (Geyer's initial monotone sequence).

For one chain :math:`x_1..x_n` with mean :math:`\bar x`, the (biased, FFT-computed)
autocovariance and autocorrelation are

.. math:: \hat c_t = \frac1n \sum_{i=1}^{n-t} (x_i - \bar x)(x_{i+t} - \bar x), \qquad
          \hat\rho_t = \hat c_t / \hat c_0 .

With several chains the integrated autocorrelation time uses the multi-chain combination of
Stan / ArviZ (Vehtari et al. 2021, eq. 10): with W the mean within-chain variance and
:math:`\widehat{\mathrm{var}}^+ = \frac{n-1}{n}W + B/n` (B/n the variance of the chain means),

.. math:: \hat\rho_t = 1 - \frac{W - \overline{\hat c_t}}{\widehat{\mathrm{var}}^+}, \qquad
          P_k = \hat\rho_{2k} + \hat\rho_{2k+1}, \qquad
          \hat\tau = -1 + 2\sum_{k=0}^{K-1} \tilde P_k + \hat\rho^{+}_{2K},

Geyer's (Statist. Sci. 7(4), 1992) truncation as Stan and ArviZ implement it (Vehtari et al.
2021, eq. 10 and the reference code of the paper):

* initial positive sequence: K is the first k ≥ 1 with P_k ≤ 0, or the last pair that starts
  before draw n − 3 (k ≤ ⌊(n − 3)/2⌋) if every pair up to there is positive;
* initial monotone sequence: :math:`\tilde P_k = \min(P_0, \dots, P_k)`;
* :math:`\hat\rho^{+}_{2K}` ("improved estimation"): the even autocorrelation of the stopping
  pair is added once when it is positive (or when P_K ≥ 0), else nothing.

τ̂ is capped below at 1/log₁₀(mn), as in Stan, so that ESS ≤ mn·log₁₀(mn) for antithetic chains.
With these conventions ``effective_sample_size`` equals ``arviz.ess`` to rounding (tested in
tests/test_arviz_parity.py). For an AR(1) process with coefficient φ, τ = (1 + φ)/(1 − φ).

| symbol | code |
|---|---|
| m, n | chains, draws (axes 0 and 1) |
| ρ̂_t | ``autocorrelation(x)[t]`` |
| τ̂ | ``integrated_autocorrelation_time(x)`` (in draws) |
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import check_bool, check_int
from ._input import as_chains

__all__ = ["autocorrelation", "autocovariance", "integrated_autocorrelation_time"]


def _flat(arr: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(chain, draw, ...)`` → ``(chain, draw, K)`` plus the trailing shape."""
    trailing = arr.shape[2:]
    return arr.reshape(arr.shape[0], arr.shape[1], -1), trailing


def autocovariance(x: Any) -> np.ndarray:
    """Biased autocovariance ĉ_t of each chain by FFT, same shape as ``x`` (lag on axis 1)."""
    from scipy import fft as sfft  # lazy: keeps `import dynopt` fast

    arr = as_chains("x", x, min_draws=2)
    n = arr.shape[1]
    centered = arr - arr.mean(axis=1, keepdims=True)
    nfft = sfft.next_fast_len(2 * n, real=True)
    spec = sfft.rfft(centered, n=nfft, axis=1)
    acov = sfft.irfft(spec * np.conj(spec), n=nfft, axis=1)[:, :n]
    return acov / n


def autocorrelation(x: Any, max_lag: int | None = None, *, average: bool = True) -> np.ndarray:
    """Normalized autocorrelation ρ̂_t, per chain and averaged over chains.

    Args:
        x: Samples, ``(chain, draw)`` or ``(chain, draw, k...)``; a 1-D array is one chain.
        max_lag: Largest lag returned (default: draw − 1).
        average: Average over chains (default) or return each chain's ACF.

    Returns:
        ``(max_lag + 1, k...)`` when averaged, else ``(chain, max_lag + 1, k...)``. Constant
        chains give NaN (the autocorrelation is undefined).
    """
    average = check_bool("average", average)
    arr = as_chains("x", x, min_draws=2)
    n = arr.shape[1]
    lag = n - 1 if max_lag is None else check_int("max_lag", max_lag, minimum=0)
    lag = min(lag, n - 1)
    acov = autocovariance(arr)[:, : lag + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = acov / acov[:, :1]
    return rho.mean(axis=0) if average else rho


def _split(arr: np.ndarray) -> np.ndarray:
    """Split each chain in two halves (dropping the middle draw of odd lengths)."""
    half = arr.shape[1] // 2
    return np.concatenate([arr[:, :half], arr[:, arr.shape[1] - half:]], axis=0)


def _power_of_two_scale(arr: np.ndarray) -> np.ndarray:
    """Per K, the power of two nearest above the largest magnitude of ``(chain, draw, K)``
    data (1 where that is 0 or not finite). Dividing by it is exact."""
    peak = np.abs(arr).max(axis=(0, 1))
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(peak) & (peak > 0)
    return np.ldexp(1.0, np.frexp(np.where(ok, peak, 1.0))[1])


def _unit_scaled(arr: np.ndarray) -> np.ndarray:
    """``(chain, draw, K)`` data divided, per K, by :func:`_power_of_two_scale`: exact (the
    scale-free statistics, τ̂ and R̂, are unchanged bit for bit at ordinary scales), and
    their squared sums no longer overflow beyond |x| ≈ 1e150 or underflow below 1e-160."""
    return arr / _power_of_two_scale(arr)


def _geyer_tau(arr: np.ndarray) -> np.ndarray:
    """Multi-chain initial-monotone τ̂ for ``(chain, draw, K)`` input, shape ``(K,)``."""
    arr = _unit_scaled(arr)
    m, n, _ = arr.shape
    acov = autocovariance(arr)  # (m, n, K)
    chain_mean = arr.mean(axis=1)
    w = acov[:, 0].mean(axis=0) * n / (n - 1)
    var_plus = w * (n - 1) / n
    if m > 1:
        var_plus = var_plus + chain_mean.var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (w - acov.mean(axis=0)) / var_plus  # (n, K)
    rho[0] = 1.0
    return _truncated_tau(rho, m * n)


def _truncated_tau(rho: np.ndarray, total: int) -> np.ndarray:
    """τ̂ from the multi-chain ρ̂ ``(n, K)``: Geyer's initial positive and monotone sequences
    with Stan's stopping rule and "improved estimation" term (module docstring)."""
    n = rho.shape[0]
    n_pairs = n // 2
    pairs = rho[: 2 * n_pairs].reshape(n_pairs, 2, -1).sum(axis=1)  # P_k, (n_pairs, K)
    k = np.arange(n_pairs)[:, None]
    k_max = max((n - 3) // 2, 0)  # the last pair the positive sequence may reach
    stop = ((pairs <= 0) & (k >= 1)) | (k == k_max)
    k_stop = np.where(pairs[0] > 0, np.argmax(stop, axis=0), 0)  # K, (K,)
    monotone = np.minimum.accumulate(pairs, axis=0)
    head = np.where(k < k_stop, monotone, 0.0).sum(axis=0)
    rho_even = np.take_along_axis(rho, 2 * k_stop[None], axis=0)[0]
    pair_stop = np.take_along_axis(pairs, k_stop[None], axis=0)[0]
    tail = np.where((rho_even > 0) | (pair_stop >= 0), rho_even, 0.0)
    tau = np.maximum(-1.0 + 2.0 * head + tail, 1.0 / math.log10(total))
    return np.where(np.isfinite(rho).all(axis=0), tau, np.nan)


def _tau(arr: np.ndarray, split: bool) -> tuple[np.ndarray, int]:
    """τ̂ over trailing dims and the number of draws it refers to."""
    flat, trailing = _flat(arr)
    if split:
        if flat.shape[1] < 4:
            raise ValueError(f"split chains need at least 4 draws per chain, got {flat.shape[1]}")
        flat = _split(flat)
    tau = _geyer_tau(flat).reshape(trailing)
    return tau, flat.shape[0] * flat.shape[1]


def integrated_autocorrelation_time(x: Any, *, split: bool = True) -> Any:
    """Integrated autocorrelation time τ̂ = 1 + 2Σ_{t≥1} ρ_t (Geyer initial monotone sequence).

    Args:
        x: Samples, ``(chain, draw)`` or ``(chain, draw, k...)``; a 1-D array is one chain.
        split: Split each chain in halves first (as ArviZ/Stan do), so that drifting chains
            show up as a larger τ̂.

    Returns:
        τ̂ in units of draws, a float or an array over the trailing dimensions; NaN for
        constant input. With ``split=True``, ``effective_sample_size(x) == S / τ̂`` for the S
        draws of the split chains (all draws less the middle draw of each odd-length chain:
        4 × 1000 for 4 chains of 1001 draws).
    """
    split = check_bool("split", split)
    arr = as_chains("x", x, min_draws=4)
    tau, _ = _tau(arr, split)
    return float(tau) if np.ndim(tau) == 0 else tau
