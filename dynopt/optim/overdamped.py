r"""Overdamped Langevin dynamics (SGLD) as a ``torch.optim.Optimizer``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor

from .. import systems
from .._validation import check_choice, check_nonnegative
from ._common import as_params
from .dynamics import LR, Hyper, OptimizerDynamics, Value, one_of, register_dynamics
from .partitioned import Partitioned
from .registry import register

__all__ = ["OVERDAMPED", "OverdampedLangevin"]


def _system(group: Mapping[str, Any], value: Value) -> systems.OverdampedLangevin:
    return systems.OverdampedLangevin(None, temperature=value("temperature"))


def _step(group: Mapping[str, Any], lr: float) -> float:
    """dt = lr, or lr²/2 (LOL's overdamped groups: the high-friction limit of a step lr)."""
    return lr * lr / 2.0 if group.get("overdamped_dt") == "lr**2/2" else lr


#: Overdamped Langevin as an optimizer dynamics.
OVERDAMPED = register_dynamics(OptimizerDynamics(
    name="overdamped",
    hypers={"lr": LR, "temperature": Hyper(1e-4, check_nonnegative, schedulable=True),
            "overdamped_dt": Hyper("lr", one_of(("lr", "lr**2/2")), numeric=False)},
    system=_system, scheme="em", step=_step))

_SCHEMES = {"em": "em", "euler-maruyama": "em", "sgld": "em", "lm": "lm",
            "leimkuhler-matthews": "lm"}


class OverdampedLangevin(Partitioned):
    r"""Overdamped (Brownian) Langevin dynamics, dθ = −∇L(θ) dt + √(2τ) dW.

    Invariant density ∝ exp(−L/τ). Two one-gradient schemes, with dt = ``lr``:

    * ``scheme="em"`` (Euler–Maruyama; with minibatch gradients this is SGLD, Welling & Teh
      2011): θₙ₊₁ = θₙ − dt ∇L(θₙ) + √(2τ dt) Rₙ. Its invariant measure is biased at first
      order (on a quadratic ⟨θ²⟩ = τ/(ω²(1 − dt ω²/2))).
    * ``scheme="lm"`` (Leimkuhler–Matthews 2014, the high-friction limit of BAOAB):
      θₙ₊₁ = θₙ − dt ∇L(θₙ) + √(τ dt/2) (Rₙ + Rₙ₊₁), exact variance on quadratics and second
      order for the invariant measure at the same cost. The previous normal is kept per element
      (``state[p]["noise_prev"]``; EM keeps no such memory, only its step count).

    | symbol | code |
    |---|---|
    | dt | ``lr`` |
    | τ | ``temperature`` (≥ 0; mean-loss convention, T = τ·N_train for a summed loss) |

    Args:
        params: Parameters or param groups.
        lr: Time step dt > 0 (default 0.01; groups may set their own).
        temperature: Temperature τ ≥ 0.
        scheme: ``"em"`` (default) or ``"lm"``.
        weight_decay: λ ≥ 0, the Gaussian prior λ|θ|²/2 added to the potential.
        localization: γ_loc ≥ 0, the tether γ_loc|θ − θ₀|²/2 to the parameters θ₀ at the
            first step (devinterp's local SGLD; see docs/optimizers.md for the LLC recipe).
        nbeta: nβ > 0, the inverse temperature multiplying the loss (U = nβ L + ...).
        seed, noise, foreach, fused, maximize, differentiable, nonfinite: See
            :class:`~dynopt.optim.Partitioned`.
    """

    only_dynamics = "overdamped"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor | Callable[[int], float] = 0.01,
        temperature: float | Callable[[int], float] = 1e-4,
        *,
        scheme: str = "em",
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
        key = check_choice("scheme", scheme.lower() if isinstance(scheme, str) else scheme,
                           tuple(_SCHEMES))
        super().__init__(params, lr, dynamics="overdamped", temperature=temperature,
                         scheme=_SCHEMES[key], weight_decay=weight_decay,
                         localization=localization, nbeta=nbeta, seed=seed, noise=noise,
                         foreach=foreach,
                         fused=fused, maximize=maximize, differentiable=differentiable,
                         nonfinite=nonfinite)


@register("overdamped-langevin")
def _make(model_or_params: Any, **kw: Any) -> OverdampedLangevin:
    """SGLD (Euler–Maruyama) with dt = 0.01 and τ = 1e-4 unless given."""
    return OverdampedLangevin(as_params(model_or_params), **kw)


register("sgld")(_make)
