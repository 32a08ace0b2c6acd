r"""Global error against the reference flow, and the empirical order of convergence.

For step sizes hₖ with T/hₖ integer, the global error of ``dynopt.integrate`` at time T is

.. math:: e(h) = \max_c \big\| (q_c, p_c)^{(h)}(T) - (q_c, p_c)^{\mathrm{ref}}(T) \big\|_2,

against :func:`~dynopt.diagnostics.reference_flow`. A method of order p has e(h) ≈ C hᵖ for
small h, so p is the least-squares slope of log e against log h:

.. math:: \log e_k = \log C + p \log h_k .

The fit is in the asymptotic regime when every local slope
log(e_{k+1}/e_k)/log(h_{k+1}/h_k) agrees with p within ``tol``; otherwise a ``RuntimeWarning``
names the local slopes (h too large, or errors down at the reference's accuracy ~1e-11).

| symbol | code |
|---|---|
| hₖ, e(hₖ) | ``hs``, ``errors`` |
| p, C | ``OrderFit.order``, ``OrderFit.constant`` |
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_finite_array, check_bool, check_positive
from ..program import OPS
from .reference_flow import reference_flow

if TYPE_CHECKING:
    from ..integrators.base import AbstractIntegrator
    from ..systems.base import AbstractSystem

__all__ = ["OrderFit", "empirical_order", "global_error"]



@dataclass(frozen=True)
class OrderFit:
    """Least-squares fit log e = log C + p log h.

    Attributes:
        order: The fitted slope p.
        constant: C.
        local_orders: Slopes between consecutive step sizes (sorted by h).
        asymptotic: Whether all local slopes agree with ``order`` within the tolerance (None
            with fewer than 3 step sizes).
    """

    order: float
    constant: float
    local_orders: tuple[float, ...]
    asymptotic: bool | None


def empirical_order(hs: Any, errors: Any, *, tol: float = 0.15) -> OrderFit:
    """Fitted log-log slope of ``errors`` against ``hs``.

    Args:
        hs: Step sizes (> 0, distinct).
        errors: Errors (> 0), one per step size.
        tol: Allowed deviation of each local slope from the fit for ``asymptotic``.

    Returns:
        :class:`OrderFit`. Warns (``RuntimeWarning``) when not in the asymptotic regime.

    Example:
        >>> fit = empirical_order([0.1, 0.05, 0.025], [1e-2, 2.5e-3, 6.25e-4])
        >>> round(fit.order, 6), fit.asymptotic
        (2.0, True)
    """
    h = as_finite_array("hs", hs, ndim=1, positive=True)
    e = as_finite_array("errors", errors, ndim=1, positive=True)
    tol = check_positive("tol", tol)
    if h.shape != e.shape:
        raise ValueError(f"hs has {h.shape[0]} entries but errors has {e.shape[0]}")
    if h.shape[0] < 2 or len(np.unique(h)) != h.shape[0]:
        raise ValueError(f"hs must hold at least 2 distinct step sizes, got {h.tolist()}")
    order = np.argsort(h)
    lh, le = np.log(h[order]), np.log(e[order])
    slope, intercept = np.polyfit(lh, le, 1)
    local = tuple(float(v) for v in np.diff(le) / np.diff(lh))
    asym: bool | None = None
    if len(local) >= 2:
        asym = bool(np.all(np.abs(np.array(local) - slope) <= tol))
        if not asym:
            warnings.warn(
                f"errors are not in the asymptotic regime: local orders {np.round(local, 3)} vs "
                f"fitted {slope:.3f} (decrease h, or stay above the reference accuracy)",
                RuntimeWarning, stacklevel=2)
    return OrderFit(float(slope), float(np.exp(intercept)), local, asym)


def _check_noise_free(program: Any, name: str) -> None:
    for op in program.ops:
        idx = OPS[op.code].amplitude
        if idx is not None and op.f[idx] != 0.0:
            raise ValueError(
                f"{name} draws noise (letter {op.letter!r}, amplitude {op.f[idx]}); global errors "
                "against the deterministic reference flow need a noise-free system: use "
                "Hamiltonian, Langevin(temperature=0), NoseHoover or NoseHooverChain"
            )


def global_error(
    system: AbstractSystem,
    integrator: AbstractIntegrator | str | None,
    q0: Any,
    p0: Any = None,
    *,
    T: float,
    hs: Any,
    backend: str = "numba",
    include_extras: bool = False,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> np.ndarray:
    """Errors of ``dynopt.integrate`` at time T for each step size, against the reference flow.

    Args:
        system: A noise-free system (see the module docstring).
        integrator: Integrator, name or splitting string (None: the system's default).
        q0: Initial positions ``(dim,)`` or ``(chains, dim)``.
        p0: Initial momenta (default zeros).
        T: Final time; every T/h must be an integer.
        hs: Step sizes.
        backend: ``"numba"`` or ``"torch"`` (float64).
        include_extras: Include the extras (thermostat variables) in the error norm.
        rtol, atol: Reference-flow tolerances.

    Returns:
        Errors, ``(len(hs),)``: the maximum over chains of the Euclidean norm of the state error.

    Raises:
        ValueError: If the scheme draws noise, or T/h is not an integer.
    """
    from ..integrate import integrate
    from ..integrators import resolve
    from ..stepping import init

    integ = resolve(integrator if integrator is not None else system.default_scheme)
    T = check_positive("T", T)
    include_extras = check_bool("include_extras", include_extras)
    h_arr = as_finite_array("hs", hs, ndim=1, positive=True)
    steps = []
    for h in h_arr:
        n = round(T / h)
        if n < 1 or abs(n * h - T) > 1e-9 * T:
            raise ValueError(f"T/h must be an integer, got T={T}, h={h} (T/h = {T / h})")
        steps.append(n)
    for h in h_arr:
        _check_noise_free(integ.program(system, float(h)), f"{integ.name} on {system!r}")
    if p0 is None and system.has_momentum:
        q_arr = as_finite_array("q0", q0, ndim=(1, 2))
        p0 = np.zeros_like(q_arr)
    start = init(system, integ, q0, backend=backend, seed=0, p0=p0 if system.has_momentum else None)
    x0 = _numpy(start.x)
    ref = reference_flow(system, _numpy(start.q), _numpy(start.p), x0, t=[0.0, T], rtol=rtol,
                         atol=atol)
    want = _stack(ref.q[:, -1], ref.p[:, -1], ref.x[:, -1], include_extras)
    errors = np.empty(len(h_arr))
    for k, (h, n) in enumerate(zip(h_arr, steps, strict=True)):
        traj = integrate(system, integ, None, h=float(h), n_steps=n, state=start, record_every=n)
        fs = traj.final_state
        got = _stack(_numpy(fs.q), _numpy(fs.p), _numpy(fs.x), include_extras)
        errors[k] = float(np.sqrt(((got - want) ** 2).sum(axis=1)).max())
    return errors


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _stack(q: np.ndarray, p: np.ndarray, x: np.ndarray, extras: bool) -> np.ndarray:
    parts = [q, p] + ([x] if extras else [])
    return np.concatenate(parts, axis=1)
