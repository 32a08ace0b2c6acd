r"""The potential an optimizer's dynamics sees: the loss, a Gaussian prior and a tether.

Every dynopt optimizer moves in the potential

.. math:: U(\theta) = n\beta\,L(\theta) + \frac{\lambda}{2}\,|\theta|^2
          + \frac{\gamma_{loc}}{2}\,|\theta - \theta_0|^2,
          \qquad \nabla U = n\beta\,\nabla L + \lambda\,\theta + \gamma_{loc}\,(\theta - \theta_0),

so ``weight_decay`` is the Gaussian prior N(0, τ/λ) of Bayesian deep learning (in the dynamics,
not a decoupled shrink: at τ = 0 Langevin with ``weight_decay`` is ``torch.optim.SGD`` with the
same ``weight_decay``), and ``localization`` with ``nbeta`` is the local posterior
exp(−nβ L − γ_loc|θ − θ₀|²/2) that devinterp's local SGLD samples to estimate the local learning
coefficient. The gradient terms are added here, once, for every optimizer and path (the fused,
foreach and single-tensor paths all read the effective gradient).

| symbol | code (param-group key) | default |
|---|---|---|
| λ | ``weight_decay`` (≥ 0) | 0 |
| γ_loc | ``localization`` (≥ 0; Langevin-family optimizers) | 0 |
| nβ | ``nbeta`` (> 0; Langevin-family optimizers) | 1 |
| θ₀ | ``state[θ]["anchor"]``: θ at the tensor's first step | |

Reference: T. Lau, Z. Furman, G. Wang, D. Murfet, S. Wei, "The Local Learning Coefficient: A
Singularity-Aware Complexity Measure", AISTATS 2025 (arXiv:2308.12108), Eq. (11)–(13).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._validation import check_nonnegative, check_positive

__all__ = ["KEYS", "gradient", "is_trivial", "validate", "value"]

#: The prior keys with their validators.
KEYS: dict[str, Callable[[str, Any], float]] = {
    "weight_decay": check_nonnegative, "localization": check_nonnegative, "nbeta": check_positive}
_NEUTRAL = {"weight_decay": 0.0, "localization": 0.0, "nbeta": 1.0}


def _get(group: dict[str, Any], key: str) -> float:
    v = group.get(key)
    if v is None:
        return _NEUTRAL[key]
    return float(v.item()) if isinstance(v, Tensor) else float(v)


def validate(group: dict[str, Any], check: Callable[[str, Callable[[str, Any], float]], None]
             ) -> None:
    """Validate the prior keys present in ``group`` (``check(name, fn)`` applies ``fn``)."""
    for key, fn in KEYS.items():
        if group.get(key) is not None:
            check(key, fn)


def is_trivial(group: dict[str, Any]) -> bool:
    """True if U = L for this group (no gradient term to add)."""
    return all(_get(group, k) == _NEUTRAL[k] for k in _NEUTRAL)


def gradient(group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
    """∇U from ∇L = ``g`` (a new tensor; ``g`` itself is not modified).

    The weight-decay term is ``g.add(p, alpha=λ)``, the operation ``torch.optim.SGD`` performs,
    so the two agree bit for bit. θ₀ is recorded in ``state["anchor"]`` on first use.
    """
    nbeta, wd, loc = _get(group, "nbeta"), _get(group, "weight_decay"), _get(group, "localization")
    if nbeta != 1.0:
        g = g * nbeta
    if wd != 0.0:
        g = g.add(p, alpha=wd)
    if loc != 0.0:
        anchor = state.get("anchor")
        if anchor is None:
            # (a copy under autograd too, with differentiable=True: θ₀ depends on the inputs)
            anchor = state["anchor"] = p.clone(memory_format=torch.contiguous_format)
        g = g.add(p - anchor, alpha=loc)
    return g


def value(group: dict[str, Any], params: list[Tensor], states: list[dict[str, Any]]) -> float:
    """(λ/2)|θ|² + (γ_loc/2)|θ − θ₀|² of a group's tensors (float64; the nβ factor applies to
    the loss and is not included)."""
    wd, loc = _get(group, "weight_decay"), _get(group, "localization")
    total = 0.0
    for p, st in zip(params, states, strict=True):
        if wd:
            total += 0.5 * wd * float(p.detach().double().square().sum())
        if loc and st.get("anchor") is not None:
            total += 0.5 * loc * float((p.detach().double() - st["anchor"].double())
                                       .square().sum())
    return total
