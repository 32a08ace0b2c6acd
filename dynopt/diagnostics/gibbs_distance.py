r"""Distance between a histogram of samples and the exact Gibbs marginal.

With K histogram cells plus one cell for "outside the bin range", empirical cell frequencies
p̂ₖ and exact Gibbs cell probabilities pₖ (:func:`~dynopt.diagnostics.gibbs.bin_probabilities`):

.. math:: \mathrm{TV} = \tfrac12 \sum_k |\hat p_k - p_k|, \qquad
          \mathrm{KL}(\hat p\,\|\,p) = \sum_{k:\hat p_k>0} \hat p_k \log\frac{\hat p_k}{p_k}.

Even exact samples give a positive distance. The expected distance of a histogram whose cell
frequencies have standard errors SEₖ is about ½√(2/π) Σₖ SEₖ (TV, from E|p̂ₖ − pₖ| = √(2/π)·SEₖ)
and Σₖ SEₖ²/(2p̂ₖ) (KL, second order); this is reported as ``noise_floor``. By default SEₖ comes
from batch means of the cell indicators (:mod:`~dynopt.diagnostics.batch_means`), which accounts
for the autocorrelation of each cell separately (the slow well-to-well hopping of a double well
matters for the mass of each well, much less for the shape inside a well); with ``n_eff`` given
it is the multinomial √(pₖ(1 − pₖ)/n_eff). A sampler is consistent with the Gibbs measure at
this resolution when ``value`` is of the order of ``noise_floor``; a wrong measure shows up as a
value many times the floor.

| symbol | code |
|---|---|
| p̂, p | ``empirical``, ``exact`` (without the outside cell) |
| n_eff | ``n_eff`` |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import (
    as_finite_array,
    check_bool,
    check_choice,
    check_int,
    check_positive,
    short_repr,
)
from ._input import check_burn_in, is_trajectory
from .batch_means import default_n_batches
from .gibbs import _check_coords, _check_potential, bin_probabilities, check_edges, gibbs_support

__all__ = ["GibbsDistance", "gibbs_distance"]

METRICS = ("tv", "kl")


@dataclass(frozen=True)
class GibbsDistance:
    """Result of :func:`gibbs_distance`.

    Attributes:
        value: The distance.
        metric: ``"tv"`` or ``"kl"``.
        noise_floor: Expected distance from sampling noise alone (see the module docstring).
        cell_se: Standard error of each cell frequency (the outside cell last).
        n_samples: Number of samples histogrammed.
        coords: The coordinates.
        edges: Bin edges, one array per coordinate.
        empirical: Empirical bin probabilities (shape = number of bins per coordinate).
        exact: Exact Gibbs bin probabilities.
        outside: (empirical, exact) probability outside the bin range.

    With ``per_chain=True``, ``value``, ``noise_floor``, ``cell_se`` and the empirical parts are
    per chain (leading axis).
    """

    value: Any
    metric: str
    noise_floor: Any
    cell_se: np.ndarray
    n_samples: int
    coords: tuple[int, ...]
    edges: tuple[np.ndarray, ...]
    empirical: np.ndarray
    exact: np.ndarray
    outside: tuple[float, float]

    def __float__(self) -> float:
        return float(self.value)


def _temperature_of(traj: Any) -> float:
    tau = getattr(traj.system, "temperature", None)
    if tau is None:
        raise ValueError(
            f"{type(traj.system).__name__} has no temperature; pass temperature= explicitly"
        )
    return float(tau)


def gibbs_distance(
    q_or_traj: Any,
    potential: Any = None,
    temperature: float | None = None,
    coords: Sequence[int] | int = (0,),
    *,
    bins: Any = 50,
    metric: str = "tv",
    burn_in: int = 0,
    n_eff: float | None = None,
    n_batches: int | None = None,
    per_chain: bool = False,
) -> GibbsDistance:
    """Total variation (or KL) distance between the samples' histogram and the Gibbs marginal.

    Args:
        q_or_traj: Positions ``(chain, draw, dim)`` (or ``(samples, dim)``, one chain) or a
            :class:`dynopt.Trajectory` (its ``q``, potential and temperature).
        potential: The potential (default: the trajectory's).
        temperature: τ (default: the trajectory system's ``temperature``).
        coords: ``(i,)`` for a 1-D marginal or ``(i, j)`` for a 2-D one.
        bins: Number of bins per coordinate (over :func:`~dynopt.diagnostics.gibbs_support`),
            or explicit edges (an array for one coordinate, a pair of arrays for two).
        metric: ``"tv"`` (total variation, in [0, 1]) or ``"kl"`` (KL(empirical ‖ exact)).
        burn_in: Leading draws to discard.
        n_eff: If given, the noise floor uses multinomial cell errors with this many effective
            samples instead of batch means.
        n_batches: Batches per chain for the cell standard errors.
        per_chain: Compare each chain's histogram separately: ``value`` and ``noise_floor``
            become arrays over chains and ``empirical`` gets a leading chain axis. This exposes
            non-ergodic dynamics whose chains each stay on their own invariant set while the
            pooled histogram looks right (a single Nosé–Hoover thermostat on a harmonic
            oscillator, with random initial momenta).

    Returns:
        :class:`GibbsDistance` (``float(result)`` is the distance).
    """
    check_choice("metric", metric, METRICS)
    per_chain = check_bool("per_chain", per_chain)
    if is_trajectory(q_or_traj):
        traj = q_or_traj
        q = traj.q
        if np.shape(q)[-1] == 0:
            raise ValueError("this trajectory did not record the positions (observables= "
                             "without 'theta'); add 'theta' to observables=")
        potential = traj.system.potential if potential is None else potential
        temperature = _temperature_of(traj) if temperature is None else temperature
    else:
        q = q_or_traj
    if potential is None or temperature is None:
        raise ValueError("gibbs_distance needs potential= and temperature= for array input")
    tau = check_positive("temperature", temperature)
    _check_potential(potential)
    arr = as_finite_array("q", q, ndim=(2, 3))
    if arr.ndim == 2:  # (samples, dim): one chain
        arr = arr[None]
    potential.check_dim(arr.shape[2], "q")
    cs = _check_coords(coords, arr.shape[2])
    b = check_burn_in(burn_in, arr.shape[1])
    sel = arr[:, b:, list(cs)]
    edges = _edges(bins, potential, tau, cs)
    cells = _cells(sel, edges)  # (chain, draw) flat cell index, outside = K
    k_cells = int(np.prod([len(e) - 1 for e in edges]))
    exact = bin_probabilities(potential, tau, cs, edges)
    p = np.append(exact.ravel(), max(0.0, 1.0 - float(exact.sum())))
    groups = [cells[c:c + 1] for c in range(cells.shape[0])] if per_chain else [cells]
    values, floors, ses, emps = [], [], [], []
    for g in groups:
        p_hat = np.bincount(g.ravel(), minlength=k_cells + 1) / g.size
        if n_eff is None:
            se = _cell_se(g, k_cells + 1, n_batches)
        else:
            se = np.sqrt(p * (1.0 - p) / check_positive("n_eff", n_eff))
        value, floor = _distance(metric, p_hat, p, se)
        values.append(value)
        floors.append(floor)
        ses.append(se)
        emps.append(p_hat)
    emp = np.array(emps)
    shape = exact.shape
    if not per_chain:
        return GibbsDistance(values[0], metric, floors[0], ses[0], cells.size, cs, edges,
                             emp[0, :-1].reshape(shape), exact, (float(emp[0, -1]), float(p[-1])))
    return GibbsDistance(np.array(values), metric, np.array(floors), np.array(ses), cells.size,
                         cs, edges, emp[:, :-1].reshape(len(groups), *shape), exact,
                         (emp[:, -1], float(p[-1])))


def _distance(metric: str, p_hat: np.ndarray, p: np.ndarray, se: np.ndarray) -> tuple[float, float]:
    """(distance, noise floor) for cell probabilities including the outside cell."""
    if metric == "tv":
        value = 0.5 * float(np.abs(p_hat - p).sum())
        floor = 0.5 * np.sqrt(2.0 / np.pi) * float(se.sum())
        return value, floor
    mask = p_hat > 0
    with np.errstate(divide="ignore"):
        value = float((p_hat[mask] * np.log(p_hat[mask] / p[mask])).sum())
    # Σ Var(p̂ₖ)/(2pₖ) with the empirical p̂ₖ in the denominator: the same under the null,
    # and not inflated by cells the exact measure gives almost no mass when the samples are off.
    pos = p_hat > 0
    return value, float((se[pos] ** 2 / (2.0 * p_hat[pos])).sum())


def _cells(sel: np.ndarray, edges: tuple[np.ndarray, ...]) -> np.ndarray:
    """Flat histogram cell of each sample (``np.histogram`` conventions), K for outside."""
    idx = []
    inside = np.ones(sel.shape[:2], dtype=bool)
    for j, e in enumerate(edges):
        x = sel[..., j]
        i = np.searchsorted(e, x, side="right") - 1
        i[x == e[-1]] = len(e) - 2  # the last bin is closed on the right
        inside &= (i >= 0) & (i < len(e) - 1)
        idx.append(np.clip(i, 0, len(e) - 2))
    dims = tuple(len(e) - 1 for e in edges)
    flat = np.ravel_multi_index(tuple(idx), dims)
    return np.where(inside, flat, int(np.prod(dims)))


def _cell_se(cells: np.ndarray, n_cells: int, n_batches: int | None) -> np.ndarray:
    """Batch-means standard error of each cell frequency."""
    c, n = cells.shape
    b = default_n_batches(n, c) if n_batches is None else check_int("n_batches", n_batches,
                                                                     minimum=1)
    if b > n or c * b < 2:
        raise ValueError(f"cannot form batches: {c} chain(s) x {n} draws with n_batches={b}")
    length = n // b
    used = cells[:, n - b * length:].reshape(c * b, length)
    batch = np.repeat(np.arange(c * b), length)
    freq = np.bincount(batch * n_cells + used.ravel(), minlength=c * b * n_cells)
    freq = freq.reshape(c * b, n_cells) / length
    return np.sqrt(freq.var(axis=0, ddof=1) / (c * b))


def _edges(bins: Any, potential: Any, tau: float, cs: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        nb = check_int("bins", bins, minimum=1)
        return tuple(np.linspace(lo, hi, nb + 1) for lo, hi in gibbs_support(potential, tau, cs))
    raw = (bins,) if len(cs) == 1 else tuple(bins)
    if len(raw) != len(cs):
        raise ValueError(f"bins must give one edge array per coordinate ({len(cs)}), got "
                         f"{short_repr(bins)}")
    return tuple(check_edges("bins", e) for e in raw)
