r"""Potential scale reduction factor R̂ (split, optionally rank-normalized).

Each chain is split into halves (2m chains of n draws). With W the mean within-chain variance
and B/n the variance of the chain means,

.. math:: \widehat{\mathrm{var}}^+ = \frac{n-1}{n} W + \frac{B}{n}, \qquad
          \hat R = \sqrt{\widehat{\mathrm{var}}^+ / W}.

``method="rank"`` returns max(R̂ of the rank-normalized draws, R̂ of the rank-normalized folded
draws |x − median|), which also detects chains that differ in scale (Vehtari et al., Bayesian
Analysis 16(2), 2021, section 4.1). The chains are split first and the ranks and the median are
taken over the split draws (the middle draw of an odd chain is dropped), as in the paper and
ArviZ, so both methods equal ``arviz.rhat`` to rounding (tests/test_arviz_parity.py); unlike
ArviZ, a single chain is accepted (its two halves are compared). R̂ < 1.01 is the usual
convergence criterion.

| symbol | code |
|---|---|
| m, n | chains, draws per half-chain |
| W, B | within- and between-chain variances |
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_choice
from ._input import as_chains
from ._rank import rank_normalize
from .autocorrelation import _split, _unit_scaled

__all__ = ["rhat"]

METHODS = ("split", "rank")


def _rhat_of(s: np.ndarray) -> np.ndarray:
    """R̂ of already split ``(2m, n, K)`` data."""
    s = _unit_scaled(s)
    n = s.shape[1]
    w = s.var(axis=1, ddof=1).mean(axis=0)
    between = s.mean(axis=1).var(axis=0, ddof=1)
    var_plus = w * (n - 1) / n + between
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(var_plus / w)


def rhat(x: Any, *, method: str = "split") -> Any:
    """Split-R̂ of ``(chain, draw, ...)`` samples.

    Args:
        x: Samples, ``(chain, draw)`` or ``(chain, draw, k...)``; a 1-D array is one chain
            (its two halves are compared). At least 4 draws per chain.
        method: ``"split"`` (classic split-R̂) or ``"rank"`` (rank-normalized and folded,
            Vehtari et al. 2021).

    Returns:
        R̂, a float or an array over the trailing dimensions (NaN for constant input).
    """
    check_choice("method", method, METHODS)
    arr = as_chains("x", x, min_draws=4)
    s = _split(arr)
    if method == "split":
        out = _rhat_of(s)
    else:
        folded = np.abs(s - np.median(s.reshape(-1, *s.shape[2:]), axis=0))
        out = np.maximum(_rhat_of(rank_normalize(s)), _rhat_of(rank_normalize(folded)))
    return float(out) if np.ndim(out) == 0 else out
