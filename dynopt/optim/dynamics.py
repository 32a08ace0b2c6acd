"""From a param group's hyperparameters to the system and integrator that define its update.

An optimizer never writes a scheme itself: each param group names a ``dynamics`` and its
hyperparameters; :func:`build` turns them into a :mod:`dynopt.systems` object (with
``potential=None``: the loss is the potential and autograd supplies its gradient) and a
:mod:`dynopt.integrators` scheme. ``integrator.optimizer_form(system)`` then gives the letter
sequences that one ``step()`` runs, and ``integrator.lower_sequence`` lowers them with the current
step size to the ops that :mod:`dynopt.optim.executor` executes.

Each dynamics is *declared* once, as an :class:`OptimizerDynamics` (its hyperparameters with
validator, default and whether a schedule may drive them; how to build its system; its default
scheme) and registered with :func:`register_dynamics`. Validation, group defaults, the keys a
group may carry, the spec cache and :func:`build` all read the declaration, so a new dynamics
built from existing ops is one new file and one registration line (see
``examples/sghmc_dynamics.py``). The shipped ones, each declared in the module of its optimizer
class (langevin.py, overdamped.py, adaptive_langevin.py, nose_hoover.py):

| ``dynamics`` | system | default scheme | step of the ops |
|---|---|---|---|
| ``"langevin"`` | ``Langevin`` (γ or momentum c = e^{−γh}, τ, M) | ``"BAOAB"`` | ``lr`` |
| ``"overdamped"`` | ``OverdampedLangevin`` (τ) | ``"em"`` | ``lr`` or ``lr²/2`` |
| ``"adaptive-langevin"`` | ``AdaptiveLangevin`` (τ, σ_A, ε, ξ₀, M) | ``"BACDEDCAB"`` | ``lr`` |
| ``"nose-hoover"`` | ``NoseHoover`` / ``NoseHooverChain`` | ``"ECBABCE"`` / ``"TBABT"`` | ``lr`` |
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import systems
from .._validation import check_choice, check_int, check_nonnegative, check_positive, check_real
from ..integrators import resolve
from ..integrators.base import AbstractIntegrator, warn_if_noise_dropped
from ..program import Op, OpCode, normals_per_step
from .executor import split_segments

__all__ = ["COMMON_KEYS", "REGISTRY", "SCOPES", "Hyper", "OptimizerDynamics", "Spec", "build",
           "check_momentum", "checks", "get", "group_keys", "known_keys", "names",
           "register_dynamics", "validate_group"]

SCOPES = ("tensor", "group", "model")
#: Keys every dynamics reads besides its own hyperparameters (the prior and the scheme).
COMMON_KEYS = frozenset({"dynamics", "scheme", "weight_decay", "localization", "nbeta"})

Value = Callable[[str], Any]
Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Hyper:
    """One optimizer hyperparameter of a dynamics.

    Attributes:
        default: Value a group gets when neither it nor the optimizer sets one.
        check: Validator ``check(name, value) -> value`` (raises ValueError/TypeError naming
            ``name``).
        numeric: A real number passed to the system: it may be a 1-element tensor, is read
            through ``value(name)`` in :attr:`OptimizerDynamics.system` (schedules evaluated)
            and is re-validated where it is used. Otherwise a structural setting (an int or a
            choice) read from the group as it is.
        schedulable: A ``callable(step) -> value`` may drive it (numeric ones only).
        optional: None is allowed (then the system picks a value; validated only when set).
    """

    default: Any
    check: Check
    numeric: bool = True
    schedulable: bool = False
    optional: bool = False


@dataclass(frozen=True)
class OptimizerDynamics:
    """A dynamics as the optimizers see it: its hyperparameters and how to build its system.

    Attributes:
        name: The ``dynamics`` value of a param group.
        hypers: Every hyperparameter it reads (``lr`` included), in documentation order.
        system: ``system(group, value) -> AbstractSystem`` with ``potential=None``;
            ``value(name)`` is the current value of a numeric hyperparameter (None if an optional
            one is unset), structural ones are read from ``group``.
        scheme: Default scheme, or ``scheme(group) -> str``.
        step: ``step(group, lr) -> h``, the step the letter sequences are lowered with.
    """

    name: str
    hypers: Mapping[str, Hyper]
    system: Callable[[Mapping[str, Any], Value], systems.AbstractSystem]
    scheme: str | Callable[[Mapping[str, Any]], str]
    step: Callable[[Mapping[str, Any], float], float] = field(default=lambda group, lr: lr)

    def default_scheme(self, group: Mapping[str, Any]) -> str:
        return self.scheme if isinstance(self.scheme, str) else self.scheme(group)

    @functools.cached_property  # read twice per step by the spec cache
    def numeric(self) -> tuple[str, ...]:
        """Names of the numeric hyperparameters (the spec cache key, in order)."""
        return tuple(k for k, h in self.hypers.items() if h.numeric)

    @functools.cached_property
    def structural(self) -> tuple[str, ...]:
        return tuple(k for k, h in self.hypers.items() if not h.numeric)


#: name → declaration of every dynamics an optimizer group can run.
REGISTRY: dict[str, OptimizerDynamics] = {}


def register_dynamics(dynamics: OptimizerDynamics) -> OptimizerDynamics:
    """Add ``dynamics`` to :data:`REGISTRY` (its ``lr`` must be declared; names are unique)."""
    if "lr" not in dynamics.hypers:
        raise ValueError(f"dynamics {dynamics.name!r} must declare 'lr'")
    bad = [k for k, h in dynamics.hypers.items() if h.schedulable and not h.numeric]
    if bad:
        raise ValueError(f"dynamics {dynamics.name!r}: only numeric hyperparameters can be "
                         f"schedulable, not {bad}")
    REGISTRY[dynamics.name] = dynamics
    return dynamics


def names() -> tuple[str, ...]:
    """The registered dynamics, in registration order."""
    return tuple(REGISTRY)


def get(name: Any) -> OptimizerDynamics:
    """The declaration of dynamics ``name`` (ValueError naming the registered ones)."""
    if type(name) is str and name in REGISTRY:  # the common case, read twice per step
        return REGISTRY[name]
    return REGISTRY[check_choice("dynamics", name, names())]


def known_keys() -> set[str]:
    """Every hyperparameter some registered dynamics reads."""
    return {k for d in REGISTRY.values() for k in d.hypers}


# --- validators and hyperparameters shared by several declarations ---------------------------
def check_momentum(name: str, value: Any) -> float:
    """c = e^{−γh} ∈ (0, 1]."""
    c = check_real(name, value)
    if not 0.0 < c <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] (it is the friction factor e^(-gamma*lr)), "
                         f"got {value!r}")
    return c


def int_at_least(minimum: int) -> Check:
    """Validator of a structural integer ≥ ``minimum``."""
    return lambda name, value: check_int(name, value, minimum=minimum)


def one_of(choices: tuple[Any, ...]) -> Check:
    """Validator of a structural choice."""
    return lambda name, value: check_choice(name, value, choices)


LR = Hyper(0.25, check_nonnegative, schedulable=True)  # 0: the group sits the step out
MASS = Hyper(1.0, check_positive)
SCOPE = Hyper("tensor", one_of(SCOPES), numeric=False)


# --- what the optimizers call ------------------------------------------------------------------
def checks(dynamics: str) -> dict[str, Check]:
    """The numeric hyperparameters ``dynamics`` reads, each with its validator."""
    return {k: h.check for k, h in get(dynamics).hypers.items() if h.numeric}


def group_keys(dynamics: str) -> set[str]:
    """Every group key ``dynamics`` reads (besides the torch flags)."""
    return set(get(dynamics).hypers) | COMMON_KEYS


def validate_group(group: dict[str, Any], check: Callable[[str, Check], None]) -> None:
    """Validate the hyperparameters a group's dynamics uses (``check(name, fn)`` applies ``fn``
    to the group value, or defers it for schedules). Optional ones may be None."""
    dyn = get(group.get("dynamics"))
    for name, h in dyn.hypers.items():
        if h.optional and group.get(name) is None:
            continue
        if h.numeric:
            check(name, h.check)
        else:
            h.check(name, group.get(name))
    scheme = group.get("scheme")
    if scheme is not None and not isinstance(scheme, str | AbstractIntegrator):
        raise TypeError(f"scheme must be a string or an integrator, got {scheme!r}")


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
        needs_prev: Whether the scheme keeps the previous normal per element (its ops include
            LM_NOISE: Leimkuhler–Matthews; an Euler–Maruyama group of the same system keeps
            none, so SGLD holds no state besides its step count).
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
    #: The system declares an LM noise memory that this scheme does not read (Euler–Maruyama):
    #: one left by an earlier LM phase of the group is dropped.
    stale_prev: bool = False


def build(group: dict[str, Any], value: Value) -> Spec:
    """The group's system, scheme and lowered ops, from current hyperparameter values.

    ``value(name)`` returns the current value of hyperparameter ``name`` (schedules evaluated).

    Raises:
        ValueError: If the scheme is unknown or uses letters the system does not offer (the
            message names ``scheme`` and the letters the system offers).
    """
    dyn = get(group["dynamics"])
    for key, h in dyn.hypers.items():  # structural settings, checked again when they change
        if not h.numeric and not (h.optional and group.get(key) is None):
            h.check(key, group.get(key, h.default))
    if group.get("momentum") is not None and "momentum" not in dyn.hypers:
        raise ValueError(
            f"momentum is the friction factor e^(-gamma*lr) of dynamics='langevin'; this group "
            f"runs dynamics={dyn.name!r}, which has no such momentum (was it set by a scheduler "
            "such as OneCycleLR(cycle_momentum=True)? use cycle_momentum=False)")
    system = dyn.system(group, value)
    scheme = group.get("scheme")
    if scheme is None:
        scheme = dyn.default_scheme(group)
    try:
        integrator = resolve(scheme)
        first_seq, steady_seq = integrator.optimizer_form(system)
    except ValueError as err:
        raise ValueError(f"scheme={scheme!r} cannot drive dynamics={dyn.name!r}: {err}"
                         ) from None
    h = dyn.step(group, value("lr"))
    first = tuple(integrator.lower_sequence(system, first_seq, h))
    steady = tuple(integrator.lower_sequence(system, steady_seq, h))
    warn_if_noise_dropped(system, integrator.name, steady)
    for ops in (first, steady):
        if normals_per_step([op.code for op in ops]) > 15:
            raise ValueError(f"scheme={scheme!r} draws more than 15 noise vectors per step")
    layout = {k: v for k, v in system.extras_layout(1).items() if k != "noise_prev"}
    n_extras = sum(layout.values())
    init = (tuple(float(v) for v in system.initial_extras(1, 1, _zeros)[0][:n_extras])
            if n_extras else ())
    mass = float(system.mass) if system.has_momentum else 1.0
    reads_prev = any(op.code == OpCode.LM_NOISE for op in first + steady)
    return Spec(system=system, integrator=integrator, h=h, first=first, steady=steady,
                n_extras=n_extras, initial_extras=init,
                needs_prev=reads_prev,
                stale_prev="noise_prev" in system.extras_layout(1) and not reads_prev,
                has_momentum=system.has_momentum, mass=mass,
                first_segments=split_segments(first), steady_segments=split_segments(steady))


def _zeros(shape: tuple[int, ...]) -> Any:
    import numpy as np

    return np.zeros(shape)

