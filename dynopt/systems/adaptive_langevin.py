"""Adaptive Langevin (AdL, a.k.a. SGNHT)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_nonnegative, check_positive, check_real
from ..potentials.base import AbstractPotential
from ..program import Op
from . import subflows
from .base import AbstractSystem, NormalSampler


class AdaptiveLangevin(AbstractSystem):
    r"""Adaptive Langevin: a Nosé–Hoover-like friction ξ with additive noise on p.

    .. math:: dq = M^{-1}p\,dt,\quad dp = -\nabla U\,dt - \xi p\,dt + \sigma_A M^{1/2} dW,\quad
              d\xi = \varepsilon\,(p^\top M^{-1}p - N\tau)\,dt .

    Invariant density ∝ exp(−H/τ) · exp(−(ξ − γ*)²/(2ετ)) with γ* = σ_A²/(2τ): so
    ⟨ξ⟩ = σ_A²/(2τ) and Var ξ = ετ (langevin-thermostats.md §1.3). Unknown extra gradient noise
    of variance s² per unit kick shifts ⟨ξ⟩ to (σ_A² + h s²)/(2τ) while (q, p) keep temperature τ
    — the reason to use AdL with minibatch gradients (Jones & Leimkuhler 2011; Ding et al. 2014).

    | symbol | code |
    |---|---|
    | τ | ``temperature`` |
    | σ_A | ``sigma_a`` |
    | ε | ``eps`` (1/thermostat mass) |
    | ξ₀ | ``xi0`` |
    | N | number of coordinates the thermostat acts on (``dim`` per chain) |

    Letters: ``A`` drift, ``B`` kick, ``C`` friction p ← e^{−ξt}p, ``D`` noise
    p ← p + σ_A√t M^½R, ``E`` thermostat ξ ← ξ + tε(pᵀM⁻¹p − Nτ), and ``O``, the exact OU step
    with friction ξ and noise σ_A (for Leimkuhler–Shang's BADODAB, here ``"BAEOEAB"``). The
    default ``"BACDEDCAB"`` is the authors' ACDEDCAB step in symmetric form.

    Args:
        potential: The potential energy.
        temperature: Target temperature τ > 0.
        sigma_a: Additive noise amplitude σ_A ≥ 0.
        eps: Thermostat coupling ε > 0.
        xi0: Initial friction ξ₀.
        mass: Diagonal mass.
    """

    letters = {
        "A": "drift",
        "B": "kick",
        "C": "thermostat friction",
        "D": "additive noise",
        "E": "thermostat variable",
        "O": "OU with friction ξ (exact)",
    }
    is_stochastic = True
    default_scheme = "BACDEDCAB"

    def __init__(
        self,
        potential: AbstractPotential | None,
        *,
        temperature: float = 1.0,
        sigma_a: float = 1.0,
        eps: float = 0.1,
        xi0: float = 0.1,
        mass: Any = 1.0,
    ) -> None:
        super().__init__(potential, mass=mass)
        self.temperature = check_positive("temperature", temperature)
        self.sigma_a = check_nonnegative("sigma_a", sigma_a)
        self.eps = check_positive("eps", eps)
        self.xi0 = check_real("xi0", xi0)

    def vector_field(self, q, p, x):  # type: ignore[no-untyped-def]
        """(M⁻¹p, −∇U − ξp, ε(pᵀM⁻¹p − Nτ)) with the additive noise dropped."""
        xi = x[..., 0:1]
        minv = self._minv_like(p)
        dxi = self.eps * ((p * p * minv).sum(-1) - p.shape[-1] * self.temperature)
        return p * minv, -self.potential.grad(q) - xi * p, dxi[..., None]

    def _lower(self, letter: str, t: float) -> Op:
        if letter == "A":
            return subflows.drift(t)
        if letter == "B":
            return subflows.kick(t)
        if letter == "C":
            return subflows.thermostat_friction(t, 0)
        if letter == "D":
            return subflows.additive_noise(t, self.sigma_a)
        if letter == "E":
            return subflows.thermostat_variable(t, self.eps, self.temperature, 0)
        return subflows.ou_with_thermostat(t, self.sigma_a, 0)

    @property
    def xi_mean(self) -> float:
        """The stationary mean of ξ, σ_A²/(2τ)."""
        return self.sigma_a**2 / (2.0 * self.temperature)

    @property
    def xi_variance(self) -> float:
        """The stationary variance of ξ, ετ."""
        return self.eps * self.temperature

    def extras_layout(self, dim: int) -> dict[str, int]:
        return {"xi": 1}

    def initial_extras(self, n_chains: int, dim: int, normals: NormalSampler) -> np.ndarray:
        return np.full((n_chains, 1), self.xi0)

    def parameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "sigma_a": self.sigma_a, "eps": self.eps,
                "xi0": self.xi0}
