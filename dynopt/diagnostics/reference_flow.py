r"""A tight-tolerance reference solution of a system's deterministic vector field.

The system's :meth:`~dynopt.systems.base.AbstractSystem.vector_field` (array form, evaluated on
float64 torch tensors) is integrated with ``torchdiffeq.odeint`` (Dormand–Prince 8(5,3) by
default, ``rtol = atol = 1e-12``). The state vector is y = (q, p, x) per chain:

.. math:: \dot y = F(y), \qquad y(t_0) = (q_0, p_0, x_0).

Stochastic systems drop their noise in ``vector_field`` (Langevin keeps only the friction), so a
comparison with an integrator is meaningful only when the integrator's noise is zero: Hamiltonian
dynamics, Langevin at temperature 0, Nosé–Hoover and Nosé–Hoover chains.

| symbol | code |
|---|---|
| F | ``system.vector_field`` |
| q₀, p₀, x₀ | ``q0``, ``p0``, ``x0`` |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_finite_array, check_choice, check_positive, short_repr

if TYPE_CHECKING:
    from ..systems.base import AbstractSystem

__all__ = ["FlowSolution", "reference_flow"]

METHODS = ("dopri8", "dopri5")


@dataclass(frozen=True)
class FlowSolution:
    """The reference flow at the requested times, in ``(chain, time, ...)`` layout.

    Attributes:
        t: Output times, ``(time,)``.
        q: Positions, ``(chain, time, dim)``.
        p: Momenta, ``(chain, time, dim)`` (``(chain, time, 0)`` for first-order systems).
        x: Extras, ``(chain, time, n_extras)``.
    """

    t: np.ndarray
    q: np.ndarray
    p: np.ndarray
    x: np.ndarray


def _rows(name: str, value: Any, n: int | None, width: int) -> np.ndarray:
    arr = as_finite_array(name, value, ndim=(1, 2))
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (n or 1, arr.shape[0])).copy()
    if arr.shape[1] != width or (n is not None and arr.shape[0] != n):
        raise ValueError(f"{name} must have shape ({n or 'chains'}, {width}), got {arr.shape}")
    return arr


def reference_flow(
    system: AbstractSystem,
    q0: Any,
    p0: Any = None,
    x0: Any = None,
    *,
    t: Any,
    rtol: float = 1e-12,
    atol: float = 1e-12,
    method: str = "dopri8",
) -> FlowSolution:
    """Integrate ``system.vector_field`` with torchdiffeq in float64.

    Args:
        system: The system (its potential's array form must accept torch tensors).
        q0: Initial positions ``(dim,)`` or ``(chains, dim)``.
        p0: Initial momenta (default zeros; ignored shape ``(chains, 0)`` for first-order systems).
        x0: Initial extras ``(n_extras,)`` or ``(chains, n_extras)`` (default: the system's
            ``initial_extras`` with zero noise, e.g. ξ₀ for Nosé–Hoover).
        t: Output times, increasing, the first being the initial time; a scalar T means
            ``[0, T]``.
        rtol, atol: Tolerances of the adaptive solver.
        method: ``"dopri8"`` (default) or ``"dopri5"``.

    Returns:
        :class:`FlowSolution`.

    Example:
        >>> import dynopt
        >>> sys = dynopt.systems.Hamiltonian(dynopt.potentials.Harmonic(1.0))
        >>> sol = reference_flow(sys, [1.0], [0.0], t=[0.0, 3.141592653589793])
        >>> round(float(sol.q[0, -1, 0]), 9)
        -1.0
    """
    import torch
    from torchdiffeq import odeint

    check_choice("method", method, METHODS)
    rtol = check_positive("rtol", rtol)
    atol = check_positive("atol", atol)
    times = as_finite_array("t", t, ndim=(0, 1))
    if times.ndim == 0:
        times = np.array([0.0, float(times)])
    if times.shape[0] < 2 or np.any(np.diff(times) <= 0):
        raise ValueError(f"t must be increasing with at least 2 entries, got {short_repr(t)}")
    if system.potential is None:
        raise ValueError(f"{type(system).__name__} needs a potential")
    q = _rows("q0", q0, None, system.potential.dim)
    n, dim = q.shape
    dp = dim if system.has_momentum else 0
    p = np.zeros((n, dp)) if p0 is None or dp == 0 else _rows("p0", p0, n, dp)
    n_x = sum(system.extras_layout(dim).values())
    if x0 is None:
        x = system.initial_extras(n, dim, lambda shape: np.zeros(shape))
    else:
        x = _rows("x0", x0, n, n_x)  # also for n_x = 0: extras the system has not are refused
    y0 = torch.as_tensor(np.concatenate([q, p, x], axis=1), dtype=torch.float64)

    def rhs(_t: Any, y: Any) -> Any:
        qq, pp, xx = y[:, :dim], y[:, dim:dim + dp], y[:, dim + dp:]
        dq, dpp, dx = system.vector_field(qq, pp, xx)
        parts = [torch.as_tensor(v, dtype=y.dtype).expand(n, w)
                 for v, w in ((dq, dim), (dpp, dp), (dx, n_x))]
        return torch.cat(parts, dim=1)

    t_out = torch.as_tensor(times, dtype=torch.float64)
    with torch.no_grad():
        # step_t makes the solver land on every output time, so outputs are step end points
        # rather than values of the (lower-order) dense-output interpolant.
        sol = odeint(rhs, y0, t_out, rtol=rtol, atol=atol, method=method,
                     options={"step_t": t_out[1:]})
    arr = sol.numpy().transpose(1, 0, 2)  # (chain, time, state)
    return FlowSolution(times, arr[:, :, :dim], arr[:, :, dim:dim + dp], arr[:, :, dim + dp:])
