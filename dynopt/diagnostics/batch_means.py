r"""Batch-means standard errors for correlated ``(chain, draw, ...)`` samples.

Each chain is cut into ``b`` consecutive batches of length ``L`` (the ``draw mod b`` leading
draws are dropped, they are the least equilibrated). By default ``b`` is chosen so that there are
about 32 batches in total, as long as possible: with 32 or more chains each chain is one batch
(independent chain means, the most robust choice), a single chain gets ⌊√n⌋ batches (at most 32).
With batch means :math:`\bar x_{c,j}`
(chain c, batch j; ``B = C·b`` of them) and their grand mean :math:`\bar x`,

.. math:: \widehat{\mathrm{SE}}(\bar x) = \sqrt{\frac{1}{B(B-1)}\sum_{c,j}
          (\bar x_{c,j} - \bar x)^2 } .

Batches of one chain are treated as independent samples, which is accurate when ``L`` is much
longer than the integrated autocorrelation time τ_int (the estimate is biased low by a relative
amount ≈ τ_int/L). For a ratio of means R = x̄/ȳ (the configurational temperature) the delta
method on batch means gives SE(R) = SE(x̄ − R ȳ)/|ȳ|.

| symbol | code |
|---|---|
| b | ``n_batches`` (per chain) |
| C | number of chains (axis 0) |
| L | draws per batch |

Reference: Flegal & Jones, "Batch means and spectral variance estimators in MCMC",
Ann. Statist. 38(2), 2010.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import check_int
from ._input import as_chains
from .estimate import Estimate

__all__ = ["batch_means_se", "default_n_batches", "estimate_mean", "estimate_ratio"]

#: Target total number of batches for the default.
TARGET_BATCHES = 32


def default_n_batches(n_draws: int, n_chains: int = 1) -> int:
    """Batches per chain: ⌈32/chains⌉, at most ⌊√draws⌋, and at least 2 in total.

    Long batches keep the batch means nearly independent; 32 batches in total give the standard
    error a relative precision of about 1/√(2·31) ≈ 13%.
    """
    b = min(math.ceil(TARGET_BATCHES / max(n_chains, 1)), max(1, math.isqrt(max(n_draws, 0))))
    if n_chains * b < 2:
        b = 2
    return int(max(b, 1))


def _batch_means(arr: np.ndarray, n_batches: int | None) -> np.ndarray:
    """Batch means, shape ``(chain * n_batches, ...)``."""
    n = arr.shape[1]
    if n_batches is None:
        b = default_n_batches(n, arr.shape[0])
    else:
        b = check_int("n_batches", n_batches, minimum=1)
    if b > n:
        raise ValueError(f"n_batches={b} is more than the {n} draws per chain")
    if arr.shape[0] * b < 2:
        raise ValueError(
            f"batch means need at least 2 batches in total, got {arr.shape[0]} chain(s) x "
            f"n_batches={b}"
        )
    length = n // b
    used = arr[:, n - b * length:]
    means = used.reshape(arr.shape[0], b, length, *arr.shape[2:]).mean(axis=2)
    return means.reshape(arr.shape[0] * b, *arr.shape[2:])


def _scalar(x: np.ndarray) -> Any:
    return float(x) if np.ndim(x) == 0 else x


def batch_means_se(x: Any, n_batches: int | None = None) -> Any:
    """Standard error of the overall mean of ``x`` by batch means.

    Args:
        x: Samples, ``(chain, draw)`` or ``(chain, draw, ...)`` (a 1-D array is one chain).
        n_batches: Batches per chain (default :func:`default_n_batches`: about 32 batches in
            total). Choose it so that a batch is much longer than the autocorrelation time.

    Returns:
        The standard error, a float (or an array over the trailing dimensions).

    Raises:
        ValueError: On non-finite input, or fewer than two batches in total.
    """
    arr = as_chains("x", x)
    means = _batch_means(arr, n_batches)
    return _scalar(np.sqrt(means.var(axis=0, ddof=1) / means.shape[0]))


def estimate_mean(x: Any, n_batches: int | None = None) -> Estimate:
    """The mean of ``x`` over chains and draws, with its batch-means standard error.

    Example:
        >>> import numpy as np
        >>> est = estimate_mean(np.random.default_rng(0).normal(size=(4, 10_000)))
        >>> est.agrees(0.0)
        True
    """
    arr = as_chains("x", x)
    means = _batch_means(arr, n_batches)
    value = means.mean(axis=0)  # the mean of the draws the batches use
    se = np.sqrt(means.var(axis=0, ddof=1) / means.shape[0])
    return Estimate(_scalar(value), _scalar(se))


def estimate_ratio(num: Any, den: Any, n_batches: int | None = None) -> Estimate:
    """R = mean(num)/mean(den) with its delta-method batch-means standard error.

    Args:
        num: Numerator samples, ``(chain, draw, ...)``.
        den: Denominator samples, same shape.
        n_batches: Batches per chain.

    Returns:
        :class:`Estimate` of the ratio of means. Where mean(den) is exactly 0 the ratio is
        undefined: its value is ±inf (NaN for 0/0) and its standard error NaN, per component.
    """
    a = as_chains("num", num)
    d = as_chains("den", den)
    if a.shape != d.shape:
        raise ValueError(f"num has shape {a.shape} but den has shape {d.shape}")
    ma = _batch_means(a, n_batches)
    md = _batch_means(d, n_batches)
    abar, dbar = ma.mean(axis=0), md.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = abar / dbar
        resid = ma - r * md
        se = np.sqrt(resid.var(axis=0, ddof=1) / ma.shape[0]) / np.abs(dbar)
    return Estimate(_scalar(r), _scalar(se))
