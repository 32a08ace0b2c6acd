r"""AdLaLa: adaptive Langevin on the first layer, Langevin on the others (a preset of
:class:`~dynopt.optim.Partitioned`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from ._common import first_layer_groups
from .partitioned import Partitioned
from .registry import register

__all__ = ["AdLaLa", "preset_groups"]


def preset_groups(name: str, params: Iterable[Any], first: dict[str, Any],
                  rest: dict[str, Any]) -> list[dict[str, Any]]:
    """Param groups with ``first``'s keys defaulted in group 0 and ``rest``'s in the others.

    Raises:
        ValueError: If ``params`` is not a list of at least two param groups (dicts).
    """
    groups = list(params)
    if not groups or not all(isinstance(g, dict) for g in groups):
        raise ValueError(
            f"{name} partitions the network by param groups: pass a list of dicts, the first "
            "layer first, e.g. [{'params': model[0].parameters()}, {'params': "
            "model[2].parameters()}] (or dynopt.optim.make('" + name.lower() + "', model), "
            "which splits off the first parameterized module)")
    if len(groups) < 2:
        raise ValueError(f"{name} needs at least two param groups (the first layer and the "
                         f"rest); got {len(groups)}")
    out = []
    for k, g in enumerate(groups):
        g = dict(g)
        for key, value in (first if k == 0 else rest).items():
            g.setdefault(key, value)
        out.append(g)
    return out


class AdLaLa(Partitioned):
    r"""Adaptive Langevin on the first param group, Langevin on every other group.

    The partitioned integrator of Leimkuhler, Matthews & Vlaar (2019), as in the authors' code:
    per step, A_{h/2} C_{h/2} D_{h/2} E_h D_{h/2} C_{h/2} A_{h/2} on group 0 (see
    :class:`~dynopt.optim.AdaptiveLangevin`), A_{h/2} O_h A_{h/2} on the others (see
    :class:`~dynopt.optim.Langevin`), then the gradient and B_h on all parameters; the first
    step opens with B_{h/2} from zero momenta. ξ is one scalar per tensor (``scope="tensor"``),
    initialised to ξ₀ = 0.1, with N = the tensor's number of elements. Sub-flows on disjoint
    parameters commute, so this is the notebook's interleaved composition as well.

    Defaults are the paper's spiral settings: h = 0.25, τ₁ = τ₂ = 1e-4, γ = 0.1, σ_A = 0.01,
    ε = 0.05, ξ₀ = 0.1. Any group may override any hyperparameter, e.g. separate temperatures
    τ₁, τ₂: ``AdLaLa([{"params": l1, "temperature": 1e-4}, {"params": rest, "temperature":
    1e-6}])``.

    | symbol | code |
    |---|---|
    | h | ``lr`` |
    | τ₁, τ₂ | ``temperature`` of group 0 / of the others (mean-loss convention) |
    | γ | ``gamma`` (Langevin groups) |
    | σ_A, ε, ξ₀ | ``sigma_a``, ``eps``, ``xi0`` (group 0) |

    Args:
        params: A list of at least two param groups, the first layer first (e.g.
            ``[{"params": model[0].parameters()}, {"params": model[2].parameters()}]``).
        lr, gamma, temperature, sigma_a, eps, xi0: Defaults for the groups.
        scope: Scope of ξ (``"tensor"``, ``"group"``, ``"model"``).
        weight_decay: λ ≥ 0, the Gaussian prior λ|θ|²/2 (:mod:`dynopt.optim.prior`).
        seed, noise, foreach, fused, maximize, differentiable, nonfinite: See
            :class:`~dynopt.optim.Partitioned`.

    Raises:
        ValueError: If ``params`` is a flat iterable of tensors (the message says how to split).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor | Callable[[int], float] = 0.25,
        gamma: float | Callable[[int], float] = 0.1,
        temperature: float | Callable[[int], float] = 1e-4,
        sigma_a: float = 0.01,
        eps: float = 0.05,
        xi0: float = 0.1,
        *,
        scope: str = "tensor",
        weight_decay: float = 0.0,
        seed: int | None = None,
        noise: str = "gaussian",
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        groups = preset_groups("AdLaLa", params, {"dynamics": "adaptive-langevin"},
                               {"dynamics": "langevin"})
        super().__init__(groups, lr, dynamics="langevin", gamma=gamma, temperature=temperature,
                         sigma_a=sigma_a, eps=eps, xi0=xi0, scope=scope,
                         weight_decay=weight_decay, seed=seed, noise=noise,
                         foreach=foreach, fused=fused, maximize=maximize,
                         differentiable=differentiable, nonfinite=nonfinite)


@register("adlala")
def _make(model_or_params: Any, **kw: Any) -> AdLaLa:
    """AdLaLa; a module is split into its first parameterized layer and the rest."""
    return AdLaLa(first_layer_groups(model_or_params), **kw)
