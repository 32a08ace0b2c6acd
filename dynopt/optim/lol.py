r"""LOL: Langevin on the first layer, overdamped Langevin on the others (a preset of
:class:`~dynopt.optim.Partitioned`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from ._common import first_layer_groups
from .adlala import preset_groups
from .partitioned import Partitioned
from .registry import register

__all__ = ["LOL"]


class LOL(Partitioned):
    r"""Langevin (BAOAB) on the first param group, overdamped Langevin on the others.

    Leimkuhler, Matthews & Vlaar (2019) describe LOL as Langevin on layer 1 and, on layer 2, the
    same step with the O step replaced by a full momentum refresh p ← √τ₂ R (γ → ∞). Eliminating
    p for that block gives θₙ₊₁ = θₙ − (h²/2)∇L(θₙ) + (h/2)√τ₂ (Rₙ₋₁ + Rₙ), which is the
    Leimkuhler–Matthews scheme with time step **dt = h²/2** — so the overdamped groups run
    ``OverdampedLangevin`` with ``scheme="lm"`` and ``overdamped_dt="lr**2/2"``: one ``lr`` = h
    for all groups, in the authors' convention. (No reference implementation of LOL exists; the
    layer assignment follows the paper's (1)/(2) indexing.)

    | symbol | code |
    |---|---|
    | h | ``lr`` (dt = h²/2 on the overdamped groups) |
    | τ₁, τ₂ | ``temperature`` of group 0 / of the others |
    | γ | ``gamma`` (group 0) |

    Args:
        params: A list of at least two param groups, the first layer first.
        lr, gamma, temperature: Defaults for the groups (h = 0.25, γ = 0.1, τ = 1e-4).
        weight_decay: λ ≥ 0, the Gaussian prior λ|θ|²/2 (:mod:`dynopt.optim.prior`).
        seed, noise, foreach, fused, maximize, differentiable, nonfinite: See
            :class:`~dynopt.optim.Partitioned`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor | Callable[[int], float] = 0.25,
        gamma: float | Callable[[int], float] = 0.1,
        temperature: float | Callable[[int], float] = 1e-4,
        *,
        weight_decay: float = 0.0,
        seed: int | None = None,
        noise: str = "gaussian",
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        groups = preset_groups("LOL", params, {"dynamics": "langevin"},
                               {"dynamics": "overdamped", "scheme": "lm"})
        super().__init__(groups, lr, dynamics="overdamped", gamma=gamma,
                         temperature=temperature, overdamped_dt="lr**2/2",
                         weight_decay=weight_decay, seed=seed,
                         noise=noise, foreach=foreach, fused=fused, maximize=maximize,
                         differentiable=differentiable, nonfinite=nonfinite)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if param_group.get("dynamics", "overdamped") == "overdamped":
            param_group.setdefault("scheme", "lm")
        super().add_param_group(param_group)


@register("lol")
def _make(model_or_params: Any, **kw: Any) -> LOL:
    """LOL; a module is split into its first parameterized layer and the rest."""
    return LOL(first_layer_groups(model_or_params), **kw)
