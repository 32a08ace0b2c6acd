r"""Barrier crossings: transitions between two metastable states with hysteresis.

A record is in state −1 when x ≤ ``lower``, +1 when x ≥ ``upper``, and keeps its previous state
in between; a crossing is a change of state. The hysteresis band stops recrossings of the barrier
top from being counted many times. For the double well U = (q² − 1)² (minima ±1, barrier at 0)
``levels=(-0.5, 0.5)`` counts committed transitions between the wells. Crossings are counted
between *records*: with ``record_every`` > 1, excursions that leave and come back between two
records are missed.

| symbol | code |
|---|---|
| lower, upper | ``levels`` |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import short_repr
from ._input import as_chains

__all__ = ["barrier_crossings"]


def barrier_crossings(x: Any, levels: Sequence[float] = (-0.5, 0.5)) -> np.ndarray:
    """Number of committed crossings per chain.

    Args:
        x: A scalar observable, ``(chain, draw)`` (a 1-D array is one chain).
        levels: ``(lower, upper)`` with lower < upper.

    Returns:
        Integer counts, shape ``(chain,)``.

    Example:
        >>> barrier_crossings([1.0, 0.1, -0.1, 0.2, -0.9, -1.0, 0.8]).tolist()
        [2]
    """
    arr = as_chains("x", x, min_draws=1)
    if arr.ndim != 2:
        raise ValueError(f"x must be (chain, draw), got shape {arr.shape}")
    try:
        lower, upper = (float(v) for v in levels)
    except (TypeError, ValueError):
        raise TypeError(f"levels must be a pair of numbers, got {short_repr(levels)}") from None
    if not lower < upper:
        raise ValueError(f"levels must satisfy lower < upper, got {short_repr(levels)}")
    state = np.where(arr >= upper, 1, np.where(arr <= lower, -1, 0)).astype(np.int8)
    idx = np.where(state != 0, np.arange(arr.shape[1])[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(state, idx, axis=1)
    change = (filled[:, 1:] != filled[:, :-1]) & (filled[:, :-1] != 0)
    return change.sum(axis=1)
