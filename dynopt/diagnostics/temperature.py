r"""Kinetic and configurational temperature estimators.

.. math:: T_\mathrm{kin} = \frac{\langle p^\top M^{-1} p\rangle}{N}, \qquad
          T_\mathrm{conf} = \frac{\langle |\nabla U(q)|^2 \rangle}{\langle \Delta U(q)\rangle}.

Both equal τ = k_BT under the canonical measure ∝ exp(−(U + pᵀM⁻¹p/2)/τ): the first by
equipartition, the second by integration by parts, ∫ |∇U|² e^{−U/τ} = τ ∫ ΔU e^{−U/τ}, for any
smooth U growing at infinity (Rugh, PRL 78, 1997; Braga & Travis, JCP 123, 2005). A discretization
biases them differently: BAOAB's integer-step kinetic temperature carries an O(h²) bias
(τ(1 − h²ω²/4) on a harmonic potential) while its configurational averages are much more accurate
(langevin-thermostats.md §5.2).

Standard errors are batch means (``T_kin``) and the delta method on batch means of the ratio
(``T_conf``), see :mod:`dynopt.diagnostics.batch_means`.

| symbol | code |
|---|---|
| p, M | ``p`` (or ``traj.p``), ``mass`` (or ``traj.system.mass``) |
| U, ∇U, ΔU | ``potential.value/grad/laplacian`` (array form) |
| N | number of coordinates (the last axis) |
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_finite_array
from ._input import as_chains, check_burn_in, is_trajectory
from .batch_means import estimate_mean, estimate_ratio
from .estimate import Estimate

__all__ = ["configurational_temperature", "kinetic_temperature"]


def _as_positions(name: str, x: Any) -> np.ndarray:
    arr = as_chains(name, x, min_draws=2, allow_bool=False)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (chain, draw, dim), got shape {arr.shape}")
    return arr


def kinetic_temperature(
    p_or_traj: Any, mass: Any = None, *, n_batches: int | None = None, burn_in: int = 0
) -> Estimate:
    """Kinetic temperature ⟨pᵀM⁻¹p⟩/N with its batch-means standard error.

    Args:
        p_or_traj: Momenta ``(chain, draw, dim)`` or a :class:`dynopt.Trajectory` (its ``p`` and
            its system's mass).
        mass: Diagonal mass, scalar or ``(dim,)`` (default 1; for a trajectory, the system's).
        n_batches: Batches per chain for the standard error.
        burn_in: Leading draws to discard.

    Returns:
        :class:`Estimate` (``.value``, ``.se``).
    """
    if is_trajectory(p_or_traj):
        traj = p_or_traj
        if traj.p is None and traj.system.has_momentum:
            raise ValueError(
                "this trajectory did not record the momenta (it was recorded with "
                "observables=); dynopt.observables.layer_temperatures(traj) gives T_kin per "
                "layer from 'layer_kinetic' records, or integrate without observables= to get p")
        if traj.p is None:
            raise ValueError(
                f"{type(traj.system).__name__} is first order (no momenta), so it has no kinetic "
                "temperature; use configurational_temperature"
            )
        if not traj.system.has_kinetic_temperature:
            raise ValueError(
                f"{type(traj.system).__name__}'s energy is not U(q) + pᵀM⁻¹p/2, so pᵀM⁻¹p/N is "
                "no temperature; use configurational_temperature, or pass traj.p to compute the "
                "moment anyway")
        p = _as_positions("p", traj.p)
        m = traj.system.mass_vector(p.shape[2]) if mass is None else mass
    else:
        p = _as_positions("p", p_or_traj)
        m = 1.0 if mass is None else mass
    m_arr = as_finite_array("mass", m, ndim=(0, 1), positive=True)
    if m_arr.ndim == 1 and m_arr.shape[0] != p.shape[2]:
        raise ValueError(f"mass has {m_arr.shape[0]} entries but p has dim={p.shape[2]}")
    b = check_burn_in(burn_in, p.shape[1])
    p = p[:, b:]
    inst = (p * p / m_arr).sum(axis=-1) / p.shape[2]
    return estimate_mean(inst, n_batches)


def configurational_temperature(
    q_or_traj: Any,
    potential: Any = None,
    *,
    n_batches: int | None = None,
    burn_in: int = 0,
) -> Estimate:
    """Configurational temperature ⟨|∇U|²⟩/⟨ΔU⟩ with a delta-method batch-means standard error.

    Args:
        q_or_traj: Positions ``(chain, draw, dim)`` or a :class:`dynopt.Trajectory` (its ``q``
            and its system's potential).
        potential: A :mod:`dynopt.potentials` potential (required for arrays); its array-form
            ``grad`` and ``laplacian`` are used.
        n_batches: Batches per chain for the standard error.
        burn_in: Leading draws to discard.

    Returns:
        :class:`Estimate` (``.value``, ``.se``).
    """
    if is_trajectory(q_or_traj):
        traj = q_or_traj
        if np.shape(traj.q)[-1] == 0:
            raise ValueError(
                "this trajectory did not record the positions (observables= without 'theta'); "
                "add 'theta', or record 'layer_configurational' and use "
                "dynopt.observables.layer_temperatures(traj) for T_conf per layer")
        q = _as_positions("q", traj.q)
        potential = traj.system.potential if potential is None else potential
    else:
        q = _as_positions("q", q_or_traj)
    if potential is None:
        raise ValueError("configurational_temperature needs potential= for array input")
    from ..potentials.base import AbstractPotential

    if not isinstance(potential, AbstractPotential):
        raise TypeError(f"potential must be a dynopt potential (with grad and laplacian), got "
                        f"{potential!r}")
    potential.check_dim(q.shape[2], "q")
    b = check_burn_in(burn_in, q.shape[1])
    q = q[:, b:]
    g = np.asarray(potential.grad(q))
    grad2 = (g * g).sum(axis=-1)
    lap = np.broadcast_to(np.asarray(potential.laplacian(q), dtype=np.float64), grad2.shape)
    return estimate_ratio(grad2, lap, n_batches)
