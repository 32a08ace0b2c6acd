r"""The potential an optimizer's dynamics sees: the loss, a Gaussian prior and a tether.

Every dynopt optimizer moves in the potential

.. math:: U(\theta) = n\beta\,L(\theta) + \frac{\lambda}{2}\,|\theta|^2
          + \frac{\gamma_{loc}}{2}\,|\theta - \theta_0|^2,
          \qquad \nabla U = n\beta\,\nabla L + \lambda\,\theta + \gamma_{loc}\,(\theta - \theta_0),

so ``weight_decay`` is the Gaussian prior N(0, τ/λ) of Bayesian deep learning (in the dynamics,
not a decoupled shrink: at τ = 0 Langevin with ``weight_decay`` is ``torch.optim.SGD`` with the
same ``weight_decay``), and ``localization`` with ``nbeta`` is the local posterior
exp(−nβ L − γ_loc|θ − θ₀|²/2) that devinterp's local SGLD samples to estimate the local learning
coefficient. The terms are written here once (:func:`potential_gradient`,
:func:`potential_value`, numpy or torch) and used by every optimizer and path (the fused,
foreach and single-tensor paths all read the effective gradient) and by the
:class:`~dynopt.potentials.Localized` potential of the ``Langevin`` and ``OverdampedLangevin``
systems.

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

__all__ = ["KEYS", "NEUTRAL", "add_scaled", "gradient", "is_trivial", "potential_gradient",
           "potential_value", "validate", "value"]

#: The prior keys with their validators.
KEYS: dict[str, Callable[[str, Any], float]] = {
    "weight_decay": check_nonnegative, "localization": check_nonnegative, "nbeta": check_positive}
#: The value of each prior key that adds nothing to U.
NEUTRAL = {"weight_decay": 0.0, "localization": 0.0, "nbeta": 1.0}


def _get(group: dict[str, Any], key: str) -> float:
    """The group's value of a prior key, validated where it is used (a value set after
    construction, e.g. by a weight-decay schedule, is checked like one given at construction:
    a ValueError or TypeError naming the key and the value, before anything is written)."""
    v = group.get(key)
    if v is None:
        return NEUTRAL[key]
    if isinstance(v, Tensor) and v.numel() == 1:
        if v.requires_grad:  # set after construction (which refuses it)
            from .base import _refuse_hypergradient

            _refuse_hypergradient(group, key, v, "set after construction")
        v = v.item()
    return float(KEYS[key](key, v))


def validate(group: dict[str, Any], check: Callable[[str, Callable[[str, Any], float]], None]
             ) -> None:
    """Validate the prior keys present in ``group`` (``check(name, fn)`` applies ``fn``)."""
    for key, fn in KEYS.items():
        if group.get(key) is not None:
            check(key, fn)


def is_trivial(group: dict[str, Any]) -> bool:
    """True if U = L for this group (no gradient term to add)."""
    for key, neutral in NEUTRAL.items():
        v = group.get(key)
        if v is None or (type(v) in (float, int) and v == neutral):
            continue  # the common case, without a call per key (read several times a step)
        if _get(group, key) != neutral:
            return False
    return True


def add_scaled(a: Any, b: Any, alpha: float) -> Any:
    """a + α·b: torch's ``a.add(b, alpha=α)`` for tensors (the operation ``torch.optim.SGD``
    uses for weight decay, so the two agree bit for bit), ``a + α*b`` for numpy arrays."""
    return a.add(b, alpha=alpha) if isinstance(a, Tensor) else a + alpha * b


def potential_gradient(q: Any, g: Any, *, nbeta: float = 1.0, weight_decay: float = 0.0,
                       localization: float = 0.0, center: Any = None) -> Any:
    """∇U = nβ g + λ q + γ_loc (q − q₀) from g = ∇L (numpy or torch; new array/tensor)."""
    if nbeta != 1.0:
        g = g * nbeta
    if weight_decay != 0.0:
        g = add_scaled(g, q, weight_decay)
    if localization != 0.0:
        g = add_scaled(g, q - center, localization)
    return g


def potential_value(q: Any, *, weight_decay: float = 0.0, localization: float = 0.0,
                    center: Any = None) -> Any:
    """(λ/2)|q|² + (γ_loc/2)|q − q₀|² over the last axis (the prior terms of U; nβ multiplies
    the loss and is not included)."""
    out = 0.0 * q.sum(-1)
    if weight_decay:
        out = out + 0.5 * weight_decay * (q * q).sum(-1)
    if localization:
        d = q - center
        out = out + 0.5 * localization * (d * d).sum(-1)
    return out


def gradient(group: dict[str, Any], p: Tensor, g: Tensor, state: dict[str, Any]) -> Tensor:
    """∇U of a param group's tensor ``p`` from ∇L = ``g`` (a new tensor; ``g`` itself is not
    modified). θ₀ is recorded in ``state["anchor"]`` on first use."""
    loc = _get(group, "localization")
    anchor = None
    if loc != 0.0:
        anchor = state.get("anchor")
        if anchor is None:
            # (a copy under autograd too, with differentiable=True: θ₀ depends on the inputs)
            anchor = state["anchor"] = p.clone(memory_format=torch.contiguous_format)
    return potential_gradient(p, g, nbeta=_get(group, "nbeta"),
                              weight_decay=_get(group, "weight_decay"), localization=loc,
                              center=anchor)


def value(group: dict[str, Any], params: list[Tensor], states: list[dict[str, Any]]
          ) -> Tensor | None:
    """The prior terms of U for a group's tensors (tensors without θ₀ yet contribute no
    tether): a 0-dim float64 tensor on the first tensor's device, summed there in the order of
    ``params`` (no host synchronisation); None for no tensors."""
    wd, loc = _get(group, "weight_decay"), _get(group, "localization")
    total: Tensor | None = None
    for p, st in zip(params, states, strict=True):
        anchor = st.get("anchor")
        q = p.detach().double().reshape(-1)
        v = potential_value(
            q, weight_decay=wd, localization=loc if anchor is not None else 0.0,
            center=None if anchor is None else anchor.detach().double().reshape(-1))
        total = v if total is None else total + v.to(total.device)
    return total
