"""Port-Hamiltonian heavy ball with (event-switchable) friction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .._validation import check_nonnegative
from ..potentials.base import AbstractPotential, Array
from ..program import Op, OpCode
from . import subflows
from .base import AbstractSystem, NormalSampler

__all__ = ["PortHamiltonian", "check_friction_ops", "friction_factor"]


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
    exact friction flow p ← e^{−γt}p. An ``F`` step with γt > 2 multiplies p by 1 − γt < −1,
    a friction that amplifies the momentum: ``integrate()`` refuses it, as
    :class:`dynopt.optim.HeavyBall` does (:func:`friction_factor`). The default ``"FBA"`` is
    the heavy ball (semi-implicit Euler): p ← (1 − γh)p − h∇L(θ), θ ← θ + hp — exactly
    ``torch.optim.SGD(lr=h², momentum=1 − γh)`` with buffer b = −p/h; one step is conformally
    symplectic with Jacobian determinant (1 − γh)^d. ``"BACAB"``-type compositions with ``C`` are
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


def friction_factor(gamma: float, t: float, *, step: str = "h") -> float:
    """c = 1 − γt of the explicit friction step ``F`` (p ← c p), or a ValueError when γt > 2:
    then |c| > 1 and the "friction" multiplies the momentum by c every step. The one check of
    ``integrate()`` (:func:`check_friction_ops`) and :class:`dynopt.optim.HeavyBall`.

    Args:
        gamma: The friction γ.
        t: The duration of the step.
        step: How the message names t (``"lr"`` in the optimizer, ``"h"`` or ``"0.5*h"`` in
            ``integrate()``).
    """
    c = 1.0 - gamma * t
    if c < -1.0:
        raise ValueError(f"gamma * {step} = {gamma} * {t} = {gamma * t:g} > 2: the friction step "
                         f"p <- (1 - gamma*{step}) p would multiply the momentum by {c:g} each "
                         f"step (an amplifying friction); lower gamma or {step.split('*')[-1]}")
    return c


def check_friction_ops(ops: Sequence[Op], x: Any, h: float, more: Iterable[float] = ()) -> None:
    """Refuse a program whose explicit friction steps (``LIN_FRIC``, the letter ``F``) amplify
    the momentum for some chain (:func:`friction_factor`).

    Args:
        ops: The program's ops (one step of size ``h``).
        x: The per-chain extras ``(chains, n_extras)`` (numpy or torch), which hold each chain's γ.
        h: The step size (to name an op's duration as a fraction of it).
        more: Frictions the run may set later (its ``SetFriction`` events).
    """
    extra = list(more)
    for op in ops:
        if op.code != OpCode.LIN_FRIC:
            continue
        gamma = max([float(x[:, op.i[0]].max()), *extra])
        t = op.f[0]
        friction_factor(gamma, t, step="h" if t == h else f"{t / h:g}*h")
