r"""Energy (or invariant) conservation: error size, secular drift and its standard error.

For chains c = 1..C with conserved quantity E_c(t_k) (the energy H for Hamiltonian dynamics, the
extended invariant for Nosé–Hoover systems) the error is ΔE_{c,k} = E_c(t_k) − E_c(t_0).
The secular drift is the common slope b of the fixed-effects least-squares fit

.. math:: \Delta E_{c,k} = a_c + b\,t_k + r_{c,k}, \qquad
          \hat b = \frac{\sum_{c,k} (t_k - \bar t)\,\Delta E_{c,k}}{C \sum_k (t_k - \bar t)^2},

(one intercept per chain, so chains that oscillate about different offsets do not inflate the
residuals). The residuals are autocorrelated, so the standard error inflates the ordinary one by
the residuals' integrated autocorrelation time τ̂ (Geyer, in records):

.. math:: \mathrm{SE}(\hat b) = \sqrt{\frac{\hat\sigma^2\,\hat\tau}{C \sum_k (t_k - \bar t)^2}} .

τ̂ is clamped at ≥ 1 (negatively correlated residuals do not shrink the SE). Calibration is
checked in tests/test_diagnostics.py (z-scores of a planted slope have unit variance).

A symplectic integrator has a bounded error and no drift: |b̂| is then within a few SE of 0
while the maximum error scales as h^p (p = 2 for leapfrog).

| symbol | code |
|---|---|
| max_c,k abs ΔE | ``max_abs_error`` |
| max_c,k abs ΔE / abs E_c(t_0) | ``max_rel_error`` |
| b̂, SE | ``slope``, ``slope_se`` |
| √(mean ΔE²) | ``rms_error`` |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._validation import as_finite_array
from ._input import as_chains, is_trajectory
from .autocorrelation import _geyer_tau

__all__ = ["EnergyDrift", "energy_drift"]


@dataclass(frozen=True)
class EnergyDrift:
    """Summary of E(t) − E(0) over all chains (see :func:`energy_drift`).

    Attributes:
        max_abs_error: max over chains and records of |E(t) − E(0)|.
        max_rel_error: max over chains of max_t |E(t) − E(0)| / |E(0)| (inf where E(0) = 0 and
            the error is not).
        slope: Secular drift dE/dt (per unit of ``t``), pooled over chains.
        slope_se: Its standard error (autocorrelation-corrected).
        rms_error: Root mean square of E(t) − E(0) over chains and records.
        final_abs_error: Mean over chains of |E(t_end) − E(0)|.
        n_chains: Number of chains.
        n_draws: Records per chain.
    """

    max_abs_error: float
    max_rel_error: float
    slope: float
    slope_se: float
    rms_error: float
    final_abs_error: float
    n_chains: int
    n_draws: int

    @property
    def slope_z(self) -> float:
        """slope/slope_se (NaN if the SE is 0 and the slope too)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(self.slope) / np.float64(self.slope_se))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def energy_drift(energy_or_traj: Any, t: Any = None) -> EnergyDrift:
    """Error and secular drift of a conserved quantity.

    Args:
        energy_or_traj: A :class:`dynopt.Trajectory` (its ``conserved``: the Nosé–Hoover
            invariant when the system has one, else the energy H, with its times ``t``), or an
            array ``(chain, draw)`` (a 1-D array is one chain).
        t: Record times ``(draw,)`` for an array input (default 0, 1, 2, ...: slope per record).

    Returns:
        :class:`EnergyDrift`.

    Example:
        >>> import numpy as np
        >>> t = np.linspace(0, 10, 1001)
        >>> e = 1.0 + 1e-3 * t + 1e-4 * np.sin(7 * t)
        >>> d = energy_drift(e, t)
        >>> round(d.slope, 6)
        0.001
    """
    if is_trajectory(energy_or_traj):
        if t is not None:
            raise ValueError("t must not be given with a Trajectory (its own times are used)")
        traj = energy_or_traj
        energy = as_chains("energy", traj.conserved, min_draws=3, allow_bool=False)
        t = traj.t
    else:
        energy = as_chains("energy", energy_or_traj, min_draws=3, allow_bool=False)
    if energy.ndim != 2:
        raise ValueError(f"energy must be (chain, draw), got shape {energy.shape}")
    c, n = energy.shape
    if t is None:
        times = np.arange(n, dtype=np.float64)
    else:
        times = as_finite_array("t", t, ndim=1)
        if times.shape[0] != n:
            raise ValueError(f"t has {times.shape[0]} entries but energy has {n} draws")
        if np.any(np.diff(times) <= 0):
            raise ValueError("t must be strictly increasing")
    err = energy - energy[:, :1]
    abs_err = np.abs(err)
    e0 = np.abs(energy[:, 0])
    per_chain_max = abs_err.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(per_chain_max == 0, 0.0, per_chain_max / e0)
    tc = times - times.mean()
    sxx = float((tc * tc).sum())
    centered = err - err.mean(axis=1, keepdims=True)
    slope = float((centered * tc).sum() / (c * sxx))
    resid = centered - slope * tc
    dof = max(c * n - c - 1, 1)
    sigma2 = float((resid * resid).sum() / dof)
    if sigma2 > 0:
        tau = float(_geyer_tau(resid[:, :, None])[0])
        tau = tau if np.isfinite(tau) else 1.0
    else:
        tau = 1.0
    slope_se = float(np.sqrt(sigma2 * max(tau, 1.0) / (c * sxx)))
    return EnergyDrift(
        max_abs_error=float(abs_err.max()),
        max_rel_error=float(rel.max()),
        slope=slope,
        slope_se=slope_se,
        rms_error=float(np.sqrt((err * err).mean())),
        final_abs_error=float(abs_err[:, -1].mean()),
        n_chains=int(c),
        n_draws=int(n),
    )
