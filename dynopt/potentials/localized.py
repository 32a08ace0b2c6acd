r"""A potential with an inverse temperature, a tether and a Gaussian prior (local sampling)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_finite_array, check_nonnegative, check_positive
from .base import AbstractPotential, Array, namespace

if TYPE_CHECKING:
    import torch

__all__ = ["Localized"]


class Localized(AbstractPotential):
    r"""U_loc(q) = nβ U(q) + (γ_loc/2)|q − q₀|² + (λ/2)|q|².

    .. math:: \nabla U_{loc} = n\beta\,\nabla U + \gamma_{loc}(q - q_0) + \lambda q,\qquad
              \Delta U_{loc} = n\beta\,\Delta U + d\,(\gamma_{loc} + \lambda).

    At temperature 1 the Gibbs density exp(−U_loc) is the local posterior of devinterp's local
    SGLD (Lau et al., AISTATS 2025), whose samples estimate the local learning coefficient
    λ̂ = nβ(E[U] − U(q₀)). The terms are those of the optimizers' ``nbeta``, ``localization``
    and ``weight_decay`` (one implementation: :mod:`dynopt.optim.prior`). Array form only: it
    integrates on the torch backend (the default for it). A minibatch potential (``stochastic``,
    e.g. ``NetworkLoss(..., batch_size=...)``) is refused: the wrapper evaluates U on full
    batches only; for local SGLD on minibatches use the optimizers' ``nbeta``/``localization``.

    | symbol | code |
    |---|---|
    | U | ``potential`` |
    | nβ | ``nbeta`` (> 0) |
    | γ_loc | ``localization`` (≥ 0) |
    | q₀ | ``center`` (length ``dim``; default the origin) |
    | λ | ``weight_decay`` (≥ 0) |

    Args:
        potential: The base potential U.
        nbeta: Inverse temperature nβ multiplying U.
        localization: Tether strength γ_loc.
        center: Tether centre q₀.
        weight_decay: Gaussian-prior strength λ.
    """

    name = "localized"
    backends = ("torch",)

    def __init__(self, potential: AbstractPotential, *, nbeta: float = 1.0,
                 localization: float = 0.0, center: Any = None, weight_decay: float = 0.0
                 ) -> None:
        if not isinstance(potential, AbstractPotential):
            raise TypeError(f"potential must be a dynopt potential, got {potential!r}")
        if potential.stochastic:
            raise ValueError(
                f"Localized evaluates its potential on full batches, and {potential!r} is a "
                "minibatch (stochastic) potential: its minibatches would be silently dropped. "
                "Use the full-batch potential, or the optimizers' nbeta=/localization= "
                "(dynopt.optim.Langevin) for local SGLD on minibatches")
        super().__init__(potential.dim)
        self.base = potential
        self.nbeta = check_positive("nbeta", nbeta)
        self.localization = check_nonnegative("localization", localization)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        c = np.zeros(self.dim) if center is None else as_finite_array("center", center,
                                                                      ndim=(1,))
        if c.shape != (self.dim,):
            raise ValueError(f"center must have {self.dim} entries, got shape {c.shape}")
        self.center = c  # (a fresh array: as_finite_array copies)
        self.center.flags.writeable = False  # its device copies are cached (assign a new one)

    def _center(self, q: Array) -> Array:
        if namespace(q) is np:
            return self.center
        from ..backends.torch.ops import host_constant

        return host_constant(self, "center", self.center, self.center.copy, q)

    def value(self, q: Array) -> Array:
        from ..optim.prior import potential_value

        return self.nbeta * self.base.value(q) + potential_value(
            q, weight_decay=self.weight_decay, localization=self.localization,
            center=self._center(q))

    def grad(self, q: Array) -> Array:
        from ..optim.prior import potential_gradient

        return potential_gradient(q, self.base.grad(q), nbeta=self.nbeta,
                                  weight_decay=self.weight_decay,
                                  localization=self.localization, center=self._center(q))

    def laplacian(self, q: Array) -> Array:
        return self.nbeta * self.base.laplacian(q) + self.dim * (self.localization
                                                                 + self.weight_decay)

    # --- what a network's loss offers, where the base offers it -------------------------------
    # Properties that raise AttributeError when the base lacks the capability, so that
    # ``hasattr`` (how observables and diagnostics ask) answers as for the base.
    @property
    def hvp(self) -> Callable[..., torch.Tensor]:
        """∇²U_loc z = nβ ∇²U z + (γ_loc + λ) z, from the base's Hessian-vector products."""
        base_hvp = self.base.hvp  # type: ignore[attr-defined]
        return lambda q, z, **kw: self._shift_hvp(base_hvp(q, z, **kw), z)

    @property
    def grad_and_hvp(self) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """(∇U_loc, ∇²U_loc z) from the base's single pass."""
        base_both = self.base.grad_and_hvp  # type: ignore[attr-defined]

        def both(q: torch.Tensor, z: torch.Tensor, **kw: Any
                 ) -> tuple[torch.Tensor, torch.Tensor]:
            from ..optim.prior import potential_gradient

            g, hz = base_both(q, z, **kw)
            g = potential_gradient(q, g, nbeta=self.nbeta, weight_decay=self.weight_decay,
                                   localization=self.localization, center=self._center(q))
            return g, self._shift_hvp(hz, z)

        return both

    @property
    def hutchinson(self) -> Callable[..., torch.Tensor]:
        """Per-coordinate terms zᵢ(∇²U_loc z)ᵢ (see ``NetworkLoss.hutchinson``)."""
        hvp = self.hvp
        return lambda q, z, **kw: z * hvp(q, z, **kw)

    def _shift_hvp(self, hz: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = self.nbeta * hz
        c = self.localization + self.weight_decay
        return out + c * z if c else out

    @property
    def layers(self) -> Any:
        """The base's blocks of coordinates (a network's parameter tensors)."""
        return self.base.layers  # type: ignore[attr-defined]

    @property
    def data_loss(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The base network's training loss (without nβ or the tether and prior terms)."""
        return self.base.data_loss  # type: ignore[attr-defined]

    @property
    def heldout_data(self) -> Any:
        return self.base.heldout_data  # type: ignore[attr-defined]

    @property
    def heldout_loss(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The base network's held-out loss."""
        return self.base.heldout_loss  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        c = self.center
        center = ("" if not c.any() else f", center={c.tolist()}" if c.size <= 6
                  else f", center=<{c.size} values, |q₀| = {float(np.linalg.norm(c)):.6g}>")
        return (f"Localized({self.base!r}, nbeta={self.nbeta}, localization={self.localization},"
                f" weight_decay={self.weight_decay}{center})")
