"""Quartic double well U(q) = Σᵢ (qᵢ² − 1)²."""

from __future__ import annotations

from .base import AbstractPotential, Array


class DoubleWell(AbstractPotential):
    r"""Separable quartic double well with minima at qᵢ = ±1 and barrier height 1 per coordinate.

    .. math:: U(q) = \sum_i (q_i^2 - 1)^2, \quad \partial_i U = 4 q_i (q_i^2 - 1),
              \quad \Delta U = \sum_i (12 q_i^2 - 4).

    Its moments at temperature τ are computed by quadrature in
    :func:`dynopt.diagnostics.gibbs_moment` (e.g. ⟨q²⟩ = 0.917671 at τ = 0.25).

    Args:
        dim: Number of coordinates.
    """

    numba_kind = 2
    name = "double-well"

    def __init__(self, dim: int = 1) -> None:
        super().__init__(dim)

    def value(self, q: Array) -> Array:
        return ((q * q - 1.0) ** 2).sum(-1)

    def grad(self, q: Array) -> Array:
        return 4.0 * q * (q * q - 1.0)

    def laplacian(self, q: Array) -> Array:
        return (12.0 * q * q - 4.0).sum(-1)
