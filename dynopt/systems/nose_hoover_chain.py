"""Nosé–Hoover chains (Martyna, Klein, Tuckerman 1992)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_choice, check_int, check_positive
from ..potentials.base import AbstractPotential
from ..program import Op, nhc_op
from . import subflows
from .base import AbstractSystem

#: Suzuki–Yoshida composition weights by order (sum to 1, symmetric).
SUZUKI_YOSHIDA: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    3: (1.0 / (2.0 - 2.0 ** (1.0 / 3.0)), 1.0 - 2.0 / (2.0 - 2.0 ** (1.0 / 3.0)),
        1.0 / (2.0 - 2.0 ** (1.0 / 3.0))),
    5: tuple([1.0 / (4.0 - 4.0 ** (1.0 / 3.0))] * 2 + [1.0 - 4.0 / (4.0 - 4.0 ** (1.0 / 3.0))]
             + [1.0 / (4.0 - 4.0 ** (1.0 / 3.0))] * 2),
    7: (0.784513610477560, 0.235573213359357, -1.17767998417887,
        1.0 - 2.0 * (0.784513610477560 + 0.235573213359357 - 1.17767998417887),
        -1.17767998417887, 0.235573213359357, 0.784513610477560),
}


class NoseHooverChain(AbstractSystem):
    r"""Nosé–Hoover chain thermostat of length M.

    .. math::
        \dot q = M^{-1}p,\quad \dot p = -\nabla U - v_1 p,\quad
        \dot v_1 = \frac{p^\top M^{-1}p - N k_BT}{Q_1} - v_2 v_1,\quad
        \dot v_j = \frac{Q_{j-1}v_{j-1}^2 - k_BT}{Q_j} - v_{j+1} v_j,\quad \dot\eta_j = v_j,

    (v_{M+1} ≡ 0), conserving
    H_ext = U + pᵀM⁻¹p/2 + Σ_j Q_j v_j²/2 + N k_BT η₁ + k_BT Σ_{j≥2} η_j (:meth:`invariant`).
    With M ≥ 3 it samples the canonical distribution of a 1-D harmonic oscillator, where a single
    Nosé–Hoover thermostat fails.

    | symbol | code |
    |---|---|
    | k_BT | ``temperature`` |
    | M | ``chain_length`` |
    | Q₁ = N k_BT τ², Q_j = k_BT τ² | ``tau`` (thermostat period) |
    | v_j, η_j | extras ``v``, ``eta`` |
    | n_c, n_sy | ``n_substeps``, ``sy_order`` |

    Letters: ``A``, ``B`` and ``T`` (chain propagation for time t with ``n_substeps`` ×
    Suzuki–Yoshida substeps). The default ``"TBABT"`` is the standard
    T_{h/2} B_{h/2} A_h B_{h/2} T_{h/2} scheme (jax-md ``nvt_nose_hoover``, OpenMM).

    Reference: G. J. Martyna, M. L. Klein, M. Tuckerman, "Nosé–Hoover chains: the canonical
    ensemble via continuous dynamics", J. Chem. Phys. 97, 2635 (1992); the Suzuki–Yoshida
    substeps: G. J. Martyna, M. E. Tuckerman, D. J. Tobias, M. L. Klein, Mol. Phys. 87, 1117
    (1996).

    Args:
        potential: The potential energy.
        temperature: k_BT > 0.
        chain_length: M ≥ 1.
        tau: Thermostat period τ > 0.
        n_substeps: Outer substeps n_c ≥ 1.
        sy_order: Suzuki–Yoshida order, one of 1, 3, 5, 7.
        mass: Diagonal particle mass.
    """

    letters = {"A": "drift", "B": "kick", "T": "Nosé–Hoover chain step"}
    default_scheme = "TBABT"
    vector_extras = frozenset({"v", "eta"})  # one entry per link, also for M = 1

    def __init__(
        self,
        potential: AbstractPotential | None,
        *,
        temperature: float = 1.0,
        chain_length: int = 3,
        tau: float = 1.0,
        n_substeps: int = 1,
        sy_order: int = 3,
        mass: Any = 1.0,
    ) -> None:
        super().__init__(potential, mass=mass)
        self.temperature = check_positive("temperature", temperature)
        self.chain_length = check_int("chain_length", chain_length, minimum=1)
        self.tau = check_positive("tau", tau)
        self.n_substeps = check_int("n_substeps", n_substeps, minimum=1)
        self.sy_order = check_choice("sy_order", sy_order, tuple(SUZUKI_YOSHIDA))

    @property
    def q_per_mode(self) -> float:
        """k_BT τ²: Q_j for j ≥ 2, and Q₁/N."""
        return self.temperature * self.tau**2

    def vector_field(self, q, p, x):  # type: ignore[no-untyped-def]
        """(M⁻¹p, −∇U − v₁p, [v̇_1..v̇_M, η̇_1..η̇_M]) of the chain equations."""
        m = self.chain_length
        n = p.shape[-1]
        minv = self._minv_like(p)
        kT = self.temperature
        qs = [self.q_per_mode * n] + [self.q_per_mode] * (m - 1)
        v = [x[..., j] for j in range(m)]
        k2 = (p * p * minv).sum(-1)
        dv = []
        for j in range(m):
            g = (k2 - n * kT) / qs[0] if j == 0 else (qs[j - 1] * v[j - 1] ** 2 - kT) / qs[j]
            if j < m - 1:
                g = g - v[j + 1] * v[j]
            dv.append(g)
        stack = np.stack if isinstance(p, np.ndarray) else _torch_stack
        return p * minv, -self.potential.grad(q) - v[0][..., None] * p, stack(dv + v, -1)

    def _lower(self, letter: str, t: float) -> Op:
        if letter == "A":
            return subflows.drift(t)
        if letter == "B":
            return subflows.kick(t)
        m = self.chain_length
        return nhc_op(t, self.temperature, self.q_per_mode, [self.q_per_mode] * (m - 1),
                      SUZUKI_YOSHIDA[self.sy_order], self.n_substeps, 0, m)

    def extras_layout(self, dim: int) -> dict[str, int]:
        return {"v": self.chain_length, "eta": self.chain_length}

    def invariant(
        self, potential: np.ndarray, kinetic: np.ndarray, extras: dict[str, np.ndarray], n_dof: int
    ) -> np.ndarray:
        n = n_dof
        v, eta = extras["v"], extras["eta"]
        q = np.full(self.chain_length, self.q_per_mode)
        q[0] *= n
        thermo = 0.5 * (q * v**2).sum(-1)
        kt = self.temperature
        return potential + kinetic + thermo + n * kt * eta[..., 0] + kt * eta[..., 1:].sum(-1)

    def parameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "chain_length": self.chain_length,
                "tau": self.tau, "n_substeps": self.n_substeps, "sy_order": self.sy_order}


def _torch_stack(items, dim):  # type: ignore[no-untyped-def]
    import torch

    return torch.stack(items, dim)
