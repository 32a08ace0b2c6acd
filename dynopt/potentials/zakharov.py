"""Zakharov's shallow-valley test function."""

from __future__ import annotations

import numpy as np

from .base import AbstractPotential, Array, namespace


class Zakharov(AbstractPotential):
    r"""Zakharov's function, global minimum U(0) = 0, used by the BBI paper as a shallow valley.

    .. math:: U(q) = \sum_i q_i^2 + S^2 + S^4, \qquad S = \tfrac12 \sum_{i=1}^{n} i\, q_i,
              \qquad \partial_i U = 2 q_i + i\,(S + 2 S^3).

    | symbol | code |
    |---|---|
    | n | ``dim`` |
    | S | the weighted sum ½Σ i qᵢ |

    At q = (1, …, 1) in 10-D, U = 572 680 (the BBI paper's start, De Luca, Gatti & Silverstein,
    ICML 2022, §4.2).

    Args:
        dim: Number of coordinates n.
    """

    numba_kind = 6
    name = "zakharov"

    def __init__(self, dim: int = 10) -> None:
        super().__init__(dim)

    def _weights(self, q: Array) -> Array:
        """(1, 2, …, n) in q's namespace, dtype and device."""
        if namespace(q).__name__ == "torch":
            import torch

            return torch.arange(1, self.dim + 1, dtype=q.dtype, device=q.device)
        return np.arange(1, self.dim + 1, dtype=np.float64)

    def value(self, q: Array) -> Array:
        s = 0.5 * (q * self._weights(q)).sum(-1)
        return (q * q).sum(-1) + s * s + s**4

    def grad(self, q: Array) -> Array:
        w = self._weights(q)
        s = 0.5 * (q * w).sum(-1)
        return 2.0 * q + (s + 2.0 * s**3)[..., None] * w

    def laplacian(self, q: Array) -> Array:
        w = self._weights(q)
        s = 0.5 * (q * w).sum(-1)
        # ∂²U/∂qᵢ² = 2 + iᵢ² (1 + 6 S²)/2
        return 2.0 * self.dim + 0.5 * (w * w).sum() * (1.0 + 6.0 * s * s)
