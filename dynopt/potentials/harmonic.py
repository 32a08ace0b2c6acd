"""Harmonic oscillator U(q) = Σᵢ ωᵢ² qᵢ² / 2."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_finite_array
from .base import AbstractPotential, Array, namespace


class Harmonic(AbstractPotential):
    r"""Harmonic potential (isotropic or with one frequency per coordinate).

    .. math:: U(q) = \sum_i \tfrac12 \omega_i^2 q_i^2, \qquad \nabla U = \omega^2 q,
              \qquad \Delta U = \sum_i \omega_i^2 .

    | symbol | code |
    |---|---|
    | ωᵢ | ``omega`` (scalar, or one value per coordinate) |

    The Gibbs density at temperature τ is Gaussian with variance τ/ωᵢ² per coordinate, which makes
    this the reference potential for exact invariant-measure tests (langevin-thermostats.md §5.2).

    Args:
        omega: Angular frequency ω > 0, a scalar or an array of length ``dim``.
        dim: Number of coordinates.
    """

    numba_kind = 1
    name = "harmonic"

    def __init__(self, omega: Any = 1.0, dim: int = 1) -> None:
        super().__init__(dim)
        om = as_finite_array("omega", omega, ndim=(0, 1), positive=True)
        if om.ndim == 1 and om.shape[0] != self.dim:
            raise ValueError(f"omega has {om.shape[0]} entries but dim={self.dim}")
        self.omega = np.broadcast_to(om, (self.dim,)).copy()
        self.omega.flags.writeable = False  # its device copies are cached (assign a new one)

    def _w2(self, q: Array) -> Array:
        if namespace(q) is np:
            return self.omega**2
        from ..backends.torch.ops import host_constant

        return host_constant(self, "w2", self.omega, lambda: self.omega**2, q)

    def value(self, q: Array) -> Array:
        return 0.5 * (self._w2(q) * q * q).sum(-1)

    def grad(self, q: Array) -> Array:
        return self._w2(q) * q

    def laplacian(self, q: Array) -> Array:
        return (self._w2(q) + 0.0 * q).sum(-1)

    def numba_params(self) -> np.ndarray:
        return self.omega**2

    def __repr__(self) -> str:
        om = self.omega[0] if np.all(self.omega == self.omega[0]) else self.omega.tolist()
        return f"Harmonic(omega={om}, dim={self.dim})"
