r"""Effective sample size of ``(chain, draw, ...)`` samples (Vehtari et al. 2021; Stan, ArviZ).

.. math:: \widehat{\mathrm{ESS}} = \frac{m n}{\hat\tau},

with τ̂ the multi-chain Geyer-truncated integrated autocorrelation time of the split chains
(:func:`~dynopt.diagnostics.integrated_autocorrelation_time`; 2m half-chains of ⌊n/2⌋
draws, so for odd n the middle draw of each chain is not counted: mn stands for 2m⌊n/2⌋).
The methods differ only in what τ̂ is computed of:

| ``method`` | τ̂ of | ESS of |
|---|---|---|
| ``"mean"`` (default) | the split draws x | the mean; SE(x̄) = sd/√ESS |
| ``"bulk"`` | rank-normalized split draws z = Φ⁻¹((r − 3/8)/(S + 1/4)) | the bulk (robust) |
| ``"quantile"`` | the indicator 1{x ≤ q̂_p} of the split draws | the p-quantile |
| ``"tail"`` | min of ``"quantile"`` at p = 0.05 and 0.95 (``prob``) | the 5 % and 95 % quantiles |

q̂_p is the Hyndman–Fan type-7 sample quantile (R's and numpy's default) of all draws. Chains are
split before ranking (the middle draw of an odd chain is dropped), as in Vehtari et al. (2021,
Bayesian Analysis 16(2), sections 4.2–4.3) and ArviZ, so every method equals ``arviz.ess`` with
the same ``method`` to rounding (tests/test_arviz_parity.py). Differences from ArviZ: non-finite
input raises instead of returning NaN, and a constant column gives NaN (ArviZ returns the number
of draws). For an AR(1) chain with coefficient φ, the mean's ESS ≈ n(1 − φ)/(1 + φ).

| symbol | code |
|---|---|
| m, n | chains, draws |
| τ̂ | ``integrated_autocorrelation_time`` |
| p | ``prob`` |
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_choice, check_probability, short_repr
from ._input import as_chains
from ._rank import rank_normalize
from .autocorrelation import _flat, _geyer_tau, _split

__all__ = ["effective_sample_size"]

METHODS = ("mean", "bulk", "tail", "quantile")


def _split_chains(arr: np.ndarray) -> np.ndarray:
    """Half-chains ``(2m, n // 2, K)`` of ``(m, n, K)`` data (needs n ≥ 4)."""
    if arr.shape[1] < 4:
        raise ValueError(f"split chains need at least 4 draws per chain, got {arr.shape[1]}")
    return _split(arr)


def _ess_of(split: np.ndarray) -> np.ndarray:
    """ESS ``(K,)`` of already split ``(m, n, K)`` data."""
    return split.shape[0] * split.shape[1] / _geyer_tau(split)


def sample_quantile(flat: np.ndarray, prob: float) -> np.ndarray:
    """Type-7 quantile of ``(chain, draw, K)`` data over chains and draws, shape ``(K,)``.

    Computed by :func:`scipy.stats.mstats.mquantiles` with α = β = 1 (Hyndman & Fan 1996,
    definition 7), the convention ArviZ uses, so the indicator 1{x ≤ q̂} agrees draw for draw.
    """
    from scipy.stats import mstats  # lazy: keeps `import dynopt` fast

    pooled = flat.reshape(-1, flat.shape[2])
    return np.asarray(mstats.mquantiles(pooled, [prob], alphap=1, betap=1, axis=0))[0]


def quantile_ess(flat: np.ndarray, prob: float) -> np.ndarray:
    """ESS ``(K,)`` of the p-quantile of ``(chain, draw, K)`` data."""
    indicator = (flat <= sample_quantile(flat, prob)).astype(float)
    return _ess_of(_split_chains(indicator))


def _tail_probs(prob: Any) -> tuple[float, float]:
    if prob is None:
        return 0.05, 0.95
    if isinstance(prob, (tuple, list)):
        if len(prob) != 2:
            raise ValueError("prob must be a probability or a pair (low, high), got "
                             f"{short_repr(prob)}")
        return check_probability("prob[0]", prob[0]), check_probability("prob[1]", prob[1])
    p = check_probability("prob", prob)
    return p, 1.0 - p


def effective_sample_size(x: Any, *, method: str = "mean", prob: Any = None) -> Any:
    """Multi-chain effective sample size.

    Args:
        x: Samples, ``(chain, draw)`` or ``(chain, draw, k...)`` (vectorized over trailing
            dimensions); a 1-D array is one chain. At least 4 draws per chain.
        method: ``"mean"`` (split chains, not rank-normalized), ``"bulk"`` (rank-normalized
            split chains, ArviZ's default), ``"tail"`` or ``"quantile"`` (module docstring).
        prob: For ``"quantile"``, the probability p (required). For ``"tail"``, a pair
            (low, high) or one p meaning (p, 1 − p); default (0.05, 0.95).

    Returns:
        ESS, a float or an array over the trailing dimensions (NaN for constant input).

    Raises:
        ValueError: On an unknown method, a missing or out-of-range ``prob``, fewer than 4 draws
            or non-finite input.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 1000))
        >>> 3000 < effective_sample_size(x) < 5000
        True
    """
    check_choice("method", method, METHODS)
    arr = as_chains("x", x, min_draws=4)
    flat, trailing = _flat(arr)
    if method in ("mean", "bulk") and prob is not None:
        raise ValueError("prob is only used by method='tail' or 'quantile', got "
                         f"prob={short_repr(prob)}")
    if method == "mean":
        ess = _ess_of(_split_chains(flat))
    elif method == "bulk":
        ess = _ess_of(rank_normalize(_split_chains(flat)))
    elif method == "quantile":
        if prob is None:
            raise ValueError("method='quantile' needs prob=, the probability of the quantile")
        ess = quantile_ess(flat, check_probability("prob", prob))
    else:
        low, high = _tail_probs(prob)
        # fmin: a tail whose indicator is constant (NaN) leaves the other tail's value
        ess = np.fmin(quantile_ess(flat, low), quantile_ess(flat, high))
    ess = ess.reshape(trailing)
    return float(ess) if np.ndim(ess) == 0 else ess
