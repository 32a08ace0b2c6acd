r"""Linear stability limit of a scheme, computed from the scheme's own program.

On one harmonic mode U(q) = λq²/2 with mass m, every primitive op of a step is a linear map of
(q, p) once its nonlinear parts are frozen (below), so one step is a 2×2 *transfer matrix*
K(λ) (1×1 for first-order systems). The step is linearly stable when the spectral radius
ρ(K) ≤ 1. For a real 2×2 matrix this is the Jury (Schur–Cohn) test

.. math:: |\det K| \le 1 \quad\text{and}\quad |\operatorname{tr} K(λ)| \le 1 + \det K ,

and det K is the product of the friction factors (drifts and kicks have determinant 1), so it
does not depend on λ. tr K(λ) is a polynomial in λ whose coefficients are obtained by composing
the ops with polynomial entries; the limit λ_c is the first λ > 0 at which the test fails,
found among the real roots of tr K ∓ (1 + det K) and polished by bisection on the direct
composition. Any splitting string gets its limit this way, not from a table.

Per-op linearization (``x`` are the per-chain extras, frozen):

| op | map on (q, p) |
|---|---|
| DRIFT t | q ← q + (t/m) p |
| KICK t | p ← p − tλ q |
| OU (c, d) | p ← c p (noise dropped) |
| FRICTION t | p ← e^{−ξt} p, ξ = x[ξ] frozen |
| OU_XI t | p ← e^{−ξt} p, ξ frozen |
| NHC t | p ← e^{−v₁t} p, chain velocities frozen |
| LIN_FRIC t | p ← (1 − γt) p, γ = x[k] |
| GRAD_STEP s | q ← (1 − sλ) q |
| THERMOSTAT, WIENER, LM_NOISE, ADD_NOISE | identity (ξ frozen; noise dropped) |
| BBI_SHELL, ECD_SHELL, SC_*, ECD_DRIFT, ROTATE | refused: energy-shell projections are not linear |

Thermostat variables are frozen at the system's initial values (ξ₀) unless ``extras`` gives
others (e.g. the current ξ of a run, or the stationary mean σ_A²/(2τ) of adaptive Langevin).

Closed forms it reproduces (x = h²λ/m): leapfrog, BAOAB, OBABO and ABOBA at any friction
x < 4; ``"BAO"`` (heavy ball with exact friction c = e^{−γh}) x < 2(1 + c); the
port-Hamiltonian heavy ball ``"FBA"`` x < 2(2 − γh), which is ηλ < 2(1 + μ) for
``torch.optim.SGD(lr=η = h², momentum=μ = 1 − γh)``; Euler–Maruyama (gradient descent)
hλ/γ < 2.

| symbol | code |
|---|---|
| λ | ``lam`` (curvature of the mode, e.g. the top Hessian eigenvalue) |
| h | ``h`` (the step size the program is lowered with) |
| m | ``mass`` |
| K | :func:`transfer_matrix` |

Reference: B. Leimkuhler & C. Matthews, *Molecular Dynamics*, Springer 2015, §2.3 and §7.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.polynomial import Polynomial as Poly

from .._validation import check_positive, check_real, short_repr
from ..program import OpCode, Program

if TYPE_CHECKING:
    from ..integrators.base import AbstractIntegrator
    from ..systems.base import AbstractSystem

__all__ = ["StabilityLimit", "critical_step", "spectral_radius", "stability_limit",
           "transfer_matrix"]

_NONLINEAR = {OpCode.BBI_SHELL, OpCode.ECD_SHELL, OpCode.SC_KICK, OpCode.SC_DRIFT,
              OpCode.ECD_DRIFT, OpCode.ROTATE}
_IDENTITY = {OpCode.THERMOSTAT, OpCode.WIENER, OpCode.LM_NOISE, OpCode.ADD_NOISE}


@dataclass(frozen=True)
class StabilityLimit:
    """The linear stability limit of a scheme at one step size.

    Attributes:
        h: The step size.
        lam: The critical curvature λ_c: stable for 0 < λ < λ_c (``inf`` if never unstable,
            0 if unstable for every λ > 0).
        value: The dimensionless limit: h²λ_c/m for second-order (momentum) systems, hλ_c for
            first-order ones.
        variable: ``"h²λ/m"`` or ``"hλ"``.
        det: det K (the product of friction factors; 1 for symplectic schemes).
        scheme: The scheme's name.
        frozen: The frozen extras used (name → value).
    """

    h: float
    lam: float
    value: float
    variable: str
    det: float
    scheme: str
    frozen: dict[str, float]

    def is_stable(self, lam: float) -> bool:
        """Whether curvature ``lam`` is inside the limit (λ < λ_c)."""
        return bool(lam < self.lam)

    def ratio(self, lam: float) -> float:
        """λ/λ_c (> 1: linearly unstable)."""
        return float(lam / self.lam) if self.lam > 0 else math.inf

    def __str__(self) -> str:
        return (f"{self.scheme}: stable for λ < {self.lam:.6g} at h = {self.h:g} "
                f"({self.variable} < {self.value:.6g})")


def _check_system(system: Any) -> None:
    from ..systems.base import AbstractSystem

    if not isinstance(system, AbstractSystem):
        raise TypeError(f"system must be a dynopt system (e.g. dynopt.systems.Langevin(None, "
                        f"gamma=1.0)), got {system!r}")


def _mass(system: AbstractSystem, mass: float | None) -> float:
    if mass is not None:
        return check_positive("mass", mass)
    m = np.asarray(system.mass, dtype=float)
    if m.ndim == 0 or np.all(m == m.flat[0]):
        return float(m.flat[0])
    raise ValueError(f"the system has a non-uniform mass ({m.tolist()}); pass mass=m of the mode "
                     "(the limit for curvature λ of M^-1/2 H M^-1/2 is the one at mass=1)")


def _frozen_extras(system: AbstractSystem, extras: dict[str, float] | None
                   ) -> tuple[np.ndarray, dict[str, float]]:
    layout = system.extras_layout(1)
    x = np.asarray(system.initial_extras(1, 1, lambda shape: np.zeros(shape))[0], dtype=float)
    offsets, k = {}, 0
    for name, size in layout.items():
        offsets[name] = (k, size)
        k += size
    if extras is not None and not isinstance(extras, dict):
        raise TypeError(f"extras must be a dict of name -> value, got {short_repr(extras)}")
    for name, v in (extras or {}).items():
        if name not in offsets:
            raise ValueError(f"extras has {name!r}, but {type(system).__name__} has the extras "
                             f"{sorted(layout)}")
        val = check_real(f"extras[{name!r}]", v)
        o, size = offsets[name]
        x[o:o + size] = val
    named = {n: float(x[o]) for n, (o, s) in offsets.items() if n != "noise_prev"}
    return x, named


def _check_program(program: Program, scheme: str) -> None:
    bad = sorted({op.letter or op.code.name for op in program.ops if op.code in _NONLINEAR})
    if bad:
        raise ValueError(
            f"scheme {scheme!r} uses energy-shell op(s) {bad} (BornInfeld/ECDSep): they rescale "
            "p onto an energy surface, a nonlinear map with no linear stability limit on a "
            "harmonic mode")


def _op_matrix(op: Any, x: np.ndarray, m: float, lam: Any, one: Any) -> list[list[Any]] | None:
    """The 2×2 linearization of ``op`` (entries polynomials or numbers in ``lam``)."""
    code = op.code
    zero = 0.0 * one
    if code == OpCode.DRIFT:
        return [[one, one * (op.f[0] / m)], [zero, one]]
    if code == OpCode.KICK:
        return [[one, zero], [-op.f[0] * lam, one]]
    if code == OpCode.OU:
        c = op.f[0]
    elif code == OpCode.FRICTION or code == OpCode.OU_XI:
        c = math.exp(-x[op.i[0]] * op.f[0])
    elif code == OpCode.NHC:
        c = math.exp(-x[op.i[3]] * op.f[0])
    elif code == OpCode.LIN_FRIC:
        c = 1.0 - op.f[0] * x[op.i[0]]
    elif code in _IDENTITY:
        return None
    else:
        raise ValueError(f"op {code.name} ({op.letter!r}) has no linearization on (q, p)")
    return [[one, zero], [zero, one * c]]


def _matmul(a: list[list[Any]], b: list[list[Any]]) -> list[list[Any]]:
    return [[a[i][0] * b[0][j] + a[i][1] * b[1][j] for j in range(2)] for i in range(2)]


def _compose(program: Program, x: np.ndarray, m: float, lam: Any, one: Any,
             momentum: bool) -> Any:
    """K(λ) = K_n ⋯ K_1 (2×2 nested lists) or, first order, the scalar factor."""
    if not momentum:
        f = one
        for op in program.ops:
            if op.code == OpCode.GRAD_STEP:
                f = f * (one - op.f[0] * lam)
            elif op.code not in _IDENTITY:
                raise ValueError(f"op {op.code.name} ({op.letter!r}) has no linearization on q")
        return f
    k = [[one, 0.0 * one], [0.0 * one, one]]
    for op in program.ops:
        if op.code == OpCode.GRAD_STEP:
            raise ValueError("a gradient step on a system with momenta has no (q, p) transfer "
                             "matrix here")
        mat = _op_matrix(op, x, m, lam, one)
        if mat is not None:
            k = _matmul(mat, k)
    return k


def _program(system: AbstractSystem, integrator: AbstractIntegrator, h: float) -> Program:
    from ..integrators.base import AbstractIntegrator

    if not isinstance(integrator, AbstractIntegrator):
        from ..integrators import resolve

        integrator = resolve(integrator)
    integrator.check(system)
    return Program(tuple(integrator.lower_sequence(system, integrator.letters(), h)))


def transfer_matrix(system: AbstractSystem, integrator: AbstractIntegrator | str, h: float,
                    lam: float, *, mass: float | None = None,
                    extras: dict[str, float] | None = None) -> np.ndarray:
    """The one-step map K on the mode U = λq²/2: (q, p) ↦ K (q, p) (``(1, 1)`` first order)."""
    h = check_positive("h", h)
    lam = check_real("lam", lam)
    _check_system(system)
    program = _program(system, integrator, h)
    _check_program(program, getattr(integrator, "name", str(integrator)))
    x, _ = _frozen_extras(system, extras)
    k = _compose(program, x, _mass(system, mass) if system.has_momentum else 1.0, lam, 1.0,
                 system.has_momentum)
    return np.array(k, dtype=float).reshape((2, 2) if system.has_momentum else (1, 1))


def spectral_radius(system: AbstractSystem, integrator: AbstractIntegrator | str, h: float,
                    lam: float, **kwargs: Any) -> float:
    """ρ(K(λ)): the largest modulus of an eigenvalue of :func:`transfer_matrix`."""
    return float(np.max(np.abs(np.linalg.eigvals(transfer_matrix(system, integrator, h, lam,
                                                                  **kwargs)))))


def stability_limit(system: AbstractSystem, integrator: AbstractIntegrator | str | None = None,
                    h: float = 1.0, *, mass: float | None = None,
                    extras: dict[str, float] | None = None) -> StabilityLimit:
    """The largest curvature λ_c for which one step of ``integrator`` on ``system`` is stable.

    Args:
        system: The dynamics (its potential may be None: only the mass, friction and
            thermostat constants are read).
        integrator: A scheme, a name or a splitting string (default: the system's own scheme).
        h: Step size > 0.
        mass: Mass of the mode (default: the system's scalar mass).
        extras: Frozen values of the system's extras by name (default: their initial values,
            e.g. ξ₀), e.g. ``{"xi": 0.1}``.

    Returns:
        A :class:`StabilityLimit` (``.lam`` is λ_c; ``.value`` is h²λ_c/m or hλ_c).

    Raises:
        ValueError: For energy-shell schemes (BornInfeld, ECDSep), bad ``h``/``mass``/``extras``.
    """
    from ..integrators import resolve

    h = check_positive("h", h)
    _check_system(system)
    integ = resolve(system.default_scheme if integrator is None else integrator)
    program = _program(system, integ, h)
    _check_program(program, integ.name)
    x, named = _frozen_extras(system, extras)
    momentum = system.has_momentum
    m = _mass(system, mass) if momentum else 1.0
    lam_poly = Poly([0.0, 1.0])
    k = _compose(program, x, m, lam_poly, Poly([1.0]), momentum)
    k_at = lambda lam: _compose(program, x, m, lam, 1.0, momentum)  # noqa: E731
    if momentum:
        det = float(np.linalg.det(np.array(k_at(0.0), dtype=float)))
        trace = (k[0][0] + k[1][1]).trim(1e-300)
        bound = 1.0 + det
        polys = [trace - bound, trace + bound]

        def stable(lam: float) -> bool:
            kk = k_at(lam)
            return abs(kk[0][0] + kk[1][1]) <= 1.0 + det
    else:
        det = 1.0
        polys = [k - 1.0, k + 1.0]

        def stable(lam: float) -> bool:
            return abs(k_at(lam)) <= 1.0
    scheme = integ.name
    variable = "h²λ/m" if momentum else "hλ"
    scale = h * h / m if momentum else h

    def result(lam_c: float) -> StabilityLimit:
        return StabilityLimit(h=h, lam=lam_c, value=lam_c * scale, variable=variable, det=det,
                              scheme=scheme, frozen=named)

    if abs(det) > 1.0 + 1e-15:
        return result(0.0)
    roots: list[float] = []
    for poly in polys:
        if poly.degree() < 1 or not np.any(poly.coef[1:]):
            continue
        for r in poly.roots():
            if abs(r.imag) <= 1e-6 * max(1.0, abs(r.real)) and r.real > 0:
                roots.append(float(r.real))
    roots = sorted(set(roots))
    # stability can only change at a root: walk the intervals between them from λ = 0
    edges = [0.0, *roots, 2.0 * roots[-1] if roots else 1.0 / scale]
    last_stable = None
    for a, b in itertools.pairwise(edges):
        mid = 0.5 * (a + b)
        if stable(mid):
            last_stable = mid
            continue
        if last_stable is None:
            return result(0.0)
        return result(_bisect(stable, last_stable, mid))
    return result(math.inf)


def _bisect(stable: Any, a: float, b: float) -> float:
    """The boundary between ``a`` (stable) and ``b`` (unstable), to the last bit."""
    for _ in range(2000):
        mid = 0.5 * (a + b)
        if mid in (a, b):
            break
        if stable(mid):
            a = mid
        else:
            b = mid
    return a


def critical_step(system: AbstractSystem, integrator: AbstractIntegrator | str | None,
                  lam: float, *, mass: float | None = None,
                  extras: dict[str, float] | None = None) -> float:
    """The step size h_c at which curvature ``lam`` reaches the stability limit.

    Found by bracketing and bisection on h (the program is lowered again at every h, so
    friction factors such as e^{−γh} are accounted for); assumes the scheme is stable for h
    below h_c, as all the usual schemes are. Returns ``inf`` if no h up to 2⁶⁰·h₀ is unstable.
    """
    lam = check_positive("lam", lam)
    _check_system(system)

    def stable(h: float) -> bool:
        return stability_limit(system, integrator, h, mass=mass, extras=extras).lam > lam

    m = _mass(system, mass) if system.has_momentum else 1.0
    h0 = math.sqrt(m / lam) if system.has_momentum else 1.0 / lam
    lo, hi = h0, h0
    for _ in range(60):
        if not stable(hi):
            break
        lo, hi = hi, 2.0 * hi
    else:
        return math.inf
    for _ in range(60):
        if stable(lo):
            break
        hi, lo = lo, 0.5 * lo
    else:
        return 0.0
    return _bisect(stable, lo, hi)
