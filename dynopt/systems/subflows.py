r"""The named sub-flows that systems are composed from (the jax-md pattern).

Each function returns the primitive :class:`~dynopt.program.Op` that advances one sub-flow by a
time ``t``. They are exact solutions of the sub-flow's ODE/SDE unless marked otherwise.

| letter | sub-flow | equation | solution used |
|---|---|---|---|
| A | drift | q̇ = M⁻¹p | q += t M⁻¹p |
| B | kick | ṗ = −∇U(q) | p −= t ∇U(q) |
| O | Ornstein–Uhlenbeck | dp = −γp dt + √(2γτ) M^½ dW | p = c p + √((1−c²)τ) M^½ R, c = e^{−γt} |
| C | thermostat friction | ṗ = −ξp, η̇ = ξ | p ∗= e^{−ξt}, η += ξt |
| D | additive noise | dp = σ M^½ dW | p += σ√t M^½ R |
| E | thermostat variable | ξ̇ = k (pᵀM⁻¹p − Nτ) | ξ += t k (pᵀM⁻¹p − Nτ) |
| T | Nosé–Hoover chain | see :mod:`dynopt.program` | Suzuki–Yoshida composition |
"""

from __future__ import annotations

import math

from ..program import Op, OpCode

__all__ = [
    "additive_noise",
    "drift",
    "kick",
    "ornstein_uhlenbeck",
    "ou_with_thermostat",
    "thermostat_friction",
    "thermostat_variable",
]


def drift(t: float) -> Op:
    """A: q ← q + t M⁻¹p."""
    return Op(OpCode.DRIFT, (t,), (), "A")


def kick(t: float) -> Op:
    """B: p ← p − t ∇U(q)."""
    return Op(OpCode.KICK, (t,), (), "B")


def ornstein_uhlenbeck(t: float, gamma: float, temperature: float) -> Op:
    """O: exact Ornstein–Uhlenbeck step, p ← e^{−γt} p + √((1 − e^{−2γt}) τ) M^½ R."""
    c = math.exp(-gamma * t)
    d = math.sqrt(max(0.0, -math.expm1(-2.0 * gamma * t)) * temperature)
    return Op(OpCode.OU, (c, d), (), "O")


def thermostat_friction(t: float, xi_offset: int, eta_offset: int = -1) -> Op:
    """C: p ← e^{−ξt} p with ξ frozen (and η ← η + ξt when η is tracked)."""
    return Op(OpCode.FRICTION, (t,), (xi_offset, eta_offset), "C")


def additive_noise(t: float, sigma: float) -> Op:
    """D: p ← p + σ √t M^½ R."""
    return Op(OpCode.ADD_NOISE, (sigma * math.sqrt(t),), (), "D")


def thermostat_variable(
    t: float, coupling: float, temperature: float, xi_offset: int, *, per_dof: bool = False
) -> Op:
    """E: ξ ← ξ + t k (pᵀM⁻¹p − N τ) with p frozen.

    ``k`` is ε for adaptive Langevin and 1/Q for Nosé–Hoover. With ``per_dof=True`` the increment
    is divided by N, i.e. the thermostat mass is Q = N/k (it scales with the number of degrees of
    freedom, as in Martyna–Klein–Tuckerman); the backend supplies N.
    """
    return Op(OpCode.THERMOSTAT, (t * coupling, temperature, 1.0 if per_dof else 0.0),
              (xi_offset,), "E")


def ou_with_thermostat(t: float, sigma: float, xi_offset: int) -> Op:
    """O for adaptive Langevin: exact OU with friction ξ and noise σ (Leimkuhler–Shang)."""
    return Op(OpCode.OU_XI, (t, sigma), (xi_offset,), "O")
