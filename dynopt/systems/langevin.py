"""Underdamped Langevin dynamics."""

from __future__ import annotations

from typing import Any

from .._validation import check_nonnegative
from ..potentials.base import AbstractPotential
from ..program import Op
from . import subflows
from .base import AbstractSystem


class Langevin(AbstractSystem):
    r"""Underdamped Langevin dynamics, the canonical (NVT) ensemble.

    .. math:: dq = M^{-1} p\,dt, \qquad
              dp = -\nabla U(q)\,dt - \gamma p\,dt + \sqrt{2\gamma\tau}\,M^{1/2} dW,

    with invariant density ∝ exp(−(U(q) + pᵀM⁻¹p/2)/τ).

    | symbol | code |
    |---|---|
    | U | ``potential`` |
    | γ | ``gamma`` (friction, ≥ 0) |
    | τ = k_B T | ``temperature`` (≥ 0) |
    | M | ``mass`` |

    Letters: ``A`` drift, ``B`` kick, ``O`` the exact Ornstein–Uhlenbeck step
    p ← e^{−γt}p + √((1 − e^{−2γt})τ) M^½ R. BAOAB samples ⟨q²⟩ = τ/ω² exactly on a harmonic
    potential for every stable h (Leimkuhler & Matthews, AMRX 2013).

    At ``temperature=0`` the dynamics is the heavy ball with friction γ.

    Args:
        potential: The potential energy.
        gamma: Friction γ ≥ 0.
        temperature: Temperature τ ≥ 0.
        mass: Diagonal mass.
        nbeta, localization, center: Local sampling: the potential becomes
            nβU + (γ_loc/2)|q − q₀|² (:class:`~dynopt.potentials.Localized`; devinterp's local
            posterior at ``temperature=1``).
    """

    letters = {"A": "drift", "B": "kick", "O": "Ornstein–Uhlenbeck (exact)"}
    is_stochastic = True
    default_scheme = "BAOAB"

    def __init__(
        self,
        potential: AbstractPotential | None,
        *,
        gamma: float = 1.0,
        temperature: float = 1.0,
        mass: Any = 1.0,
        nbeta: float = 1.0,
        localization: float = 0.0,
        center: Any = None,
    ) -> None:
        super().__init__(self.localize(potential, nbeta, localization, center), mass=mass)
        self.gamma = check_nonnegative("gamma", gamma)
        self.temperature = check_nonnegative("temperature", temperature)

    def vector_field(self, q, p, x):  # type: ignore[no-untyped-def]
        """The friction part only: (M⁻¹p, −∇U − γp, 0)."""
        return p * self._minv_like(p), -self.potential.grad(q) - self.gamma * p, 0.0 * x

    def _lower(self, letter: str, t: float) -> Op:
        if letter == "A":
            return subflows.drift(t)
        if letter == "B":
            return subflows.kick(t)
        return subflows.ornstein_uhlenbeck(t, self.gamma, self.temperature)

    def parameters(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "temperature": self.temperature}
