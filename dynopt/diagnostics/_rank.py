"""Rank normalization (Vehtari, Gelman, Simpson, Carpenter, Bürkner, Bayesian Analysis 16(2),
2021): pooled ranks r over all chains and draws, z = Φ⁻¹((r − 3/8)/(S + 1/4))."""

from __future__ import annotations

import numpy as np

__all__ = ["rank_normalize"]


def rank_normalize(arr: np.ndarray) -> np.ndarray:
    """Rank-normalize ``(chain, draw, ...)`` data jointly over chains and draws."""
    from scipy import special, stats  # lazy: keeps `import dynopt` fast

    m, n = arr.shape[:2]
    flat = arr.reshape(m * n, -1)
    ranks = stats.rankdata(flat, method="average", axis=0)
    z = special.ndtri((ranks - 0.375) / (m * n + 0.25))
    return z.reshape(arr.shape)
