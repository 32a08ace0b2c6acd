"""Port-Hamiltonian heavy ball with (event-switchable) friction."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_nonnegative
from ..potentials.base import AbstractPotential, Array
from ..program import Op, OpCode
from . import subflows
from .base import AbstractSystem, NormalSampler

__all__ = ["PortHamiltonian"]


class PortHamiltonian(AbstractSystem):
    r"""The heavy ball with friction as a port-Hamiltonian system.

    With state x = (θ, p) and H(x) = L(θ) + ½pᵀM⁻¹p,

    .. math:: \dot x = (J - R(t))\,\nabla H(x), \quad
              J = \begin{pmatrix} 0 & I \\ -I & 0 \end{pmatrix}, \quad
              R(t) = \begin{pmatrix} 0 & 0 \\ 0 & \gamma(t) M \end{pmatrix} \succeq 0,

    i.e. θ̇ = M⁻¹p, ṗ = −∇L − γ(t)p, with the power balance dH/dt = −γ pᵀM⁻¹p ≤ 0
    (:meth:`power`): friction is the only sink. γ = 0 is pure (exploring) Hamiltonian motion;
    switching γ on "brakes" the ball into its basin (Burghoff, Heinrich Monells & Gottschalk,
    "Who Breaks Early, Looses", ICANN 2023, arXiv 2304.07070).

    γ is a per-chain extra (``gamma``), so an event (:class:`dynopt.events.SetFriction`) can
    change it per chain during ``integrate()``.

    Letters: ``A`` drift, ``B`` kick, ``F`` explicit-Euler friction p ← (1 − tγ)p and ``C`` the
    exact friction flow p ← e^{−γt}p. The default ``"FBA"`` is the heavy ball (semi-implicit
    Euler): p ← (1 − γh)p − h∇L(θ), θ ← θ + hp — exactly ``torch.optim.SGD(lr=h²,
    momentum=1 − γh)`` with buffer b = −p/h; one step is conformally symplectic with
    Jacobian determinant (1 − γh)^d. ``"BACAB"``-type compositions with ``C`` are
    conformally symplectic with factor e^{−γh} instead.

    | symbol | code |
    |---|---|
    | L | ``potential`` |
    | γ | ``gamma`` (extra ``gamma``) |
    | M | ``mass`` |
    | h | the integrator's step (``lr`` of :class:`dynopt.optim.HeavyBall`) |

    Args:
        potential: The loss L.
        gamma: Initial friction γ ≥ 0.
        mass: Diagonal mass.
    """

    letters = {
        "A": "drift θ += t M⁻¹p",
        "B": "kick p -= t ∇L",
        "F": "explicit friction p *= (1 − tγ)",
        "C": "exact friction p *= exp(−γt)",
    }
    default_scheme = "FBA"

    def __init__(self, potential: AbstractPotential | None, *, gamma: float = 0.0,
                 mass: Any = 1.0) -> None:
        super().__init__(potential, mass=mass)
        self.gamma = check_nonnegative("gamma", gamma)

    def _lower(self, letter: str, t: float) -> Op:
        if letter == "A":
            return subflows.drift(t)
        if letter == "B":
            return subflows.kick(t)
        if letter == "F":
            return Op(OpCode.LIN_FRIC, (t,), (0,), "F")
        return subflows.thermostat_friction(t, 0)

    @property
    def is_conservative(self) -> bool:
        return self.gamma == 0.0

    def extras_layout(self, dim: int) -> dict[str, int]:
        return {"gamma": 1}

    def initial_extras(self, n_chains: int, dim: int, normals: NormalSampler) -> np.ndarray:
        return np.full((n_chains, 1), self.gamma)

    def vector_field(self, q, p, x):  # type: ignore[no-untyped-def]
        """(M⁻¹p, −∇L − γp, 0) with γ = x[..., 0]."""
        assert self.potential is not None
        return p * self._minv_like(p), -self.potential.grad(q) - x[..., 0:1] * p, 0.0 * x

    def power(self, q: Array, p: Array, x: Array) -> Array:
        """dH/dt = ∇H · ẋ = −γ pᵀM⁻¹p along the continuous flow."""
        return -x[..., 0] * (p * p * self._minv_like(p)).sum(-1)

    def parameters(self) -> dict[str, Any]:
        return {"gamma": self.gamma}
