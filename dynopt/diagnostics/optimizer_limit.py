r"""The linear stability limit of an optimizer's current step, from its scheme's program.

Every answer comes from :func:`dynopt.diagnostics.stability_limit` applied to a system and a
scheme, never from a table of formulas:

* dynopt ``Partitioned`` family (Langevin, AdLaLa, ...): each group's own system and scheme
  (:mod:`dynopt.optim.dynamics`) at the group's h, thermostat ξ frozen at its current value;
* dynopt ``HeavyBall``: ``PortHamiltonian(γ)`` with ``"FBA"`` at h = ``lr``;
* ``torch.optim.SGD(lr=η, momentum=μ, dampening=d)``: for μ = 0 ``OverdampedLangevin(τ=0)``
  with ``"em"`` at h = η; for μ > 0 ``PortHamiltonian(γ = (1 − μ)/h)`` with ``"FBA"`` at
  h = √(η(1 − d)).

For SGD with momentum this gives the familiar ηλ < 2(1 + μ). The limit returned bounds the
*loss's* curvature: a scheme moves in U, and U's Hessian is nβ·∇²L + (wd + γ_loc)·I (the prior of
:mod:`dynopt.optim.prior`: ``weight_decay``, ``localization``, ``nbeta``; SGD: wd only), so the
limit on the loss's λ is (λ_c − wd − γ_loc)/nβ. A group with ``lr = 0`` takes no step and has
no limit. Optimizers without a linear limit of this kind (Adam, BBI, ECDSep, Nesterov SGD, ...)
get None with the reason, and so does a step with ``maximize=True`` in any group: it ascends
the loss, so every positive curvature grows and λ_max has no upper limit.

| symbol | code |
|---|---|
| λ_c | :attr:`OptimizerLimit.lam` |
| η, μ, d, wd | SGD's ``lr``, ``momentum``, ``dampening``, ``weight_decay`` |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .stability import StabilityLimit, stability_limit

__all__ = ["OptimizerLimit", "optimizer_stability_limit"]


@dataclass(frozen=True)
class OptimizerLimit:
    """The limit on the loss curvature of an optimizer's current step.

    Attributes:
        lam: λ_c (the minimum over param groups), or None when there is none.
        groups: One :class:`~dynopt.diagnostics.StabilityLimit` (or None) per param group.
        reason: Why there is no limit (None when there is one).
    """

    lam: float | None
    groups: tuple[StabilityLimit | None, ...]
    reason: str | None = None


def _sgd_group(group: dict[str, Any]) -> tuple[StabilityLimit | None, str | None]:
    from ..systems import OverdampedLangevin, PortHamiltonian

    if group.get("nesterov"):
        return None, "Nesterov SGD has no dynopt scheme here"
    lr = float(group["lr"])
    mu = float(group.get("momentum", 0.0))
    eta = lr * (1.0 - float(group.get("dampening", 0.0))) if mu > 0 else lr
    if mu == 0:
        lim = stability_limit(OverdampedLangevin(None, temperature=0.0), "em", eta)
    else:
        h = math.sqrt(eta)
        lim = stability_limit(PortHamiltonian(None, gamma=(1.0 - mu) / h), "FBA", h)
    return lim, None


def optimizer_stability_limit(optimizer: torch.optim.Optimizer) -> OptimizerLimit:
    """λ_c for the optimizer's current hyperparameters (see the module docstring).

    Args:
        optimizer: A dynopt optimizer or a ``torch.optim.SGD``.
    """
    from ..optim import HeavyBall
    from ..optim.partitioned import Partitioned
    from ..systems import PortHamiltonian

    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    from ..optim import prior

    groups: list[StabilityLimit | None] = []
    wds: list[tuple[float, float]] = []  # per group: (shift, scale) of the loss's limit
    reason = None

    def paused(group: dict[str, Any]) -> bool:  # the optimizer's own rule where it has one
        own = getattr(optimizer, "_lr_is_zero", None)
        return own(group) if own is not None else float(group["lr"]) == 0.0

    def prior_map(group: dict[str, Any]) -> tuple[float, float]:
        return (prior._get(group, "weight_decay") + prior._get(group, "localization"),
                prior._get(group, "nbeta"))

    if isinstance(optimizer, Partitioned):
        diag = optimizer.diagnostics(host=True)
        for group, d in zip(optimizer.param_groups, diag, strict=True):
            if paused(group):
                groups.append(None)
                wds.append((0.0, 1.0))
                continue
            spec = optimizer._spec(group)
            extras = None
            if spec.n_extras and d.get("xi") is not None:
                extras = {next(iter(spec.system.extras_layout(1))): float(d["xi"])}
            groups.append(stability_limit(spec.system, spec.integrator, spec.h,
                                          mass=spec.mass, extras=extras))
            wds.append(prior_map(group))
    elif isinstance(optimizer, HeavyBall):
        for group in optimizer.param_groups:
            if paused(group):
                groups.append(None)
                wds.append((0.0, 1.0))
                continue
            h = optimizer.hyper(group, "lr")
            groups.append(stability_limit(PortHamiltonian(None, gamma=optimizer.friction(group)),
                                          "FBA", h))
            wds.append(prior_map(group))
    elif type(optimizer) is torch.optim.SGD:
        for group in optimizer.param_groups:
            if paused(group):
                groups.append(None)
                wds.append((0.0, 1.0))
                continue
            lim, why = _sgd_group(group)
            groups.append(lim)
            wds.append((float(group.get("weight_decay", 0.0)), 1.0))
            reason = reason or why
    else:
        return OptimizerLimit(None, (), f"no linear stability limit for {type(optimizer).__name__}")
    ascending = [i for i, group in enumerate(optimizer.param_groups)
                 if group.get("maximize") and not paused(group)]
    if ascending:
        # the step descends −L there, so every positive curvature of L grows: the group limits
        # bound −λ_min, and λ_max (over all parameters) has no upper limit
        return OptimizerLimit(None, tuple(groups), (
            f"param group {ascending[0]} has maximize=True: it ascends the loss, so any "
            "positive curvature grows (its limit bounds −λ_min, not λ_max)"))
    lams = [(g.lam - shift) / scale
            for g, (shift, scale) in zip(groups, wds, strict=True) if g is not None]
    if not lams:
        if all(paused(g) for g in optimizer.param_groups):
            reason = reason or "every param group has lr = 0 (no step is taken)"
        return OptimizerLimit(None, tuple(groups), reason or "no group has a limit")
    return OptimizerLimit(min(lams), tuple(groups), reason)
