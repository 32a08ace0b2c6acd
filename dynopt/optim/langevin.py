r"""Underdamped Langevin dynamics as a ``torch.optim.Optimizer``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor

from .. import systems
from .._validation import check_nonnegative
from ._common import as_params
from .dynamics import LR, MASS, Hyper, OptimizerDynamics, Value, check_momentum, register_dynamics
from .partitioned import Partitioned
from .registry import register

__all__ = ["LANGEVIN", "Langevin"]


def _system(group: Mapping[str, Any], value: Value) -> systems.Langevin:
    """γ from ``gamma``, or from ``momentum`` c = e^{−γh} when that is set."""
    gamma = (-math.log(value("momentum")) / value("lr") if group.get("momentum") is not None
             else value("gamma"))
    return systems.Langevin(None, gamma=gamma, temperature=value("temperature"),
                            mass=value("mass"))


#: Underdamped Langevin as an optimizer dynamics.
LANGEVIN = register_dynamics(OptimizerDynamics(
    name="langevin",
    hypers={"lr": LR, "temperature": Hyper(1e-4, check_nonnegative, schedulable=True),
            "mass": MASS, "gamma": Hyper(0.1, check_nonnegative, schedulable=True),
            "momentum": Hyper(None, check_momentum, optional=True)},
    system=_system, scheme="BAOAB"))


class Langevin(Partitioned):
    r"""Langevin dynamics with the loss L as potential, discretized by a splitting (BAOAB).

    .. math:: d\theta = M^{-1}p\,dt,\qquad dp = -\nabla L(\theta)\,dt - \gamma p\,dt
              + \sqrt{2\gamma\tau}\,M^{1/2}\,dW,

    with invariant density ∝ exp(−(L(θ) + pᵀM⁻¹p/2)/τ). Each ``step()`` uses the gradient in
    ``.grad`` once: the scheme's *optimizer form* (:meth:`~dynopt.integrators.base.
    AbstractIntegrator.optimizer_form`). For BAOAB this is the authors' "leapfrog" form
    B_{h/2} A_{h/2} O_h A_{h/2} on the first call and B_h A_{h/2} O_h A_{h/2} afterwards, where

    | letter | update |
    |---|---|
    | A_t | θ ← θ + t M⁻¹p |
    | B_t | p ← p − t ∇L(θ) |
    | O_t | p ← c p + √((1 − c²)τ) M^½ R, c = e^{−γt}, R ~ N(0, I) |

    The θ sequence is exactly BAOAB's (the stored p carries an extra half kick). Any splitting
    the :class:`~dynopt.systems.Langevin` system offers works (``"OBABO"``, ``"ABOBA"``, ...).

    **lr is the step size h.** With τ = 0 the update is heavy-ball SGD: the increments
    Δₙ = θₙ − θₙ₋₁ obey Δₙ₊₁ = c Δₙ − η ∇L(θₙ) with c = e^{−γh} and η = h²(1 + c)/2, i.e.
    ``torch.optim.SGD(lr=η, momentum=c)`` from the second step on (the first step moves by
    −(η/2)∇L instead of −η∇L). With τ > 0 the recursion gets the noise (h/2)d(Rₙ₋₁ + Rₙ),
    d = √((1−c²)τ), the normals of the O steps before and after θₙ (the first increment gets
    (h/2)d R₀).
    When ``lr`` changes (h → h′, e.g. by a scheduler), the opening kick B_{h′} of the next call
    holds the previous step's closing half kick at h′/2 (variable-step BAOAB would use h/2): p
    differs from it by (h′ − h)/2 · ∇L once per change (docs/optimizers.md, "How lr maps to h").

    | symbol | code |
    |---|---|
    | h | ``lr`` (float, 1-element tensor or schedule; LR schedulers drive it) |
    | γ | ``gamma`` (≥ 0; float or schedule) |
    | τ | ``temperature`` (≥ 0; float or schedule), per *mean* loss (see below) |
    | M | ``mass`` (scalar) |

    Temperature convention: τ multiplies the *mean* minibatch loss, so the target
    exp(−L_mean/τ) is the Bayesian posterior exp(−Σᵢ ℓᵢ/T) of the summed loss at T = τ·N_train
    (τ = 1e-4 with 500 examples is T = 0.05, a "cold posterior").

    Reference: B. Leimkuhler, C. Matthews, T. Vlaar, "Partitioned integrators for
    thermodynamic parameterization of neural networks", Found. Data Sci. 1(4) (2019);
    B. Leimkuhler, C. Matthews, AMRX 2013 (BAOAB).

    Args:
        params: Parameters or param groups (each group may override any hyperparameter).
        lr: Step size h > 0 (default 0.25, the AdLaLa paper's; groups may set their own).
        gamma: Friction γ ≥ 0.
        temperature: Temperature τ ≥ 0.
        scheme: A splitting string over A, B, O or an integrator (default ``"BAOAB"``).
        mass: Scalar mass M > 0.
        momentum: Or the friction as c = e^{−γh} ∈ (0, 1] (None: use ``gamma``). When set it
            overrides ``gamma`` (γ = −ln c / h at the current h), so ``OneCycleLR(...,
            cycle_momentum=True)`` cycles the friction; at τ = 0 it is SGD's ``momentum``.
        weight_decay: λ ≥ 0, the Gaussian prior λ|θ|²/2 added to the potential
            (:mod:`dynopt.optim.prior`).
        localization: γ_loc ≥ 0, the tether γ_loc|θ − θ₀|²/2 to the parameters θ₀ at the
            first step (local SGLD, see docs/optimizers.md).
        nbeta: nβ > 0, the inverse temperature multiplying the loss (U = nβ L + ...).
        seed: Seed of the optimizer's noise (identical on every DDP rank).
        noise: ``"gaussian"``, ``"gaussian-f64"`` or ``"discrete"`` (see
            :class:`~dynopt.optim.Partitioned`).
        foreach, fused, maximize, differentiable, nonfinite: See
            :class:`~dynopt.optim.Partitioned`.
    """

    only_dynamics = "langevin"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor | Callable[[int], float] = 0.25,
        gamma: float | Callable[[int], float] = 0.1,
        temperature: float | Callable[[int], float] = 1e-4,
        *,
        scheme: Any = "BAOAB",
        mass: float = 1.0,
        momentum: float | None = None,
        weight_decay: float = 0.0,
        localization: float = 0.0,
        nbeta: float = 1.0,
        seed: int | None = None,
        noise: str = "gaussian",
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        super().__init__(params, lr, dynamics="langevin", gamma=gamma, temperature=temperature,
                         scheme=scheme, mass=mass, momentum=momentum,
                         weight_decay=weight_decay, localization=localization, nbeta=nbeta,
                         seed=seed, noise=noise, foreach=foreach,
                         fused=fused, maximize=maximize, differentiable=differentiable,
                         nonfinite=nonfinite)

@register("langevin")
def _make(model_or_params: Any, **kw: Any) -> Langevin:
    """Langevin with the spiral-task defaults of the AdLaLa paper (h=0.25, γ=0.1, τ=1e-4)."""
    return Langevin(as_params(model_or_params), **kw)
