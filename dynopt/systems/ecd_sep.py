"""ECDSep: energy-conserving descent with a separable Hamiltonian (De Luca, Gatti, Silverstein)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_nonnegative, check_real
from ..potentials.base import AbstractPotential, Array, namespace
from ..program import ECD_EXTRAS, Op, OpCode, ecd_shell_op
from .base import AbstractSystem

__all__ = ["ECDSep"]


class ECDSep(AbstractSystem):
    r"""Energy-conserving descent with the separable Hamiltonian of ECDSep.

    .. math:: H(q, p) = \log(s + |p|^2) + \eta \log(F(q) - F_0), \qquad
              \dot q = \frac{2p}{s + |p|^2}, \qquad \dot p = -\frac{\eta\,\nabla F}{F - F_0},

    i.e. (F − F₀)^η (s + |p|²) = e^H is conserved. The speed |q̇| ≤ 1/√s (AM–GM), and
    |p| → ∞, q̇ → 0 as F → F₀: the particle slows down at the bottom. The Liouville marginal is
    ∝ (F − F₀)^(−ηd/2) for s = 0: larger η concentrates it at low loss.

    **The discrete map** (letters ``"SBAR"``, the default; the authors' ``ECDSep`` optimizer,
    gbdl/ECDSep ``inflation.py``), with E = V₀(s + δE), V = (F − F₀)^η at q_k:

    * ``S``: if F ≤ F₀ or V ≤ ε₂ nothing happens; else p ← c p, c = √((E/V − s)/|p|²)
      (projection onto the shell; c = 1 if the mismatch is below ε₁, the target is negative or
      p = 0). On the first step p₀ = −∇F·√(δE/|∇F|²) (if p = 0);
    * ``B``: p ← p − Δt·η∇F/(F − F₀);
    * ``A``: q ← q + Δt·2p/(s + |p|²) (the new p);
    * ``R``: the "generalised bounce": p ← |p|·u/|u|, u = p/|p| + νz, z ~ N(0, I) (every step).

    Like BBI the map is projection-based, not symplectic. As in the authors' code, δE is
    replaced by 1 when s ≠ 1.

    | symbol | code | authors' ``ECDSep`` kwarg |
    |---|---|---|
    | Δt | ``h`` (``lr`` of :class:`dynopt.optim.ECDSep`) | ``lr`` |
    | F₀ | ``F0`` | ``F0`` |
    | η | ``eta`` | ``eta`` |
    | s | ``s`` | ``s`` |
    | ν | ``nu`` | ``nu`` |
    | δE | ``delta_energy`` | ``deltaEn`` |
    | – | ``consistent_energy`` | ``consEn`` |
    | ε₁, ε₂ | ``eps1``, ``eps2`` | ``eps1``, ``eps2`` |
    | e^H, F − F₀ | extras ``E``, ``F`` | – |

    Reference: De Luca, Gatti & Silverstein, "Improving Energy Conserving Descent for Machine
    Learning: Theory and Practice" (arXiv 2306.00352).

    Args:
        potential: The objective F.
        F0: Expected minimum of F.
        eta: Concentration exponent η ≥ 1.
        s: Regularisation s ≥ 0 (speed limit 1/√s).
        nu: Rotation ("chaos") strength ν ≥ 0.
        delta_energy: Initial kinetic term δE ≥ 0 (|p₀|² = δE).
        consistent_energy: Project onto the shell every step.
        eps1, eps2: Projection tolerance and freeze threshold.
    """

    letters = {
        "S": "energy shell: projection onto (F − F0)^η (s + |p|²) = E",
        "B": "kick p -= t·η∇F/(F − F0)",
        "A": "drift q += 2t p/(s + |p|²)",
        "R": "generalised bounce: rotate p by ν·noise keeping |p|",
    }
    is_stochastic = True
    default_scheme = "SBAR"
    whole_step_letters = frozenset("SR")  # the projection and the rotation by ν: once per step
    has_kinetic_temperature = False  # H is not U + |Π|²/2

    def __init__(
        self,
        potential: AbstractPotential | None,
        *,
        F0: float = 0.0,
        eta: float = 1.0,
        s: float = 1.0,
        nu: float = 1e-5,
        delta_energy: float = 0.0,
        consistent_energy: bool = True,
        eps1: float = 1e-10,
        eps2: float = 1e-40,
    ) -> None:
        super().__init__(potential)
        self.F0 = check_real("F0", F0)
        self.eta = check_real("eta", eta)
        if self.eta < 1.0:
            raise ValueError(f"eta must be >= 1, got {self.eta}")
        self.s = check_nonnegative("s", s)
        self.nu = check_nonnegative("nu", nu)
        self.delta_energy = check_nonnegative("delta_energy", delta_energy)
        if not isinstance(consistent_energy, bool):
            raise TypeError(f"consistent_energy must be a bool, got {consistent_energy!r}")
        self.consistent_energy = consistent_energy
        self.eps1 = check_nonnegative("eps1", eps1)
        self.eps2 = check_nonnegative("eps2", eps2)

    @property
    def effective_delta_energy(self) -> float:
        """δE as used by the map (1 when s ≠ 1, as in the authors' code)."""
        return self.delta_energy if self.s == 1.0 else 1.0

    def _lower(self, letter: str, t: float) -> Op:
        if letter == "S":
            return ecd_shell_op(self.F0, self.eta, self.s, self.effective_delta_energy,
                                self.eps1, self.eps2, self.consistent_energy, 0)
        moving = ECD_EXTRAS.index("moving")
        if letter == "B":
            return Op(OpCode.SC_KICK, (t,), (ECD_EXTRAS.index("kick_rate"),), "B")
        if letter == "A":
            return Op(OpCode.ECD_DRIFT, (t, self.s), (moving,), "A")
        return Op(OpCode.ROTATE, (self.nu,), (moving,), "R")

    def extras_layout(self, dim: int) -> dict[str, int]:
        return dict.fromkeys(ECD_EXTRAS, 1)

    def energy(self, q: Array, p: Array | None) -> Array:
        """H = log(s + |p|²) + η log(F − F₀)."""
        assert self.potential is not None
        xp = namespace(q)
        return xp.log(self.s + (p * p).sum(-1)) + self.eta * xp.log(
            self.potential.value(q) - self.F0)

    def recorded_energy(self, potential: np.ndarray, kinetic: np.ndarray) -> np.ndarray:
        """H = log(s + |p|²) + η log(F − F₀) from the records (NaN where F ≤ F₀)."""
        fd = potential - self.F0
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log(self.s + 2.0 * kinetic) + self.eta * np.log(
                np.where(fd > 0, fd, np.nan))

    def invariant(self, potential: np.ndarray, kinetic: np.ndarray,
                  extras: dict[str, np.ndarray], n_dof: int) -> np.ndarray:
        """H along the records: the rotations keep |p|, so H is conserved between them."""
        return self.recorded_energy(potential, kinetic)

    def vector_field(self, q, p, x):  # type: ignore[no-untyped-def]
        """(2p/(s + |p|²), −η∇F/(F − F₀), 0), rotations dropped."""
        assert self.potential is not None
        fd = (self.potential.value(q) - self.F0)[..., None]
        p2 = (p * p).sum(-1)[..., None]
        return 2.0 * p / (self.s + p2), -self.eta * self.potential.grad(q) / fd, 0.0 * x

    def parameters(self) -> dict[str, Any]:
        return {"F0": self.F0, "eta": self.eta, "s": self.s, "nu": self.nu,
                "delta_energy": self.delta_energy, "consistent_energy": self.consistent_energy,
                "eps1": self.eps1, "eps2": self.eps2}
