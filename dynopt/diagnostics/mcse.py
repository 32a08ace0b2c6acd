r"""Monte Carlo standard errors from the effective sample size (Vehtari et al. 2021, §4.3).

For S draws over all chains, with the ESS of :func:`~dynopt.diagnostics.effective_sample_size`:

.. math::
    \mathrm{MCSE}(\bar x) &= \frac{s}{\sqrt{\mathrm{ESS}_{\text{mean}}(x)}}, \qquad
        s^2 = \frac{1}{S-1}\sum (x - \bar x)^2, \\
    \mathrm{MCSE}(\widehat{\mathrm{sd}}) &= \sqrt{\frac{\overline{d^2} - \bar d^{\,2}}
        {4\,\bar d\;\mathrm{ESS}_{\text{mean}}(d)}}, \qquad d = (x - \bar x)^2
        \quad\text{(delta method: Var}(\hat\sigma^2)/(4\sigma^2)), \\
    \mathrm{MCSE}(\hat q_p) &= \tfrac12\big(x_{(\lceil b_+ S - 1\rceil)} -
        x_{(\lfloor b_- S - 1\rfloor)}\big),

where for the quantile :math:`b_\mp` are the 15.87 % and 84.13 % points (±1 standard normal)
of Beta(ESS_p·p + 1, ESS_p·(1 − p) + 1), the posterior of the probability mass below q̂_p given
ESS_p = ESS of the indicator 1{x ≤ q̂_p}, mapped back through the sorted draws x_(i)
(0-based; indices clipped to [0, S − 1]). These are ArviZ's ``az.mcse`` methods ``"mean"``,
``"sd"``, ``"median"`` and ``"quantile"``; they agree to rounding (tests/test_arviz_parity.py).
For error bars of long correlated runs the project's tests use batch means
(:func:`~dynopt.diagnostics.batch_means_se`), which needs no truncation rule.

| symbol | code |
|---|---|
| S | chains × draws |
| p | ``prob`` |
| ESS_mean, ESS_p | ``effective_sample_size(..., method="mean" / "quantile")`` |
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_choice, check_probability, short_repr
from ._input import as_chains
from .autocorrelation import _flat, _power_of_two_scale
from .ess import _ess_of, _split_chains, quantile_ess

__all__ = ["mcse"]

METHODS = ("mean", "sd", "median", "quantile")

#: Standard normal CDF at −1 and +1: the ±1 SE band of the quantile's Beta posterior.
_ONE_SIGMA = (0.1586553, 0.8413447)


def _mcse_quantile(flat: np.ndarray, prob: float) -> np.ndarray:
    from scipy import stats  # lazy: keeps `import dynopt` fast

    ess = quantile_ess(flat, prob)
    pooled = np.sort(flat.reshape(-1, flat.shape[2]), axis=0)
    size = pooled.shape[0]
    out = np.empty(flat.shape[2])
    for j, e in enumerate(ess):
        if not np.isfinite(e):  # every draw on one side of the quantile: no Beta band
            out[j] = np.nan
            continue
        with np.errstate(invalid="ignore"):
            lo, hi = stats.beta.ppf(_ONE_SIGMA, e * prob + 1.0, e * (1.0 - prob) + 1.0) * size - 1
        i_lo = int(np.floor(np.nanmax((lo, 0))))
        i_hi = int(np.ceil(np.nanmin((hi, size - 1))))
        out[j] = (pooled[i_hi, j] - pooled[i_lo, j]) / 2.0
    return out


def mcse(x: Any, *, method: str = "mean", prob: float | None = None) -> Any:
    """Monte Carlo standard error of the mean, sd, median or a quantile of the draws.

    Args:
        x: Samples, ``(chain, draw)`` or ``(chain, draw, k...)``; a 1-D array is one chain.
            At least 4 draws per chain.
        method: ``"mean"``, ``"sd"``, ``"median"`` or ``"quantile"``.
        prob: The probability of the quantile, required by (and only used by)
            ``method="quantile"``.

    Returns:
        The MCSE, a float or an array over the trailing dimensions.

    Raises:
        ValueError: On an unknown method, a missing/extra/out-of-range ``prob``, fewer than 4
            draws or non-finite input.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 1000))
        >>> 0.01 < mcse(x) < 0.02          # ≈ 1/√4000
        True
    """
    check_choice("method", method, METHODS)
    if (method == "quantile") != (prob is not None):
        raise ValueError(f"prob is required by method='quantile' and only by it, got "
                         f"method={method!r}, prob={short_repr(prob)}")
    arr = as_chains("x", x, min_draws=4)
    flat, trailing = _flat(arr)
    if flat.shape[2] == 0:  # no columns: nothing to estimate (as ess and rhat)
        return np.zeros(trailing)
    # Squares (x² for the sd, d² = x⁴ for the sd's MCSE) under/overflow far from unit scale
    # (|x| ≳ 1e154 or ≲ 1e-160; for d², 1e77 and 1e-77): work on the draws divided by a power
    # of two near their largest magnitude (exact, so results at ordinary scales are unchanged
    # bit for bit) and scale the MCSE back
    if method == "mean":
        scale = _power_of_two_scale(flat)
        sd = scale * (flat / scale).reshape(-1, flat.shape[2]).std(axis=0, ddof=1)
        out = sd / np.sqrt(_ess_of(_split_chains(flat)))
    elif method == "sd":
        centered = flat - flat.mean(axis=(0, 1))
        scale = _power_of_two_scale(centered)
        d = (centered / scale) ** 2
        dbar = d.mean(axis=(0, 1))
        var_var = ((d**2).mean(axis=(0, 1)) - dbar**2) / _ess_of(_split_chains(d))
        out = scale * np.sqrt(var_var / dbar / 4.0)
    else:
        p = 0.5 if method == "median" else check_probability("prob", prob)
        out = _mcse_quantile(flat, p)
    out = out.reshape(trailing)
    return float(out) if np.ndim(out) == 0 else out
