"""Ackley function."""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_positive
from .base import AbstractPotential, Array, namespace


class Ackley(AbstractPotential):
    r"""Ackley's multimodal test function, global minimum U(0) = 0.

    .. math:: U(q) = -a \exp\!\Big(-b \sqrt{\tfrac1n \textstyle\sum_i q_i^2}\Big)
              - \exp\!\Big(\tfrac1n \textstyle\sum_i \cos(c\, q_i)\Big) + a + e .

    | symbol | code | standard value |
    |---|---|---|
    | a | ``a`` | 20 |
    | b | ``b`` | 0.2 (the BBI paper uses 0.02) |
    | c | ``c`` | 2π |

    At q = 0 the radial term is not differentiable; :meth:`grad` returns its symmetric
    subgradient 0 there.

    Args:
        dim: Number of coordinates n.
        a, b, c: Shape parameters (all > 0).
    """

    numba_kind = 3
    name = "ackley"

    def __init__(
        self, dim: int = 2, a: float = 20.0, b: float = 0.2, c: float = 2.0 * math.pi
    ) -> None:
        super().__init__(dim)
        self.a = check_positive("a", a)
        self.b = check_positive("b", b)
        self.c = check_positive("c", c)

    def value(self, q: Array) -> Array:
        xp = namespace(q)
        n = self.dim
        r = xp.sqrt((q * q).sum(-1) / n)
        return (
            -self.a * xp.exp(-self.b * r)
            - xp.exp(xp.cos(self.c * q).sum(-1) / n)
            + self.a
            + math.e
        )

    def grad(self, q: Array) -> Array:
        xp = namespace(q)
        n = self.dim
        r = xp.sqrt((q * q).sum(-1) / n)[..., None]
        safe_r = xp.where(r > 0, r, xp.ones_like(r))
        radial = xp.where(r > 0, self.a * self.b * xp.exp(-self.b * r) / (n * safe_r), 0.0 * r)
        cos_mean = xp.cos(self.c * q).sum(-1) / n
        osc = (xp.exp(cos_mean)[..., None]) * (self.c / n) * xp.sin(self.c * q)
        return radial * q + osc

    def numba_params(self) -> np.ndarray:
        return np.array([self.a, self.b, self.c])

    def __repr__(self) -> str:
        return f"Ackley(dim={self.dim}, a={self.a}, b={self.b}, c={self.c:.6g})"
