"""Rosenbrock's banana function."""

from __future__ import annotations

import numpy as np

from .._validation import check_positive
from .base import AbstractPotential, Array, namespace


class Rosenbrock(AbstractPotential):
    r"""Rosenbrock's function, global minimum U(a, a², ...) = 0 (U(1, ..., 1) = 0 for a = 1).

    .. math:: U(q) = \sum_{i=1}^{n-1} \big[b\,(q_{i+1} - q_i^2)^2 + (a - q_i)^2\big].

    Args:
        dim: Number of coordinates n (>= 2).
        a: Location parameter (> 0), standard 1.
        b: Valley stiffness (> 0), standard 100.
    """

    numba_kind = 5
    name = "rosenbrock"

    def __init__(self, dim: int = 2, a: float = 1.0, b: float = 100.0) -> None:
        super().__init__(dim)
        if self.dim < 2:
            raise ValueError(f"Rosenbrock needs dim >= 2, got dim={self.dim}")
        self.a = check_positive("a", a)
        self.b = check_positive("b", b)

    def value(self, q: Array) -> Array:
        x, y = q[..., :-1], q[..., 1:]
        return (self.b * (y - x * x) ** 2 + (self.a - x) ** 2).sum(-1)

    def grad(self, q: Array) -> Array:
        xp = namespace(q)
        x, y = q[..., :-1], q[..., 1:]
        inner = y - x * x
        g = xp.zeros_like(q)
        g[..., :-1] = -4.0 * self.b * x * inner - 2.0 * (self.a - x)
        g[..., 1:] = g[..., 1:] + 2.0 * self.b * inner
        return g

    def laplacian(self, q: Array) -> Array:
        x = q[..., :-1]
        y = q[..., 1:]
        # ∂²/∂x_i² of the i-th term: -4b(y - x²) + 8b x² + 2; ∂²/∂y² of it: 2b.
        return (-4.0 * self.b * (y - x * x) + 8.0 * self.b * x * x + 2.0 + 2.0 * self.b).sum(-1)

    def numba_params(self) -> np.ndarray:
        return np.array([self.a, self.b])

    def __repr__(self) -> str:
        return f"Rosenbrock(dim={self.dim}, a={self.a}, b={self.b})"
