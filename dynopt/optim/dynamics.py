"""From a param group's hyperparameters to the system and integrator that define its update.

An optimizer never writes a scheme itself: each param group names a ``dynamics`` and its
hyperparameters; :func:`build` turns them into a :mod:`dynopt.systems` object (with
``potential=None``: the loss is the potential and autograd supplies its gradient) and a
:mod:`dynopt.integrators` scheme. ``integrator.optimizer_form(system)`` then gives the letter
sequences that one ``step()`` runs, and ``integrator.lower_sequence`` lowers them with the current
step size to the ops that :mod:`dynopt.optim.executor` executes.

| ``dynamics`` | system | default scheme | step of the ops |
|---|---|---|---|
| ``"langevin"`` | ``Langevin`` (γ or momentum c = e^{−γh}, τ, M) | ``"BAOAB"`` | ``lr`` |
| ``"overdamped"`` | ``OverdampedLangevin`` (τ) | ``"em"`` | ``lr`` or ``lr²/2`` |
| ``"adaptive-langevin"`` | ``AdaptiveLangevin`` (τ, σ_A, ε, ξ₀, M) | ``"BACDEDCAB"`` | ``lr`` |
| ``"nose-hoover"`` | ``NoseHoover`` / ``NoseHooverChain`` | ``"ECBABCE"`` / ``"TBABT"`` | ``lr`` |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import systems
from .._validation import (
    check_choice,
    check_int,
    check_nonnegative,
    check_positive,
    check_real,
)
from ..integrators import resolve
from ..integrators.base import AbstractIntegrator
from ..program import NOISE_OPS, Op
from .executor import split_segments

__all__ = ["DEFAULT_SCHEMES", "DYNAMICS", "SCOPES", "Spec", "build", "check_momentum", "checks",
           "group_keys", "validate_group"]

DYNAMICS = ("langevin", "overdamped", "adaptive-langevin", "nose-hoover")
SCOPES = ("tensor", "group", "model")
OVERDAMPED_DT = ("lr", "lr**2/2")

#: Default scheme per dynamics (``nose-hoover`` with ``chain_length > 1``: ``"TBABT"``).
DEFAULT_SCHEMES = {"langevin": "BAOAB", "overdamped": "em", "adaptive-langevin": "BACDEDCAB",
                   "nose-hoover": "ECBABCE"}

Value = Callable[[str], Any]


@dataclass(frozen=True)
class Spec:
    """A group's dynamics at one step.

    Attributes:
        system: The system (``potential=None``).
        integrator: The scheme.
        h: The step size the letter sequences are lowered with.
        first: Ops of a tensor's first step (momentum starts at zero).
        steady: Ops of every later step.
        first_segments, steady_segments: The same cut at the thermostat ops
            (:func:`dynopt.optim.executor.split_segments`).
        n_extras: Number of scalar thermostat variables (ξ, η, chain) per scope.
        initial_extras: Their initial values.
        needs_prev: Whether the scheme keeps the previous normal per element (LM).
        has_momentum: Whether the system has momenta.
        mass: The scalar mass M.
    """

    system: systems.AbstractSystem
    integrator: AbstractIntegrator
    h: float
    first: tuple[Op, ...]
    steady: tuple[Op, ...]
    n_extras: int
    initial_extras: tuple[float, ...]
    needs_prev: bool
    has_momentum: bool
    mass: float
    first_segments: list[Any]
    steady_segments: list[Any]


def checks(dynamics: str) -> dict[str, Callable[[str, Any], Any]]:
    """The numeric hyperparameters ``dynamics`` reads, each with its validator."""
    thermostat = dynamics in ("adaptive-langevin", "nose-hoover")
    out: dict[str, Callable[[str, Any], Any]] = {
        "lr": check_positive,
        "temperature": check_positive if thermostat else check_nonnegative,
    }
    if dynamics != "overdamped":
        out["mass"] = check_positive
    if dynamics == "langevin":
        out["gamma"] = check_nonnegative
        out["momentum"] = check_momentum
    if dynamics == "adaptive-langevin":
        out.update(sigma_a=check_nonnegative, eps=check_positive)
    if thermostat:
        out["xi0"] = check_real
    if dynamics == "nose-hoover":
        out.update(tau=check_positive, thermostat_mass=check_positive)
    return out


def check_momentum(name: str, value: Any) -> float:
    """c = e^{−γh} ∈ (0, 1]."""
    c = check_real(name, value)
    if not 0.0 < c <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] (it is the friction factor e^(-gamma*lr)), "
                         f"got {value!r}")
    return c


def group_keys(dynamics: str) -> set[str]:
    """Every group key ``dynamics`` reads (besides the torch flags)."""
    keys = set(checks(dynamics)) | {"dynamics", "scheme", "weight_decay", "localization",
                                    "nbeta"}
    if dynamics in ("adaptive-langevin", "nose-hoover"):
        keys.add("scope")
    if dynamics == "nose-hoover":
        keys |= {"chain_length", "n_substeps", "sy_order"}
    if dynamics == "overdamped":
        keys.add("overdamped_dt")
    return keys


def validate_group(group: dict[str, Any], check: Callable[[str, Callable[[str, Any], Any]], None]
                   ) -> None:
    """Validate the hyperparameters a group's dynamics uses (``check(name, fn)`` applies ``fn``
    to the group value, or defers it for schedules). Optional ones may be None."""
    dyn = check_choice("dynamics", group.get("dynamics"), DYNAMICS)
    for name, fn in checks(dyn).items():
        if group.get(name) is not None or name in ("lr", "temperature", "gamma", "sigma_a",
                                                   "eps", "mass"):
            check(name, fn)
    if dyn == "nose-hoover":
        check_int("chain_length", group.get("chain_length"), minimum=1)
        check_int("n_substeps", group.get("n_substeps"), minimum=1)
        check_choice("sy_order", group.get("sy_order"), (1, 3, 5, 7))
    if dyn == "overdamped":
        check_choice("overdamped_dt", group.get("overdamped_dt"), OVERDAMPED_DT)
    if dyn in ("adaptive-langevin", "nose-hoover"):
        check_choice("scope", group.get("scope"), SCOPES)
    scheme = group.get("scheme")
    if scheme is not None and not isinstance(scheme, str | AbstractIntegrator):
        raise TypeError(f"scheme must be a string or an integrator, got {scheme!r}")


def build(group: dict[str, Any], value: Value) -> Spec:
    """The group's system, scheme and lowered ops, from current hyperparameter values.

    ``value(name)`` returns the current value of hyperparameter ``name`` (schedules evaluated).

    Raises:
        ValueError: If the scheme is unknown or uses letters the system does not offer (the
            message names ``scheme`` and the letters the system offers).
    """
    dyn = group["dynamics"]
    lr = value("lr")
    tau_t = value("temperature")
    mass = value("mass") if dyn != "overdamped" else 1.0
    if group.get("momentum") is not None and dyn != "langevin":
        raise ValueError(
            f"momentum is the friction factor e^(-gamma*lr) of dynamics='langevin'; this group "
            f"runs dynamics={dyn!r}, which has no such momentum (was it set by a scheduler such "
            "as OneCycleLR(cycle_momentum=True)? use cycle_momentum=False)")
    if dyn == "langevin":
        momentum = group.get("momentum")
        gamma = -math.log(value("momentum")) / lr if momentum is not None else value("gamma")
        system: systems.AbstractSystem = systems.Langevin(
            None, gamma=gamma, temperature=tau_t, mass=mass)
    elif dyn == "overdamped":
        system = systems.OverdampedLangevin(None, temperature=tau_t)
    elif dyn == "adaptive-langevin":
        xi0 = 0.1 if group.get("xi0") is None else value("xi0")
        system = systems.AdaptiveLangevin(None, temperature=tau_t, sigma_a=value("sigma_a"),
                                          eps=value("eps"), xi0=xi0, mass=mass)
    else:
        period = value("tau") if group.get("tau") is not None else None
        q = value("thermostat_mass") if group.get("thermostat_mass") is not None else None
        if period is None:
            period = math.sqrt(q / tau_t) if q is not None else 100.0 * lr
        if int(group["chain_length"]) == 1:
            xi0 = 0.0 if group.get("xi0") is None else value("xi0")
            system = systems.NoseHoover(None, temperature=tau_t, tau=period, thermostat_mass=q,
                                        xi0=xi0, mass=mass)
        else:
            system = systems.NoseHooverChain(None, temperature=tau_t,
                                             chain_length=int(group["chain_length"]), tau=period,
                                             n_substeps=int(group["n_substeps"]),
                                             sy_order=int(group["sy_order"]), mass=mass)
    scheme = group.get("scheme")
    if scheme is None:
        scheme = DEFAULT_SCHEMES[dyn]
        if dyn == "nose-hoover" and int(group["chain_length"]) > 1:
            scheme = "TBABT"
    try:
        integrator = resolve(scheme)
        first_seq, steady_seq = integrator.optimizer_form(system)
    except ValueError as err:
        raise ValueError(f"scheme={scheme!r} cannot drive dynamics={dyn!r}: {err}") from None
    h = lr * lr / 2.0 if dyn == "overdamped" and group.get("overdamped_dt") == "lr**2/2" else lr
    first = tuple(integrator.lower_sequence(system, first_seq, h))
    steady = tuple(integrator.lower_sequence(system, steady_seq, h))
    for ops in (first, steady):
        if sum(op.code in NOISE_OPS for op in ops) > 15:
            raise ValueError(f"scheme={scheme!r} draws more than 15 noise vectors per step")
    layout = {k: v for k, v in system.extras_layout(1).items() if k != "noise_prev"}
    n_extras = sum(layout.values())
    init = (tuple(float(v) for v in system.initial_extras(1, 1, _zeros)[0][:n_extras])
            if n_extras else ())
    return Spec(system=system, integrator=integrator, h=h, first=first, steady=steady,
                n_extras=n_extras, initial_extras=init,
                needs_prev="noise_prev" in system.extras_layout(1),
                has_momentum=system.has_momentum, mass=float(mass),
                first_segments=split_segments(first), steady_segments=split_segments(steady))


def _zeros(shape: tuple[int, ...]) -> Any:
    import numpy as np

    return np.zeros(shape)

