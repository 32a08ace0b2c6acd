"""Input coercion shared by the diagnostics: ``(chain, draw, ...)`` arrays and trajectories."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_finite_array, check_int, short_repr
from ..trajectory import Trajectory

__all__ = ["as_chains", "check_burn_in", "is_trajectory"]


def is_trajectory(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`dynopt.Trajectory`."""
    return isinstance(obj, Trajectory)


def as_chains(name: str, x: Any, *, min_draws: int = 1, allow_bool: bool = True) -> np.ndarray:
    """``x`` as a finite float64 array in ``(chain, draw, ...)`` layout.

    A 1-D input is one chain, ``(draw,)`` → ``(1, draw)``. Booleans are taken as 0/1 (an
    indicator's chain, e.g. for the ESS of a probability, as ArviZ takes them) unless
    ``allow_bool=False`` (energies, momenta: quantities a bool cannot stand for).

    Raises:
        ValueError: On NaN/inf, a 0-d input, chains of different lengths or fewer than
            ``min_draws`` draws.
        TypeError: If ``x`` is not array-like.
    """
    _check_equal_lengths(name, x)
    arr = as_finite_array(name, x, allow_bool=allow_bool)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a draw axis, got a scalar {float(arr)!r}")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no chains (shape {arr.shape}; layout is (chain, draw, ...))")
    if arr.shape[1] < min_draws:
        raise ValueError(
            f"{name} needs at least {min_draws} draws per chain, got shape {arr.shape} "
            "(layout is (chain, draw, ...))"
        )
    return arr


def _check_equal_lengths(name: str, x: Any) -> None:
    """Chains given as a list of different lengths: say so (numpy's ragged-array error came
    out as "must be array-like of real numbers" with the whole list)."""
    if not isinstance(x, list | tuple) or len(x) < 2:
        return
    lengths = [len(c) if hasattr(c, "__len__") and np.ndim(c) > 0 else None for c in x]
    if None not in lengths and len(set(lengths)) > 1:
        raise ValueError(
            f"{name} has chains of different lengths {short_repr(lengths)}; the "
            f"(chain, draw, ...) layout needs one length: trim the chains to a common number of "
            f"draws (e.g. the shortest, {min(lengths)})")


def check_burn_in(burn_in: Any, n_draws: int) -> int:
    """A number of leading draws to discard, leaving at least two."""
    b = check_int("burn_in", burn_in, minimum=0)
    if b > n_draws - 2:
        raise ValueError(f"burn_in={b} leaves fewer than 2 of the {n_draws} draws")
    return b
