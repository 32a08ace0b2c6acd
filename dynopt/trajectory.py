"""Trajectories: what ``integrate()`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .stepping import State

__all__ = ["Trajectory", "recorded_extras"]


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Recorded states of a batch of chains, as numpy arrays in ``(chain, draw, ...)`` layout.

    Trajectories compare (and hash) by identity, as :class:`~dynopt.stepping.State` does; compare
    their arrays to compare runs.

    The layout is the one ArviZ and BlackJAX use, so ``az.from_dict(posterior={"q": traj.q})``
    works directly (see docs/user-guide.md, "Diagnostics").

    Attributes:
        t: Times of the records, shape ``(draw,)``; the first record is the initial state.
        q: Positions, ``(chain, draw, dim)``.
        p: Momenta, ``(chain, draw, dim)``, or None for first-order dynamics.
        energy: The energy H per record: U + pᵀM⁻¹p/2 (U for first-order dynamics), the
            system's own H where it is not separable (Born–Infeld, ECDSep), ``(chain, draw)``.
        extras: ``potential`` and ``kinetic`` energies, the system's extra variables and
            ``invariant`` for extended systems (Nosé–Hoover), all numpy. A scalar variable (e.g.
            ``xi``, ``gamma``) is ``(chain, draw)``; a vector one (a Nosé–Hoover chain's ``v``
            and ``eta``, the overdamped ``noise_prev``) is ``(chain, draw, size)``, also when
            its size is 1 (:func:`recorded_extras`).
        h: Step size.
        record_every: Steps between records.
        seed: The seed that reproduces the run.
        backend: ``"numba"`` or ``"torch"``.
        system: The system.
        integrator: The integrator.
        final_state: The state after the last step, to continue the run bit for bit.
        events: The :class:`~dynopt.events.EventLog` of a run with ``events=`` (else None).
        observables: The :mod:`dynopt.observables` a run recorded (None: the whole state). Such
            a run stores them in ``extras``; ``q`` is θ only if ``"theta"`` was recorded (else it
            has 0 columns, so ``dim`` is 0) and ``p`` is None.
    """

    t: np.ndarray
    q: np.ndarray
    p: np.ndarray | None
    energy: np.ndarray
    extras: dict[str, np.ndarray]
    h: float
    record_every: int
    seed: int
    backend: str
    system: Any = field(repr=False)
    integrator: Any = field(repr=False)
    final_state: State | None = field(default=None, repr=False)
    events: Any = field(default=None, repr=False)
    observables: Any = field(default=None, repr=False)

    @property
    def n_chains(self) -> int:
        return int(self.q.shape[0])

    @property
    def n_draws(self) -> int:
        return int(self.q.shape[1])

    @property
    def dim(self) -> int:
        return int(self.q.shape[2])

    @property
    def conserved(self) -> np.ndarray:
        """The quantity the deterministic dynamics conserves: the extended-system invariant if
        there is one, else the energy."""
        return self.extras.get("invariant", self.energy)

    def to_arviz_dict(self) -> dict[str, np.ndarray]:
        """Arrays for ``arviz.from_dict(posterior=...)``: q, and p / extras when present."""
        out = {"q": self.q}
        if self.p is not None:
            out["p"] = self.p
        out.update({k: v for k, v in self.extras.items() if v.ndim >= 2})
        return out

    def to_arviz(self) -> Any:
        """The run as an ``arviz.InferenceData`` (needs the optional package ``arviz``).

        Groups: ``posterior`` holds :meth:`to_arviz_dict` (q and p with the shared dimension
        ``dim``, extras); ``sample_stats`` holds ``energy`` (H per draw, the name ArviZ's
        ``bfmi`` and ``plot_energy`` read). ``posterior.attrs`` record h, record_every, seed,
        backend, system, integrator and the time of the first draw and between draws, so that
        t = t0 + draw · dt.

        Raises:
            ImportError: If arviz is not installed, with the command that installs it.
        """
        try:
            import arviz as az
        except ImportError as err:
            raise ImportError(
                "Trajectory.to_arviz() needs the optional package arviz "
                "(pip install arviz); to_arviz_dict() gives the same arrays without it"
            ) from err
        posterior = self.to_arviz_dict()
        dims = {k: ["dim"] for k in ("q", "p") if k in posterior}
        dt = float(self.t[1] - self.t[0]) if self.t.size > 1 else float(self.h * self.record_every)
        attrs = {"h": float(self.h), "record_every": int(self.record_every),
                 "seed": int(self.seed), "backend": self.backend, "system": repr(self.system),
                 "integrator": repr(self.integrator), "t0": float(self.t[0]), "dt": dt,
                 "inference_library": "dynopt"}
        return az.from_dict(posterior=posterior, sample_stats={"energy": self.energy},
                            dims=dims, posterior_attrs=attrs)

    def __repr__(self) -> str:
        return (f"Trajectory(chains={self.n_chains}, draws={self.n_draws}, dim={self.dim}, "
                f"h={self.h}, record_every={self.record_every}, backend={self.backend!r}, "
                f"system={self.system!r}, integrator={self.integrator!r})")


def recorded_extras(system: Any, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The extras of a trajectory from the recorded columns ``raw`` (each ``(chain, draw,
    size)``): a scalar variable becomes ``(chain, draw)``, a vector one (named in
    ``system.vector_extras``) keeps its last axis even when its size is 1, so that the shape of
    ``traj.extras["v"]`` does not depend on whether the chain length (or dim) happens to be 1."""
    vectors = getattr(system, "vector_extras", frozenset())
    return {k: (v if k in vectors or v.shape[-1] != 1 else v[..., 0]) for k, v in raw.items()}
