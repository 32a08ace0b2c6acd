"""Rastrigin function."""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_positive
from .base import AbstractPotential, Array, namespace


class Rastrigin(AbstractPotential):
    r"""Rastrigin's function, global minimum U(0) = 0 and a lattice of local minima.

    .. math:: U(q) = A n + \sum_i \big(q_i^2 - A \cos(2\pi q_i)\big), \quad
              \partial_i U = 2 q_i + 2\pi A \sin(2\pi q_i), \quad
              \Delta U = \sum_i \big(2 + 4\pi^2 A \cos(2\pi q_i)\big).

    Args:
        dim: Number of coordinates n.
        A: Amplitude of the cosine modulation (> 0), standard 10.
    """

    numba_kind = 4
    name = "rastrigin"

    def __init__(self, dim: int = 2, A: float = 10.0) -> None:
        super().__init__(dim)
        self.A = check_positive("A", A)

    def value(self, q: Array) -> Array:
        xp = namespace(q)
        return self.A * self.dim + (q * q - self.A * xp.cos(2 * math.pi * q)).sum(-1)

    def grad(self, q: Array) -> Array:
        xp = namespace(q)
        return 2.0 * q + 2.0 * math.pi * self.A * xp.sin(2 * math.pi * q)

    def laplacian(self, q: Array) -> Array:
        xp = namespace(q)
        return (2.0 + 4.0 * math.pi**2 * self.A * xp.cos(2 * math.pi * q)).sum(-1)

    def numba_params(self) -> np.ndarray:
        return np.array([self.A])

    def __repr__(self) -> str:
        return f"Rastrigin(dim={self.dim}, A={self.A})"
