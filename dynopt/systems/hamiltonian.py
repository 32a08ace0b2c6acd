"""Hamiltonian (NVE) dynamics."""

from __future__ import annotations

from typing import Any

from ..potentials.base import AbstractPotential
from ..program import Op
from . import subflows
from .base import AbstractSystem


class Hamiltonian(AbstractSystem):
    r"""Hamiltonian dynamics, the microcanonical (NVE) ensemble.

    .. math:: \dot q = M^{-1} p, \qquad \dot p = -\nabla U(q), \qquad
              H(q, p) = U(q) + \tfrac12 p^\top M^{-1} p \ \text{is conserved.}

    | symbol | code |
    |---|---|
    | U | ``potential`` |
    | M | ``mass`` |

    Letters: ``A`` (drift), ``B`` (kick). Leapfrog / velocity Verlet is ``Splitting("BAB")``:
    symplectic, time-reversible, second order, with bounded energy error (no secular drift).

    Reference: B. Leimkuhler, C. Matthews, *Molecular Dynamics*, Springer 2015;
    E. Hairer, C. Lubich, G. Wanner, *Geometric Numerical Integration*, Springer 2006.

    Args:
        potential: The potential energy.
        mass: Diagonal mass (scalar or per coordinate).
    """

    letters = {"A": "drift q += t M⁻¹p", "B": "kick p -= t ∇U(q)"}
    default_scheme = "BAB"

    def __init__(self, potential: AbstractPotential | None, *, mass: Any = 1.0) -> None:
        super().__init__(potential, mass=mass)

    def vector_field(self, q, p, x):  # type: ignore[no-untyped-def]
        return p * self._minv_like(p), -self.potential.grad(q), 0.0 * x

    def _lower(self, letter: str, t: float) -> Op:
        return subflows.drift(t) if letter == "A" else subflows.kick(t)
