r"""Adaptive Langevin (AdL, SGNHT) as a ``torch.optim.Optimizer``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor

from .. import systems
from .._validation import check_nonnegative, check_positive, check_real
from ._common import as_params
from .dynamics import LR, MASS, SCOPE, Hyper, OptimizerDynamics, Value, register_dynamics
from .partitioned import Partitioned
from .registry import register

__all__ = ["ADAPTIVE_LANGEVIN", "AdaptiveLangevin"]


def _system(group: Mapping[str, Any], value: Value) -> systems.AdaptiveLangevin:
    xi0 = 0.1 if group.get("xi0") is None else value("xi0")
    return systems.AdaptiveLangevin(None, temperature=value("temperature"),
                                    sigma_a=value("sigma_a"), eps=value("eps"), xi0=xi0,
                                    mass=value("mass"))


#: Adaptive Langevin as an optimizer dynamics.
ADAPTIVE_LANGEVIN = register_dynamics(OptimizerDynamics(
    name="adaptive-langevin",
    hypers={"lr": LR, "temperature": Hyper(1e-4, check_positive, schedulable=True),
            "mass": MASS, "sigma_a": Hyper(0.01, check_nonnegative),
            "eps": Hyper(0.05, check_positive), "xi0": Hyper(None, check_real, optional=True),
            "scope": SCOPE},
    system=_system, scheme="BACDEDCAB"))


class AdaptiveLangevin(Partitioned):
    r"""Adaptive Langevin: a Nosé–Hoover friction ξ with additive noise on the momenta.

    .. math:: d\theta = M^{-1}p\,dt,\quad dp = -\nabla L\,dt - \xi p\,dt + \sigma_A M^{1/2} dW,
              \quad d\xi = \varepsilon\,(p^\top M^{-1}p - N\tau)\,dt .

    Invariant density ∝ exp(−(L + pᵀM⁻¹p/2)/τ) · exp(−(ξ − γ*)²/(2ετ)) with γ* = σ_A²/(2τ), so
    ⟨ξ⟩ = σ_A²/(2τ) and Var ξ = ετ. Gradient noise of variance s² per component (a minibatch
    gradient) used in a kick of size h only moves ⟨ξ⟩ to (σ_A² + h s²)/(2τ): the parameters stay
    at temperature τ, where plain Langevin heats to τ + h s²/(2γ) (Jones & Leimkuhler 2011;
    Ding et al. 2014; Leimkuhler & Shang 2016).

    Default scheme ``"BACDEDCAB"``, run in optimizer form as the authors' step
    A_{h/2} C_{h/2} D_{h/2} E_h D_{h/2} C_{h/2} A_{h/2}, gradient, B_h, with

    | letter | update |
    |---|---|
    | C_t | p ← e^{−ξt} p |
    | D_t | p ← p + σ_A √t M^½ R |
    | E_t | ξ ← ξ + t ε (pᵀM⁻¹p − N τ) |

    ``scheme="BAEOEAB"`` is Leimkuhler–Shang's BADODAB (exact OU step with friction ξ).

    | symbol | code |
    |---|---|
    | h | ``lr`` |
    | τ | ``temperature`` (> 0) |
    | σ_A | ``sigma_a`` |
    | ε | ``eps`` (1/thermostat mass) |
    | ξ₀ | ``xi0`` (initial ξ, default 0.1 as in the authors' optimizer) |
    | N | elements in the ``scope`` of ξ (``"tensor"``, the default; ``"group"``; ``"model"``) |

    Args:
        params: Parameters or param groups.
        lr: Step size h > 0 (default 0.25; groups may set their own).
        temperature: τ > 0.
        sigma_a: σ_A ≥ 0.
        eps: ε > 0.
        xi0: Initial ξ.
        scope: ``"tensor"``, ``"group"`` or ``"model"``.
        scheme: Splitting string or integrator.
        mass: Scalar mass.
        weight_decay: λ ≥ 0, the Gaussian prior λ|θ|²/2 (:mod:`dynopt.optim.prior`).
        seed, noise, foreach, fused, maximize, differentiable, nonfinite: See
            :class:`~dynopt.optim.Partitioned`.
    """

    only_dynamics = "adaptive-langevin"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor | Callable[[int], float] = 0.25,
        temperature: float | Callable[[int], float] = 1e-4,
        sigma_a: float = 0.01,
        eps: float = 0.05,
        xi0: float = 0.1,
        *,
        scope: str = "tensor",
        scheme: Any = "BACDEDCAB",
        mass: float = 1.0,
        weight_decay: float = 0.0,
        seed: int | None = None,
        noise: str = "gaussian",
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        super().__init__(params, lr, dynamics="adaptive-langevin", temperature=temperature,
                         sigma_a=sigma_a, eps=eps, xi0=xi0, scope=scope, scheme=scheme,
                         mass=mass, weight_decay=weight_decay, seed=seed, noise=noise,
                         foreach=foreach, fused=fused,
                         maximize=maximize, differentiable=differentiable, nonfinite=nonfinite)


@register("adaptive-langevin")
def _make(model_or_params: Any, **kw: Any) -> AdaptiveLangevin:
    """AdL with the AdLaLa paper's layer-1 settings (h=0.25, τ=1e-4, σ_A=0.01, ε=0.05)."""
    return AdaptiveLangevin(as_params(model_or_params), **kw)
