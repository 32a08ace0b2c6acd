"""Overdamped (Brownian) Langevin dynamics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import check_nonnegative, check_positive
from ..potentials.base import AbstractPotential
from ..program import Op, OpCode
from .base import AbstractSystem, NormalSampler


class OverdampedLangevin(AbstractSystem):
    r"""Overdamped (Brownian) Langevin dynamics.

    .. math:: dq = -\gamma^{-1}\nabla U(q)\,dt + \sqrt{2\tau/\gamma}\,dW,

    with invariant density ∝ exp(−U(q)/τ). It is the γ → ∞ limit of :class:`Langevin` with time
    rescaled by γ; with γ = 1 and a minibatch gradient, Euler–Maruyama on it is SGLD.

    | symbol | code |
    |---|---|
    | U | ``potential`` |
    | τ | ``temperature`` |
    | γ | ``gamma`` (time scale, default 1) |

    The gradient flow has no exact solution in general, so this system offers discretized
    letters used by :class:`~dynopt.integrators.EulerMaruyama` (``"GW"``) and
    :class:`~dynopt.integrators.LeimkuhlerMatthews` (``"GL"``):

    * ``G``: explicit gradient step q ← q − (t/γ)∇U(q);
    * ``W``: Brownian increment q ← q + √(2τt/γ) R (exact);
    * ``L``: Leimkuhler–Matthews increment q ← q + √(τt/(2γ)) (Rₙ + Rₙ₊₁), which keeps the
      previous normal as extra state ``noise_prev``.

    Reference: B. Leimkuhler, C. Matthews, *Molecular Dynamics*, Springer 2015;
    B. Leimkuhler, C. Matthews, M. V. Tretyakov, Proc. R. Soc. A 470 (2014) (the ``L`` letter).

    Args:
        potential: The potential energy.
        temperature: Temperature τ ≥ 0.
        gamma: Friction / time scale γ > 0.
        nbeta, localization, center: Local sampling: the potential becomes
            nβU + (γ_loc/2)|q − q₀|² (:class:`~dynopt.potentials.Localized`); with γ = 1, time
            step ε/2 and ``temperature=1`` Euler–Maruyama is devinterp's local SGLD.
    """

    letters = {
        "G": "explicit gradient step (Euler)",
        "W": "Brownian increment (exact)",
        "L": "Leimkuhler–Matthews correlated increment",
    }
    has_momentum = False
    is_stochastic = True
    default_scheme = "EulerMaruyama"
    vector_extras = frozenset({"noise_prev"})  # one entry per coordinate, also for dim = 1

    def __init__(
        self, potential: AbstractPotential | None, *, temperature: float = 1.0,
        gamma: float = 1.0, nbeta: float = 1.0, localization: float = 0.0, center: Any = None,
    ) -> None:
        super().__init__(self.localize(potential, nbeta, localization, center))
        self.temperature = check_nonnegative("temperature", temperature)
        self.gamma = check_positive("gamma", gamma)

    def vector_field(self, q, p, x):  # type: ignore[no-untyped-def]
        """The gradient flow −∇U/γ (p is empty)."""
        return -self.potential.grad(q) / self.gamma, 0.0 * p, 0.0 * x

    def _lower(self, letter: str, t: float) -> Op:
        if letter == "G":
            return Op(OpCode.GRAD_STEP, (t / self.gamma,), (), "G")
        if letter == "W":
            return Op(OpCode.WIENER, (math.sqrt(2.0 * self.temperature * t / self.gamma),), (), "W")
        s = math.sqrt(self.temperature * t / (2.0 * self.gamma))
        return Op(OpCode.LM_NOISE, (s,), (0,), "L")

    def extras_layout(self, dim: int) -> dict[str, int]:
        return {"noise_prev": dim}

    def initial_extras(self, n_chains: int, dim: int, normals: NormalSampler) -> np.ndarray:
        return normals((n_chains, dim))

    def initial_momentum(self, n_chains: int, dim: int, normals: NormalSampler) -> np.ndarray:
        return np.zeros((n_chains, 0))

    def parameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "gamma": self.gamma}
