"""Born–Infeld dynamics: the energy-conserving descent of BBI (De Luca & Silverstein)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import check_choice, check_int, check_nonnegative, check_real
from ..potentials.base import AbstractPotential, Array, namespace
from ..program import BBI_EXTRAS, Op, OpCode, bbi_shell_op
from .base import AbstractSystem, NormalSampler

__all__ = ["BornInfeld"]


def _optional_count(name: str, value: Any) -> float:
    """A positive integer, or None for "never" (returned as inf)."""
    if value is None:
        return math.inf
    return float(check_int(name, value, minimum=1))


class BornInfeld(AbstractSystem):
    r"""Born–Infeld ("relativistic, objective-dependent speed of light") particle: BBI.

    With V(θ) = U(θ) − v₀ > 0 the particle has Lagrangian L = −V √(1 − |θ̇|²/V), momentum
    Π = θ̇/√(1 − |θ̇|²/V) and conserved energy

    .. math:: H(\theta, \Pi) = \sqrt{V(\theta)\,\big(V(\theta) + |\Pi|^2\big)}, \qquad
              \dot\theta = \frac{V}{H}\,\Pi, \qquad
              \dot\Pi = -\tfrac12\Big(\frac{V}{H} + \frac{H}{V}\Big)\nabla V .

    Consequences: the speed limit |θ̇|² = V − V³/H² < V (it decelerates into the minimum),
    V(θ(t)) ≤ E₀ = V(θ₀) + δE (H ≥ V), and at any local minimum with 0 < V < E₀ it still moves.

    **The discrete map** (letters ``"SBA"``, the default scheme; the authors' ``BBI`` optimizer
    exactly, gbdl/BBI ``inflation.py``): E₀ = V(θ₀) + δE is fixed on the first step, and with
    V = V(θ_k):

    * ``S``: if V ≤ ε₂ nothing happens (frozen once U ≤ v₀). A bounce (below) replaces the step.
      Otherwise Π is projected back onto the shell H = E₀: Π ← rΠ, r = √((E₀²/V − V)/|Π|²);
    * ``B``: Π ← Π − Δt·½(V/E₀ + E₀/V)∇V(θ_k);
    * ``A``: θ ← θ + Δt·(V/E₀)·Π (with the new Π and the same V(θ_k)).

    The instantaneous H is replaced by the constant E₀, so the step is explicit; the map is
    *projection-based*, not symplectic: energy is restored by the radial rescaling of Π at the
    start of each step, and V(V + |Π|²) = E₀² holds to rounding right after it.

    **Bounces** (billiards): Π gets a random direction with the same norm, θ is unchanged, and
    the step does not move θ. Fixed bounces happen after T₀, 2T₀, …, N_b·T₀ non-bounce steps;
    progress bounces after T₁ consecutive steps without a new minimum of V. Directions are
    uniform in the cube [−½, ½)^d then normalised (the authors' choice; ``bounce_direction=
    "sphere"`` uses Gaussian directions, uniform on the sphere), drawn from the run's own
    generator (numba: Philox stream 3, a pure function of (seed, chain, step)).

    If ``p0`` is given to ``integrate()``, its direction is kept and its norm is set by the
    projection on the first step; otherwise (p₀ = 0) the particle starts along −∇V with
    |Π₀|² = E₀²/V₀ − V₀ (zero for δE = 0).

    | symbol | code | authors' ``BBI`` kwarg |
    |---|---|---|
    | Δt | ``h`` of the integrator (``lr`` of :class:`dynopt.optim.BBI`) | ``lr`` |
    | ΔV | ``v0`` | ``v0`` |
    | δE | ``delta_energy`` | ``deltaEn`` |
    | T₀ | ``t0`` | ``threshold0`` |
    | N_b | ``n_bounces`` | ``n_fixed_bounces`` |
    | T₁ | ``t1`` | ``threshold`` |
    | – | ``consistent_energy`` | ``consEn`` |
    | ε₁, ε₂ | ``eps1``, ``eps2`` | ``eps1``, ``eps2`` |
    | E₀, V | extras ``E0``, ``V`` | – |
    | counters | extras ``counter0``, ``counter``, ``fixed_bounces``, ``min_V``, ``bounces`` | – |

    Differences from the authors' code (bugs not reproduced, see
    docs/energy-conserving.md): ``n_bounces=0`` means no fixed bounce (the authors' code does
    one), |Π|² = 0 skips the projection instead of dividing by zero.

    Reference: De Luca, Gatti & Silverstein, "Born-Infeld (BI) for AI: Energy-Conserving
    Descent (ECD) for Optimization", ICML 2022 (arXiv 2201.11137).

    Args:
        potential: The objective U.
        v0: The shift ΔV (a guess for the minimum of U).
        delta_energy: Extra initial energy δE ≥ 0.
        t0: Steps between fixed bounces (None: never).
        n_bounces: Number of fixed bounces N_b ≥ 0.
        t1: Steps without progress before a bounce (None: never).
        consistent_energy: Project Π onto the energy shell every step.
        eps1: Skip the projection if the shell mismatch in |Π|² is below this.
        eps2: Freeze when V ≤ eps2.
        bounce_direction: ``"cube"`` (the authors') or ``"sphere"``.
    """

    letters = {
        "S": "energy shell: projection onto H = E0, bounces, freeze when V <= eps2",
        "B": "kick Π -= t·½(V/E0 + E0/V)∇V",
        "A": "drift θ += t·(V/E0)·Π",
    }
    default_scheme = "SBA"
    whole_step_letters = frozenset("S")  # the projection and the bounce clock: once per step
    has_kinetic_temperature = False  # H is not U + |Π|²/2

    def __init__(
        self,
        potential: AbstractPotential | None,
        *,
        v0: float = 0.0,
        delta_energy: float = 0.0,
        t0: int | None = 1000,
        n_bounces: int = 1,
        t1: int | None = 3000,
        consistent_energy: bool = True,
        eps1: float = 1e-10,
        eps2: float = 1e-40,
        bounce_direction: str = "cube",
    ) -> None:
        super().__init__(potential)
        self.v0 = check_real("v0", v0)
        self.delta_energy = check_nonnegative("delta_energy", delta_energy)
        self.t0 = _optional_count("t0", t0)
        self.n_bounces = check_int("n_bounces", n_bounces, minimum=0)
        self.t1 = _optional_count("t1", t1)
        if not isinstance(consistent_energy, bool):
            raise TypeError(f"consistent_energy must be a bool, got {consistent_energy!r}")
        self.consistent_energy = consistent_energy
        self.eps1 = check_nonnegative("eps1", eps1)
        self.eps2 = check_nonnegative("eps2", eps2)
        self.bounce_direction = check_choice("bounce_direction", bounce_direction,
                                             ("cube", "sphere"))

    def _lower(self, letter: str, t: float) -> Op:
        if letter == "S":
            return bbi_shell_op(self.v0, self.delta_energy, self.t0, float(self.n_bounces),
                                self.t1, self.eps1, self.eps2, self.consistent_energy,
                                self.bounce_direction == "cube", 0)
        if letter == "B":
            return Op(OpCode.SC_KICK, (t,), (BBI_EXTRAS.index("kick_rate"),), "B")
        return Op(OpCode.SC_DRIFT, (t,), (BBI_EXTRAS.index("drift_rate"),), "A")

    # --- state ----------------------------------------------------------------------------
    def extras_layout(self, dim: int) -> dict[str, int]:
        return dict.fromkeys(BBI_EXTRAS, 1)

    def initial_extras(self, n_chains: int, dim: int, normals: NormalSampler) -> np.ndarray:
        x = np.zeros((n_chains, len(BBI_EXTRAS)))
        x[:, BBI_EXTRAS.index("min_V")] = np.inf
        return x

    # --- energies and flow ---------------------------------------------------------------
    def shifted(self, q: Array) -> Array:
        """V = U(q) − v₀."""
        assert self.potential is not None
        return self.potential.value(q) - self.v0

    def energy(self, q: Array, p: Array | None) -> Array:
        """H = √(V (V + |Π|²))."""
        V = self.shifted(q)
        xp = namespace(V)
        return xp.sqrt(V * (V + (p * p).sum(-1)))

    def recorded_energy(self, potential: np.ndarray, kinetic: np.ndarray) -> np.ndarray:
        """H = √(V (V + |Π|²)) from the records (|Π|² = 2·kinetic)."""
        V = potential - self.v0
        return np.sqrt(np.maximum(V * (V + 2.0 * kinetic), 0.0))

    def invariant(self, potential: np.ndarray, kinetic: np.ndarray,
                  extras: dict[str, np.ndarray], n_dof: int) -> np.ndarray:
        """H = √(V (V + |Π|²)) along the recorded states (before the next projection)."""
        return self.recorded_energy(potential, kinetic)

    def speed_limit(self, q: Array) -> Array:
        """√V(q): |θ̇| < √V along the continuous flow."""
        V = self.shifted(q)
        return namespace(V).sqrt(V)

    def vector_field(self, q, p, x):  # type: ignore[no-untyped-def]
        """(θ̇, Π̇, 0) of the continuous flow with the instantaneous H (no bounces)."""
        assert self.potential is not None
        V = self.shifted(q)[..., None]
        H = self.energy(q, p)[..., None]
        return (V / H) * p, -0.5 * (V / H + H / V) * self.potential.grad(q), 0.0 * x

    def parameters(self) -> dict[str, Any]:
        def never(v: float) -> Any:
            return None if math.isinf(v) else int(v)

        return {"v0": self.v0, "delta_energy": self.delta_energy, "t0": never(self.t0),
                "n_bounces": self.n_bounces, "t1": never(self.t1),
                "consistent_energy": self.consistent_energy, "eps1": self.eps1,
                "eps2": self.eps2, "bounce_direction": self.bounce_direction}
