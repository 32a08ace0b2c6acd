r"""Effective sample size of ``(chain, draw, ...)`` samples (Stan / ArviZ, Geyer truncation).

.. math:: \widehat{\mathrm{ESS}} = \frac{m n}{\hat\tau},

with τ̂ the multi-chain initial-monotone integrated autocorrelation time of the split chains
(:func:`~dynopt.diagnostics.integrated_autocorrelation_time`). ``method="bulk"`` applies it to
rank-normalized draws (Vehtari et al. 2021), which is robust to heavy tails; the default
``"mean"`` is the ESS of the mean itself, the one that gives Monte Carlo standard errors
SE = sd/√ESS. For an AR(1) chain with coefficient φ, ESS ≈ n(1 − φ)/(1 + φ).

| symbol | code |
|---|---|
| m, n | chains, draws |
| τ̂ | ``integrated_autocorrelation_time`` |
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_choice
from ._input import as_chains
from ._rank import rank_normalize
from .autocorrelation import _tau

__all__ = ["effective_sample_size"]

METHODS = ("mean", "bulk")


def effective_sample_size(x: Any, *, method: str = "mean") -> Any:
    """Multi-chain effective sample size.

    Args:
        x: Samples, ``(chain, draw)`` or ``(chain, draw, k...)`` (vectorized over trailing
            dimensions); a 1-D array is one chain. At least 4 draws per chain.
        method: ``"mean"`` (split chains, not rank-normalized) or ``"bulk"`` (rank-normalized
            split chains, ArviZ's default).

    Returns:
        ESS, a float or an array over the trailing dimensions (NaN for constant input).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 1000))
        >>> 3000 < effective_sample_size(x) < 5000
        True
    """
    check_choice("method", method, METHODS)
    arr = as_chains("x", x, min_draws=4)
    if method == "bulk":
        arr = rank_normalize(arr)
    tau, total = _tau(arr, split=True)
    ess = total / tau
    return float(ess) if np.ndim(ess) == 0 else ess
