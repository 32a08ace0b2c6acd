"""Nosé–Hoover thermostat (single)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_positive, check_real
from ..potentials.base import AbstractPotential
from ..program import Op, nhc_op
from . import subflows
from .base import AbstractSystem, NormalSampler


class NoseHoover(AbstractSystem):
    r"""Deterministic Nosé–Hoover dynamics with one thermostat.

    .. math:: \dot q = M^{-1}p,\quad \dot p = -\nabla U - \xi p,\quad
              \dot\xi = \frac{p^\top M^{-1} p - N k_BT}{Q},\quad \dot\eta = \xi,

    conserving the extended energy (:meth:`invariant`)
    H_ext = U + pᵀM⁻¹p/2 + Qξ²/2 + N k_BT η. The (q, p) marginal of its invariant measure is
    canonical, but the dynamics is **not ergodic** for small or stiff systems (the 1-D harmonic
    oscillator stays on a torus); use :class:`NoseHooverChain` for that.

    | symbol | code |
    |---|---|
    | k_BT | ``temperature`` |
    | Q | N · ``thermostat_mass`` (default thermostat_mass = k_BT·``tau``²) |
    | ξ, η | extras ``xi``, ``eta`` |

    Letters: ``A``, ``B``, ``C`` (p ← e^{−ξt}p, η ← η + ξt), ``E`` (ξ update) and ``T`` (a
    chain step of length 1 with Suzuki–Yoshida substeps). The default ``"ECBABCE"`` is a
    symmetric, second-order splitting.

    Reference: S. Nosé, J. Chem. Phys. 81, 511 (1984); W. G. Hoover, Phys. Rev. A 31, 1695
    (1985).

    Args:
        potential: The potential energy.
        temperature: k_BT > 0.
        tau: Thermostat period (sets Q when ``thermostat_mass`` is None).
        thermostat_mass: Q per degree of freedom.
        xi0: Initial ξ.
        mass: Diagonal particle mass.
    """

    letters = {
        "A": "drift",
        "B": "kick",
        "C": "thermostat friction (and η)",
        "E": "thermostat variable",
        "T": "chain step (length 1, Suzuki–Yoshida)",
    }
    default_scheme = "ECBABCE"

    def __init__(
        self,
        potential: AbstractPotential | None,
        *,
        temperature: float = 1.0,
        tau: float = 1.0,
        thermostat_mass: float | None = None,
        xi0: float = 0.0,
        mass: Any = 1.0,
    ) -> None:
        super().__init__(potential, mass=mass)
        self.temperature = check_positive("temperature", temperature)
        self.tau = check_positive("tau", tau)
        self.thermostat_mass = (
            self.temperature * self.tau**2
            if thermostat_mass is None
            else check_positive("thermostat_mass", thermostat_mass)
        )
        self.xi0 = check_real("xi0", xi0)

    def vector_field(self, q, p, x):  # type: ignore[no-untyped-def]
        """(M⁻¹p, −∇U − ξp, [(pᵀM⁻¹p − N kT)/Q, ξ])."""
        xi = x[..., 0:1]
        minv = self._minv_like(p)
        n = p.shape[-1]
        dxi = ((p * p * minv).sum(-1, keepdims=True) if isinstance(p, np.ndarray) else (
            p * p * minv).sum(-1, keepdim=True)) - n * self.temperature
        dxi = dxi / (n * self.thermostat_mass)
        stack = np.concatenate if isinstance(p, np.ndarray) else _torch_cat
        return p * minv, -self.potential.grad(q) - xi * p, stack([dxi, xi], -1)

    def _lower(self, letter: str, t: float) -> Op:
        if letter == "A":
            return subflows.drift(t)
        if letter == "B":
            return subflows.kick(t)
        if letter == "C":
            return subflows.thermostat_friction(t, 0, 1)
        if letter == "E":
            return subflows.thermostat_variable(
                t, 1.0 / self.thermostat_mass, self.temperature, 0, per_dof=True
            )
        return nhc_op(t, self.temperature, self.thermostat_mass, (), (1.0,), 1, 0, 1)

    def extras_layout(self, dim: int) -> dict[str, int]:
        return {"xi": 1, "eta": 1}

    def initial_extras(self, n_chains: int, dim: int, normals: NormalSampler) -> np.ndarray:
        x = np.zeros((n_chains, 2))
        x[:, 0] = self.xi0
        return x

    def invariant(
        self, potential: np.ndarray, kinetic: np.ndarray, extras: dict[str, np.ndarray], n_dof: int
    ) -> np.ndarray:
        n = n_dof
        q_total = n * self.thermostat_mass
        xi, eta = extras["xi"][..., 0], extras["eta"][..., 0]
        return potential + kinetic + 0.5 * q_total * xi**2 + n * self.temperature * eta

    def parameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "tau": self.tau,
                "thermostat_mass": self.thermostat_mass, "xi0": self.xi0}


def _torch_cat(items, dim):  # type: ignore[no-untyped-def]
    import torch

    return torch.cat(items, dim)
