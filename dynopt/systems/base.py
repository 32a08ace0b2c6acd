"""The system interface: continuous-time dynamics described by the sub-flows it offers."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .._validation import as_finite_array
from ..potentials.base import AbstractPotential, Array
from ..program import Op

__all__ = ["AbstractSystem"]

#: Draws standard normals of a given shape (used for random initial conditions).
NormalSampler = Callable[[tuple[int, ...]], np.ndarray]


class AbstractSystem(abc.ABC):
    """Continuous-time dynamics on (q, p, extras).

    A system declares the *letters* it offers: exactly solvable (or, where marked, explicitly
    discretized) sub-flows that an integrator composes. ``lower(letter, t)`` turns a letter and a
    duration into a primitive :class:`~dynopt.program.Op`; the integrator never needs to know the
    physics, and the backend never needs to know the system.

    Class attributes:
        letters: ``{letter: description}`` of the sub-flows offered.
        has_momentum: False for first-order (overdamped) dynamics.
        is_stochastic: Whether some sub-flow draws noise.
        default_scheme: The integrator used when none is given (a splitting string or a name).
        has_kinetic_temperature: False where the energy is not U(q) + pᵀM⁻¹p/2 (Born–Infeld,
            ECDSep): pᵀM⁻¹p/N is then no temperature, and
            :func:`~dynopt.diagnostics.kinetic_temperature` refuses the trajectory.
        vector_extras: Names of the extras that are vectors whatever their size (see
            :func:`dynopt.trajectory.recorded_extras`).
        whole_step_letters: Letters that are once-per-step maps rather than sub-flows of a
            duration t (BornInfeld's and ECDSep's shell ``S``, ECDSep's rotation ``R``): their op
            ignores t, so :meth:`~dynopt.integrators.base.AbstractIntegrator.check` refuses a
            scheme that uses one more than once or with a fraction other than 1.

    Args:
        potential: The potential energy U(q) (or loss, in an optimizer).
        mass: Diagonal mass, a scalar or one positive value per coordinate.
    """

    letters: ClassVar[dict[str, str]] = {}
    has_momentum: ClassVar[bool] = True
    is_stochastic: ClassVar[bool] = False
    default_scheme: ClassVar[str] = "BAB"
    has_kinetic_temperature: ClassVar[bool] = True
    #: Extras whose size follows the dimension or a parameter (Nosé–Hoover chain ``v``/``eta``,
    #: overdamped ``noise_prev``): recorded ``(chain, draw, size)`` even when the size is 1, while
    #: the scalar extras (size 1 always, e.g. ``xi``, ``gamma``) are recorded ``(chain, draw)``.
    vector_extras: ClassVar[frozenset[str]] = frozenset()
    whole_step_letters: ClassVar[frozenset[str]] = frozenset()

    @property
    def is_conservative(self) -> bool:
        """Whether the flow conserves its energy (or invariant): deterministic and without
        friction (PortHamiltonian with γ > 0 dissipates)."""
        return not self.is_stochastic

    def __init__(self, potential: AbstractPotential | None, *, mass: Any = 1.0) -> None:
        if potential is not None and not isinstance(potential, AbstractPotential):
            raise TypeError(
                f"potential must be a dynopt.potentials potential (or Custom), got {potential!r}"
            )
        self.potential = potential
        m = as_finite_array("mass", mass, ndim=(0, 1), positive=True)
        if m.ndim == 1 and potential is not None and m.shape[0] != potential.dim:
            raise ValueError(
                f"mass has {m.shape[0]} entries but the potential has dim={potential.dim}")
        self._mass = m
        self._mass.flags.writeable = False  # its device copies are cached (see _minv_like)

    # --- shape ----------------------------------------------------------------------------
    @staticmethod
    def localize(potential: AbstractPotential | None, nbeta: float, localization: float,
                 center: Any) -> AbstractPotential | None:
        """``potential`` with the local-sampling terms (:class:`~dynopt.potentials.Localized`)
        when nβ ≠ 1 or γ_loc ≠ 0, else unchanged."""
        if center is not None and localization == 0.0:
            raise ValueError("center is the tether's centre q₀ and has no effect without "
                             f"localization > 0 (got localization={localization}); pass "
                             "localization=, or leave center out")
        if nbeta == 1.0 and localization == 0.0:
            return potential
        if potential is None:
            raise ValueError("nbeta/localization/center need a potential; in an optimizer set "
                             "them as the optimizer's (or a param group's) keys instead")
        from ..potentials.localized import Localized

        return Localized(potential, nbeta=nbeta, localization=localization, center=center)

    @property
    def dim(self) -> int:
        if self.potential is None:
            raise ValueError(f"{type(self).__name__} has no potential, so no dimension")
        return self.potential.dim

    def mass_vector(self, dim: int | None = None) -> np.ndarray:
        """The diagonal of M as a vector of length ``dim``."""
        d = self.dim if dim is None else dim
        return np.broadcast_to(self._mass, (d,)).astype(np.float64).copy()

    @property
    def mass(self) -> np.ndarray:
        return self._mass

    # --- sub-flows ------------------------------------------------------------------------
    def offers(self, letter: str) -> bool:
        return letter in self.letters

    def lower(self, letter: str, t: float) -> Op:
        """The primitive op for sub-flow ``letter`` run for time ``t``."""
        if letter not in self.letters:
            raise ValueError(
                f"{type(self).__name__} offers the letters {sorted(self.letters)}, not {letter!r}"
            )
        return self._lower(letter, t)

    @abc.abstractmethod
    def _lower(self, letter: str, t: float) -> Op: ...

    # --- extra state ----------------------------------------------------------------------
    def extras_layout(self, dim: int) -> dict[str, int]:
        """Names and sizes of the per-chain extra variables (thermostats, memory)."""
        return {}

    def initial_extras(self, n_chains: int, dim: int, normals: NormalSampler) -> np.ndarray:
        """Initial extras, shape ``(n_chains, n_extras)``."""
        return np.zeros((n_chains, sum(self.extras_layout(dim).values())))

    def initial_momentum(self, n_chains: int, dim: int, normals: NormalSampler) -> np.ndarray:
        """Momenta used when ``p0`` is not given: Maxwell–Boltzmann, p ~ N(0, τM), for a system
        with a ``temperature`` τ (every thermostat: Langevin, adaptive Langevin, Nosé–Hoover and
        its chains), else zeros."""
        temperature = getattr(self, "temperature", None)
        if temperature is None:
            return np.zeros((n_chains, dim))
        return normals((n_chains, dim)) * np.sqrt(temperature * self.mass_vector(dim))

    # --- energies -------------------------------------------------------------------------
    def kinetic_energy(self, p: Array) -> Array:
        """pᵀM⁻¹p/2 over the last axis."""
        return 0.5 * (p * p * self._minv_like(p)).sum(-1)

    def energy(self, q: Array, p: Array | None) -> Array:
        """The Hamiltonian H = U(q) + pᵀM⁻¹p/2 (U alone for first-order systems)."""
        assert self.potential is not None
        u = self.potential.value(q)
        return u if p is None else u + self.kinetic_energy(p)

    def recorded_energy(self, potential: np.ndarray, kinetic: np.ndarray) -> np.ndarray:
        """H from the records U and K = pᵀM⁻¹p/2 (``traj.energy``): U + K here; systems whose
        energy is not separable (Born–Infeld, ECDSep) override it."""
        return potential + kinetic

    def invariant(
        self,
        potential: np.ndarray,
        kinetic: np.ndarray,
        extras: dict[str, np.ndarray],
        n_dof: int,
    ) -> np.ndarray | None:
        """The conserved quantity of an extended system (None when H itself is the invariant).

        Args:
            potential: U along a trajectory, shape ``(chain, draw)``.
            kinetic: Kinetic energy, same shape.
            extras: Recorded extras, each ``(chain, draw, size)``.
            n_dof: Number of coordinates the thermostat acts on.
        """
        return None

    # --- continuous-time vector field -------------------------------------------------------
    def vector_field(self, q: Array, p: Array, x: Array) -> tuple[Array, Array, Array]:
        """Deterministic part of the dynamics (noise dropped): ``(dq/dt, dp/dt, dx/dt)``.

        Array form (numpy or torch), shapes ``(..., dim)``, ``(..., dim)``, ``(..., n_extras)``.
        Used by the torchdiffeq reference flow to measure global errors and orders
        (:func:`dynopt.diagnostics.reference_flow`).
        """
        raise NotImplementedError(f"{type(self).__name__} does not define a vector field")

    def _minv_like(self, p: Array) -> Array:
        """M⁻¹ as a vector over the last axis of ``p``, in its namespace, dtype and device (a
        tensor is made once per device and dtype: a host copy per call synchronised a GPU)."""
        dim = p.shape[-1]
        if isinstance(p, np.ndarray):
            return 1.0 / self.mass_vector(dim)
        from ..backends.torch.ops import host_constant

        return host_constant(self, ("minv", dim), self._mass,
                             lambda: 1.0 / self.mass_vector(dim), p)

    # --- description ----------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """The system's parameters, for reports."""
        return {}

    def __repr__(self) -> str:
        parts = [repr(self.potential)] if self.potential is not None else []
        parts += [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                  for k, v in self.parameters().items()]
        if np.any(self._mass != 1.0):
            parts.append(f"mass={self._mass.tolist()}")
        return f"{type(self).__name__}({', '.join(parts)})"
