"""The torch.optim contract, implemented once for every dynopt optimizer.

:class:`DynamicsOptimizer` subclasses ``torch.optim.Optimizer`` and provides what every dynamics
optimizer needs and none should write twice:

* validation of every hyperparameter when a group is added (``ValueError`` naming the group,
  the hyperparameter and the value), and again when a schedule produces a value;
* hyperparameters given as a float, a 1-element tensor or a *schedule* ``callable(step) -> value``
  (``lr`` is read fresh every step, so torch LR schedulers drive the step size);
* the optimizer's own RNG: one ``torch.Generator`` per device, seeded from ``seed`` (with
  ``seed=None`` the seed is one draw from torch's global generator at construction, so
  ``torch.manual_seed`` governs it; never rank-dependent, so DDP replicas draw identical noise);
* optimizer-level state (generator states, the step counter, model-wide variables such as a
  thermostat or BBI's energy) saved in ``state_dict()["dynopt"]`` as plain tensors and numbers,
  so a checkpoint loads with ``torch.load(..., weights_only=True)`` and resumes bit for bit;
* ``step(closure=None, **kwargs)`` returning the closure's loss, with a check that gradients are
  finite *before* anything is updated (``nonfinite="raise"`` raises
  :class:`~dynopt.errors.DivergenceError` naming the step and parameter, ``"skip"`` skips the
  update and counts it, ``"ignore"`` trusts the gradients).

Subclasses implement ``_update(loss)`` and extend ``_validate_group``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import numbers
import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .._validation import check_choice, check_int
from ..errors import DivergenceError
from ..integrators.base import AbstractIntegrator
from . import bound, prior
from ._paths import device_of
from .checkpoint import SCHEDULE, Key, scheme_entry
from .finite import abs_max

__all__ = ["SCHEDULE", "DynamicsOptimizer", "Hyper", "LRSchedule"]

Hyper = float | Tensor | Callable[[int], float]

#: Group keys of torch's optimizers (and dynopt's prior keys) refused by an optimizer that does
#: not use them, so that a setting never goes silently unused.
FOREIGN_KEYS = ("weight_decay", "momentum", "betas", "nesterov", "dampening", "eps", "amsgrad",
                "alpha", "centered", "rho", "lr_decay", "initial_accumulator_value", "lambd",
                "momentum_decay", "decoupled_weight_decay", "capturable", "fused", "localization",
                "nbeta")
#: Constructor arguments that hold for the whole optimizer: a param group that sets one is
#: refused (the group would silently run with the optimizer's value).
OPTIMIZER_WIDE_KEYS = ("seed", "noise", "nonfinite", "events")
Check = Callable[[str, Any], float]


def _broadcast_seed(seed: int | None) -> int:
    """The optimizer's seed: ``seed``, or (None) one 62-bit draw from torch's global CPU
    generator, taken from rank 0 when torch.distributed runs.

    Drawing from the global generator makes ``seed=None`` follow ``torch.manual_seed`` (and
    Lightning's ``seed_everything``, ``transformers.set_seed``): identically seeded runs draw
    identical noise, and two optimizers built one after the other get different streams. The
    draw advances the global generator by one number, as ``DataLoader`` does for its base
    seed; pass ``seed`` to leave it untouched. The rank-0 broadcast keeps DDP replicas
    identical even when ranks seed their global generators differently.
    """
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)
        if seed >= 1 << 64:  # the noise key is 64 bits: larger seeds would alias smaller ones
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
        return seed
    fresh = int(torch.randint(0, 1 << 62, (), dtype=torch.int64))
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([fresh], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.broadcast(t, src=0)
        fresh = int(t.item())
    return fresh


_UNSET = object()


#: Modules whose code reads a param group's ``lr`` with ``float()`` to compute a new one
#: (torch's ``ReduceLROnPlateau``, the Hugging Face ``GreedyLR``): there ``float()`` of an
#: :class:`LRSchedule` refuses, as arithmetic does, instead of replacing the schedule by a number.
SCHEDULER_MODULES = ("torch.optim.lr_scheduler", "transformers.optimization")


class LRSchedule(float):
    """A param group's ``lr`` given as a schedule ``callable(step) -> value``, as the group
    holds it (the optimizer wraps the callable when the group is added, and again after every
    step).

    Calling it calls the schedule. As a number it *reads* as the schedule's current value, the
    ``lr`` the next step will use (``fn(optimizer.step_count)``; NaN where the schedule raises
    or gives no number there: the step then raises, naming it): ``str``, ``format``
    (``f"{lr:.3g}"``), ``float``, ``torch.tensor``, numpy, JSON and comparisons, so Lightning's
    ``LearningRateMonitor``, the Hugging Face Trainer's logging and a logging line work as with
    a number lr.

    It refuses to be *computed with*: a torch LR scheduler attached to the optimizer computes
    with ``group["lr"]`` (``LambdaLR``, ``StepLR``, ``SWALR`` and the Hugging Face Trainer's
    schedules multiply it, ``ReduceLROnPlateau`` and ``GreedyLR`` take ``float()`` of it, then
    multiply), which for a bare function failed deep inside torch with ``unsupported operand
    type(s) for *: 'function' and 'float'`` and with the current value would silently replace
    the schedule by a number; arithmetic (and ``float()`` inside :data:`SCHEDULER_MODULES`)
    raises a ``TypeError`` that says what happened and what to do. (``OneCycleLR`` and
    ``CyclicLR`` set ``lr`` outright, without reading it: they replace the schedule, as they
    replace any lr.)

    Args:
        fn: The schedule; ``fn(step)`` is evaluated at the optimizer's step counter.
        value: The value it reads as (see :meth:`at`).
    """

    __slots__ = ("fn",)

    def __new__(cls, fn: Callable[[int], Any], value: float = math.nan) -> LRSchedule:
        self = super().__new__(cls, value)
        self.fn = fn
        return self

    @classmethod
    def at(cls, fn: Callable[[int], Any], step: int) -> LRSchedule:
        """``fn`` reading as its value at ``step`` (NaN where it raises or gives no real
        number: only read, never used; the step that uses it validates it)."""
        try:
            value = fn(step)
            if isinstance(value, Tensor) and value.numel() == 1:
                value = value.item()
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            value = float(value) if ok else math.nan
        except Exception:  # a display value: the step that uses it raises the real error
            value = math.nan
        return cls(fn, value)

    def __call__(self, step: int) -> Any:
        return self.fn(step)

    @property
    def __wrapped__(self) -> Callable[[int], Any]:  # inspect.unwrap finds the schedule
        return self.fn

    def __repr__(self) -> str:  # the number, as in a printed log dict (``.fn``: the schedule)
        return float.__repr__(self)

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (LRSchedule, (self.fn, float.__float__(self)))

    def __float__(self) -> float:
        if sys._getframe(1).f_globals.get("__name__") in SCHEDULER_MODULES:
            self._refuse()
        return float.__float__(self)

    def _refuse(self, *args: Any) -> Any:
        raise TypeError(
            f"lr is a dynopt schedule ({self.fn!r}), not a number: code that computes with a "
            "param group's lr (a torch LR scheduler, a framework's, e.g. the Hugging Face "
            "Trainer's, which always attaches one) cannot use it. Use one of the two: give the "
            "optimizer a number as lr and express the schedule as a torch scheduler "
            "(LambdaLR(opt, lambda s: schedule(s) / lr)), or keep the schedule and attach no "
            "LR scheduler")

    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __neg__ = __pos__ = __abs__ = _refuse
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __divmod__ = __rdivmod__ = _refuse
    __pow__ = __rpow__ = _refuse


def wrap_lr_schedules(groups: list[dict[str, Any]], step: int = 0) -> None:
    """Hold each group's ``lr`` given as a schedule as an :class:`LRSchedule` reading as its
    value at ``step``, in place: groups as they are added, after every step (a bare function
    assigned to ``group["lr"]`` after construction is wrapped there too), after a load, and
    groups unpickled from an optimizer saved before ``LRSchedule`` existed."""
    for group in groups:
        lr = group.get("lr")
        if callable(lr) and not isinstance(lr, Tensor):
            group["lr"] = LRSchedule.at(lr.fn if isinstance(lr, LRSchedule) else lr, step)


def _same_setting(a: Any, b: Any) -> bool:
    """``a`` is ``b`` or equals it (False where ``==`` is not a plain bool, e.g. tensors)."""
    if a is b:
        return True
    if a is _UNSET or b is _UNSET or isinstance(a, Tensor) or isinstance(b, Tensor):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return False


def _sig_value(v: Any) -> Any:
    """``v`` where it is a plain hashable value, else its identity (a key of
    :meth:`DynamicsOptimizer._refuse_keys_set_later`'s cache)."""
    return v if type(v) in (int, float, bool, str, type(None)) else id(v)


def _refuse_hypergradient(group: dict[str, Any], name: str, value: Tensor, where: str) -> None:
    """Under ``differentiable=True`` torch's optimizers pass gradients on to a hyperparameter
    tensor that requires them (``torch.optim.SGD``'s ``lr``); dynopt's steps read
    hyperparameters as numbers, so such a tensor is refused rather than left without its
    gradient."""
    if value.requires_grad and group.get("differentiable"):
        raise ValueError(
            f"{name} is a tensor that requires grad under differentiable=True ({where}): "
            "dynopt's steps read hyperparameters as numbers, so no gradient would reach it; "
            f"pass {name}.detach() (gradients still flow through the parameters and their "
            "gradients)")


class DynamicsOptimizer(torch.optim.Optimizer):
    """Base class of the dynopt optimizers (see the module docstring for the contract).

    Args:
        params: Parameters or param groups (dicts), as for any torch optimizer.
        defaults: Default hyperparameters (copied into each group).
        seed: Seed of the optimizer's own generators. None (default): drawn from torch's
            global generator when the optimizer is built (so ``torch.manual_seed`` makes runs
            reproducible; rank 0's draw on every DDP rank); read it back from
            ``optimizer.seed``.
        nonfinite: What to do with NaN/inf gradients: ``"raise"`` (default), ``"skip"`` or
            ``"ignore"``.
    """

    #: Hyperparameters that may be given as a schedule ``callable(step) -> value``.
    schedulable: ClassVar[tuple[str, ...]] = ("lr",)
    #: Hyperparameters of the optimizer's one system (BBI's, ECDSep's), not of a param group.
    system_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        seed: int | None = None,
        nonfinite: str = "raise",
    ) -> None:
        self.nonfinite = check_choice("nonfinite", nonfinite, ("raise", "skip", "ignore"))
        self.seed = _broadcast_seed(seed)
        self.__dict__.setdefault("_given", {}).update(seed=seed, nonfinite=nonfinite)
        self._generators: dict[str, torch.Generator] = {}
        self.global_state: dict[str, Any] = {"step": 0, "skipped": 0}
        self.result_checks = {"bound": 0, "snapshot": 0}
        defaults = {"maximize": False, "foreach": None, "differentiable": False,
                    "weight_decay": 0.0, **defaults}
        super().__init__(params, defaults)

    # --- groups and hyperparameters --------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, then validation; a refused group is taken out again, so
        the optimizer is unchanged and the call can be retried with corrected values."""
        n = len(self.param_groups)
        params = param_group.get("params") if isinstance(param_group, dict) else None
        if params is not None and not isinstance(params, Tensor | set):
            param_group["params"] = params = list(params)  # as torch does (once: generators)
            seen: dict[int, int] = {}
            for i, p in enumerate(params):
                if id(p) in seen:  # torch only warns; the step would move it twice
                    raise ValueError(
                        f"{type(self).__name__}: parameter {i} of param group {n} is parameter "
                        f"{seen[id(p)]} again (a {tuple(p.shape)} tensor); list each parameter "
                        "once (model.parameters() already lists tied weights once)")
                seen[id(p)] = i
        super().add_param_group(param_group)
        try:
            group = self.param_groups[-1]
            for p in group["params"]:
                if p.is_complex():
                    raise ValueError(f"{type(self).__name__} does not support complex "
                                     f"parameters (got a {p.dtype} tensor of shape "
                                     f"{tuple(p.shape)})")
            self._validate_group(group, n)
        except BaseException:
            del self.param_groups[n:]
            raise
        drop_unset_momentum(self.param_groups[n:])
        self._show_lr_schedules(self.param_groups[n:])

    def _show_lr_schedules(self, groups: list[dict[str, Any]] | None = None) -> None:
        """Wrap the ``lr`` schedules of ``groups`` (default: all) so that each reads as the
        value the next step will use (:class:`LRSchedule`)."""
        step = self.__dict__.get("global_state", {}).get("step", 0)
        wrap_lr_schedules(self.param_groups if groups is None else groups, int(step))

    def _validate_group(self, group: dict[str, Any], index: int) -> None:
        """Validate a group's hyperparameters; subclasses extend (call super first)."""
        from .._validation import check_nonnegative

        # lr = 0 is a valid value (a warm-up's first step, a schedule's last), as in torch:
        # that group sits the step out (_step_impl), or, where a group cannot pause
        # (_pause_at_zero_lr False), steps with h = 0 as torch's optimizers do
        self._check_hyper(group, index, "lr", check_nonnegative)
        for flag in ("maximize", "differentiable"):
            if not isinstance(group.get(flag, False), bool):
                raise TypeError(f"{flag} must be a bool, got {group[flag]!r} (param group {index})")
        if group.get("foreach") is not None and not isinstance(group["foreach"], bool):
            raise TypeError(f"foreach must be None or a bool, got {group['foreach']!r}")
        self._refuse_wide_keys(group, index)
        self._refuse_foreign_keys(group, index)
        prior.validate(group, lambda name, fn: self._check_hyper(group, index, name, fn))

    def _refuse_wide_keys(self, group: dict[str, Any], index: int) -> None:
        """A setting of the whole optimizer (``OPTIMIZER_WIDE_KEYS``, ``system_keys``) in a param
        group is refused: the group would silently run with the optimizer's value."""
        for key in (*OPTIMIZER_WIDE_KEYS, *self.system_keys):
            if key in group and key not in self.defaults:
                name = type(self).__name__
                if key not in inspect.signature(type(self).__init__).parameters:
                    raise ValueError(f"{name} does not use {key!r} (param group {index} sets "
                                     f"it to {group[key]!r})")
                if any(_same_setting(group[key], v) for v in self._own_settings(key)):
                    continue  # the constructor's own value, repeated in the group by a wrapper
                raise ValueError(
                    f"{key!r} is a setting of the whole {name}, not of a param group (param "
                    f"group {index} sets it to {group[key]!r}); pass it to the constructor")

    #: True where the subclass refuses foreign keys set after construction itself, at its step,
    #: with messages of its own (Partitioned's spec cache, DDPNOpt's base keys): the check of
    #: keys set later (:meth:`_refuse_keys_set_later`) then covers the optimizer-wide ones only.
    _checks_late_foreign_keys: ClassVar[bool] = False

    @torch.compiler.disable  # host check of dict keys; dynamo failed tracing it (IndexError)
    def _refuse_keys_set_later(self) -> None:
        """A key put into a param group after construction (by hand, a scheduler or a callback)
        is checked as construction checks it: a setting of the whole optimizer (``seed``,
        ``nu`` of ECDSep, ``v0`` of BBI) or another optimizer's hyperparameter (``betas``,
        ``momentum``, ``temperature``) raises a ValueError naming it and its value instead of
        going silently unused. Cheap: a group is checked only when its key set (with the values
        of the optimizer-wide keys it holds) is one not seen before (the first step, then after
        a key is added or such a value changed)."""
        seen: set[tuple[Any, ...]] = self.__dict__.setdefault("_group_keys_seen", set())
        wide = (*OPTIMIZER_WIDE_KEYS, *self.system_keys)
        for index, group in enumerate(self.param_groups):
            # a wide key repeating the constructor's value is allowed, so its value is part of
            # the signature: changed later (group["nu"] = 0.5), it is checked again
            sig = (tuple(group), tuple((k, _sig_value(group[k])) for k in wide if k in group))
            if sig in seen:
                continue
            try:
                self._refuse_wide_keys(group, index)
                if not self._checks_late_foreign_keys:
                    self._refuse_foreign_keys(group, index)
            except ValueError as err:
                raise ValueError(f"{err} (set after construction; no parameter or optimizer "
                                 "state was changed)") from None
            if len(seen) > 256:
                seen.clear()
            seen.add(sig)

    def _own_settings(self, key: str) -> list[Any]:
        """The optimizer's value of the constructor argument ``key`` (of
        ``OPTIMIZER_WIDE_KEYS`` or ``system_keys``), as given and as held: a param group may
        repeat it, as wrappers that pass their keyword arguments both to the constructor and
        into every group do (``torch.distributed.optim.ZeroRedundancyOptimizer``)."""
        own = [self.__dict__.get("_given", {}).get(key, _UNSET)]
        system = self.__dict__.get("system")
        if key in self.system_keys and system is not None:
            own += [getattr(system, key, _UNSET), self.system_hyperparameters().get(key, _UNSET)]
        else:
            own.append(getattr(self, key, _UNSET))
        return own

    def _refuse_foreign_keys(self, group: dict[str, Any], index: int) -> None:
        """Hyperparameter keys of other torch optimizers, of the Langevin-family dynamics and
        dynopt's prior keys that this optimizer does not use: a clear error instead of silently
        ignoring them."""
        from .dynamics import COMMON_KEYS, known_keys

        for key in (*FOREIGN_KEYS, *sorted((known_keys() | COMMON_KEYS) - set(FOREIGN_KEYS))):
            if key in group and key not in self.defaults:
                raise ValueError(
                    f"{type(self).__name__} does not use {key!r} (param group {index} sets it "
                    f"to {group[key]!r}); its hyperparameters are {sorted(self._own_keys())}")

    def _own_keys(self) -> set[str]:
        return {k for k in self.defaults if k not in ("foreach", "fused", "maximize",
                                                       "differentiable")}

    def _check_hyper(self, group: dict[str, Any], index: int, name: str, check: Check) -> Any:
        """Validate ``group[name]`` now (or, for a schedule, each time it is evaluated); returns
        the value checked (a 1-element tensor's as a float, a schedule itself)."""
        value = group[name]
        if callable(value) and not isinstance(value, Tensor):
            if name not in self.schedulable:
                raise TypeError(f"{name} cannot be a schedule for {type(self).__name__}; "
                                f"schedulable: {list(self.schedulable)}")
            return value
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(f"{name} as a tensor must have 1 element, got shape "
                                 f"{tuple(value.shape)} (param group {index})")
            _refuse_hypergradient(group, name, value, f"param group {index}")
            value = float(value.item())
        try:
            check(name, value)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{err} (param group {index})") from None
        return value

    def hyper(self, group: dict[str, Any], name: str, check: Check | None = None) -> float:
        """The current value of hyperparameter ``name``, validated where it is used.

        Schedules are evaluated at the current step, tensors converted to float, and the value
        is checked with ``check`` (``lr``: ≥ 0 if no check is given) every time, so a value set
        after construction (``group["lr"] = nan``, a scheduler going negative) raises
        ``ValueError`` naming the group, the key, the value and the step instead of corrupting
        the state.
        """
        value = group[name]
        scheduled = callable(value) and not isinstance(value, Tensor)
        if scheduled:
            if name not in self.schedulable:  # set after construction, which refuses it
                index = next((i for i, g in enumerate(self.param_groups) if g is group), "?")
                raise TypeError(f"{name} cannot be a schedule for {type(self).__name__}; "
                                f"schedulable: {list(self.schedulable)} (param group {index})")
            value = value(self.global_state["step"])
        if isinstance(value, Tensor) and value.numel() == 1:
            if value.requires_grad:  # set after construction
                index = next((i for i, g in enumerate(self.param_groups) if g is group), "?")
                _refuse_hypergradient(group, name, value, f"param group {index}")
            value = value.item()
        if check is None and name == "lr":
            from .._validation import check_nonnegative

            check = check_nonnegative
        step = self.global_state["step"]
        label = f"{name} (schedule value at step {step})" if scheduled else name
        try:
            if check is not None:
                return float(check(label, value))
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise TypeError(f"{label} must be a real number, got {value!r}")
        except (ValueError, TypeError) as err:
            index = next((i for i, g in enumerate(self.param_groups) if g is group), "?")
            raise type(err)(f"{err} (param group {index}; {type(self).__name__} step "
                            f"{step + 1})") from None
        return float(value)

    @property
    def step_count(self) -> int:
        """Number of completed ``step()`` calls (skipped ones included)."""
        return int(self.global_state["step"])

    # --- random numbers ----------------------------------------------------------------------
    def generator(self, device: torch.device | str) -> torch.Generator:
        """The optimizer's generator on ``device`` (created lazily, seeded from ``seed``)."""
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        key = str(dev)
        gen = self._generators.get(key)
        if gen is None:
            from ..backends.torch.ops import seeded

            gen = seeded(torch.Generator(device=key), self.seed)
            self._generators[key] = gen
        return gen

    # --- state dict --------------------------------------------------------------------------
    # torch runs the state-dict hooks inside its own methods; dynopt's entry ("dynopt") is
    # added, and its seed, step counter and generators restored, around them. So these two
    # methods run the hooks themselves, where torch's contract puts them: load pre-hooks on the
    # whole checkpoint before anything is validated (they may migrate it), load post-hooks
    # after everything is restored, state-dict post-hooks on the finished dict.
    def state_dict(self) -> dict[str, Any]:
        with _hooks_held(self, "_optimizer_state_dict_post_hooks"):
            sd = super().state_dict()  # runs the pre-hooks
        for g in sd["param_groups"]:
            for k, v in list(g.items()):
                if isinstance(v, AbstractIntegrator):  # plain data, for weights_only loads
                    g[k] = scheme_entry(v)
                elif callable(v) and not isinstance(v, Tensor):
                    g[k] = SCHEDULE
                elif isinstance(v, np.generic):  # a NumPy scalar (np.float32(1e-3) from a
                    g[k] = v.item()  # sweep) as the Python number it holds: weights_only
        sd["dynopt"] = {  # loads refuse NumPy objects
            "optimizer": type(self).__name__,
            "seed": self.seed,
            "global": _detach_tree(self.global_state),
            "generators": {k: g.get_state() for k, g in self._generators.items()},
            **self._extra_state(),
        }
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, sd)
            if result is not None:
                sd = result
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint saved by :meth:`state_dict`, validating all of it first.

        Load pre-hooks see the whole checkpoint (``"dynopt"`` entry included) before it is
        validated, and what they return is validated like the rest; post-hooks run once
        everything (seed, step counter, generators) is restored.

        Raises:
            ValueError, TypeError: If anything in ``state_dict`` does not fit this optimizer
                (see :mod:`dynopt.optim.checkpoint`); the optimizer is then left unchanged.
        """
        from .checkpoint import validate

        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state_dict = dict(state_dict)  # as torch: hooks may rebind entries, not the caller's
        if isinstance(state_dict.get("dynopt"), dict):
            state_dict["dynopt"] = dict(state_dict["dynopt"])
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        self._refuse_checkpoint(state_dict)
        groups, glob, generators, seed = validate(self, state_dict)
        torch_sd = {k: v for k, v in state_dict.items() if k != "dynopt"}
        torch_sd["param_groups"] = groups
        with _hooks_held(self, "_optimizer_load_state_dict_pre_hooks",
                         "_optimizer_load_state_dict_post_hooks"):
            super().load_state_dict(torch_sd)
        self.seed = seed
        self.global_state = dict(glob)
        self._generators = generators
        self._after_load(state_dict)
        drop_unset_momentum(self.param_groups)
        self._show_lr_schedules()  # at the loaded step
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _extra_state(self) -> dict[str, Any]:
        """Entries a subclass adds to ``state_dict()["dynopt"]`` (plain values)."""
        return {}

    def _refuse_checkpoint(self, state_dict: dict[str, Any]) -> None:
        """Raise ValueError for a checkpoint this optimizer cannot continue (before anything is
        validated or changed); subclasses extend."""

    def _after_load(self, state_dict: dict[str, Any]) -> None:
        """Adjust the loaded state (called before the load post-hooks); subclasses extend."""

    def _saved_group(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A saved param group as this version stores it (checkpoints of older versions);
        validated afterwards like any other."""
        return saved

    def _state_schema(self, group: dict[str, Any]) -> dict[str, Key] | None:
        """What ``state[p]`` may hold for a parameter of ``group`` (None: not checked)."""
        return None

    def _validate_global_state(self, glob: dict[str, Any], groups: list[dict[str, Any]]
                               ) -> None:
        """Check a checkpoint's optimizer-level state (raise ValueError); subclasses extend."""

    # --- stepping ----------------------------------------------------------------------------
    #: Whether a param group whose ``lr`` is exactly 0 sits a step out (False: it steps with
    #: lr 0 as torch's optimizers do: its parameters stay, its buffers advance).
    _pause_at_zero_lr: ClassVar[bool] = True

    def _paused_groups(self) -> list[dict[str, Any]]:
        """The groups whose current ``lr`` is exactly 0 (schedules evaluated)."""
        if not self._pause_at_zero_lr:
            return []
        return [group for group in self.param_groups if self._lr_is_zero(group)]

    def _lr_is_zero(self, group: dict[str, Any]) -> bool:
        """Whether the group's current ``lr`` is exactly 0 (a schedule evaluated)."""
        v = group.get("lr")
        if callable(v) and not isinstance(v, Tensor):
            v = v(self.global_state["step"])
        if isinstance(v, Tensor) and v.numel() == 1:
            v = v.item()
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and v == 0

    def _step_impl(self, closure: Callable[[], Any] | None, **kwargs: Any) -> Any:
        """The closure, then the update: a group whose lr is 0 sits the step out.

        With step size 0 no time passes: its parameters and state are left exactly as they
        are (its gradients are not read, so not checked either) while the other groups step
        and the step counter advances, as torch's optimizers accept lr = 0 (the first step of
        a linear warm-up, the last of a cosine schedule).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        paused = self._paused_groups()
        if not paused:
            return self._checked_update(loss, kwargs)
        if len(paused) == len(self.param_groups):
            self.global_state["step"] += 1
            return loss
        self._before_pause()
        held = [(group, group["params"]) for group in paused]
        try:
            for group in paused:
                group["params"] = []
            return self._checked_update(loss, kwargs)
        finally:
            for group, params in held:
                group["params"] = params

    def _before_pause(self) -> None:
        """Fill caches that index every group's parameters before some groups sit a step out
        (subclasses extend)."""

    def _check_prior_keys(self) -> None:
        """Validate the prior keys (:mod:`dynopt.optim.prior`) of the groups that step with
        :meth:`hyper`, before anything is read or written: a value set between steps
        (``group["weight_decay"] = nan``) is refused naming the group and the step, as every
        other hyperparameter is (the prior's own check, where the value is used, names
        neither). Neutral plain numbers, the common case, cost one comparison each."""
        for group in self.param_groups:
            if not group["params"]:  # a group sitting the step out (lr = 0) reads nothing
                continue
            for key, check in prior.KEYS.items():
                v = group.get(key)
                if v is None or (type(v) in (float, int) and v == prior.NEUTRAL[key]):
                    continue
                self.hyper(group, key, check)

    def _checked_update(self, loss: Any, kwargs: dict[str, Any]) -> Any:
        """The update under the non-finite policy (``nonfinite``)."""
        self._check_prior_keys()
        if self.nonfinite == "ignore":
            self._refuse_unsupported()  # (the finite scan, skipped here, refuses them otherwise)
            self._update(loss=loss, **kwargs)
            self.global_state["step"] += 1
            return loss
        # "raise"/"skip": gradients and loss first, then the update, undone if its result is
        # not finite or it raised (dynopt.optim.rollback)
        used = self._used_loss(loss, kwargs)
        if not self._gradients_finite(used) or not self._loss_finite(used):
            self.global_state["skipped"] += 1
            self.global_state["step"] += 1
            return loss
        if self._checks_own_result or not self.check_result:
            self._update(loss=loss, **kwargs)
            self.global_state["step"] += 1
            return loss
        counts = self.__dict__.setdefault("result_checks", {"bound": 0, "snapshot": 0})
        if self._result_bounded(used):  # the step provably writes finite values (optim.bound)
            counts["bound"] += 1
            self._update(loss=loss, **kwargs)
            self.global_state["step"] += 1
            bound.commit_carry(self)  # what it wrote is bounded: the next step need not scan
            return loss
        counts["snapshot"] += 1
        from .rollback import Snapshot

        snap = Snapshot(self, self.__dict__.setdefault("_rollback_buffers", []))
        try:
            self._update(loss=loss, **kwargs)
        except BaseException:
            snap.restore(self)
            raise
        bad = snap.first_nonfinite(self)
        if bad is not None:
            snap.restore(self)
            if self.nonfinite == "skip":
                self.global_state["skipped"] += 1
                self.global_state["step"] += 1
                return loss
            gi, pi, what, already = bad
            step = self.global_state["step"] + 1
            at = (f"{what}" if gi < 0 else
                  f"param group {gi}, parameter {pi} ({what})")
            if already:
                raise DivergenceError(
                    f"{type(self).__name__}: the {at} already held a non-finite value (NaN/inf) "
                    f"before step {step}, so the step cannot give a finite result; it was put "
                    "there outside the optimizer (the model's initial values, or a write between "
                    f"steps). Step {step} was undone: no parameter or optimizer state was "
                    "changed. Replace the non-finite values (or load a checkpoint) and step "
                    "again.", step=step, chain=max(pi, 0))
            raise DivergenceError(
                f"{type(self).__name__}: step {step} would write a non-finite value into the "
                f"{at}; the step was undone: no parameter or optimizer state was changed. Lower "
                "lr (or check the loss and hyperparameters), or use nonfinite='skip' to skip "
                "such steps.", step=step, chain=max(pi, 0))
        self.global_state["step"] += 1
        return loss

    def _result_bounded(self, used: Any = None) -> bool:
        """Whether this step provably writes only finite values, so the snapshot can be skipped.

        Called after the gradient and loss checks (``self._grad_absmax`` holds max |∇L| per
        (device, dtype); ``used`` is the finite loss the update will read, or None) and before
        the update. An override (see :mod:`dynopt.optim.bound`) must return
        True only if every value the update writes is bounded below the dtype's largest float,
        and must raise any error the update would raise (hyperparameter checks) before
        returning; it returns False whenever in doubt (the snapshot path then runs). The base
        class always returns False.
        """
        return False

    #: Keyword arguments ``step()`` passes on to ``_update`` (subclasses that take more extend
    #: it); any other is a TypeError, not silently ignored.
    _step_keywords: ClassVar[tuple[str, ...]] = ()

    @property
    def uses_loss(self) -> bool:
        """Whether the step reads the loss value (here: never; see the eventful optimizers)."""
        return False

    #: True for optimizers that check their own result before committing it (DDPNOpt).
    _checks_own_result: ClassVar[bool] = False
    #: Counts of the result checks taken: ``{"bound": steps proven finite without a snapshot
    #: (:mod:`dynopt.optim.bound`), "snapshot": steps snapshotted and scanned}``.
    result_checks: dict[str, int]
    #: Snapshot each step and undo it if its result is not finite (or it raised). Setting it to
    #: False on an instance keeps only the gradient and loss checks: about 2× faster for the
    #: cheapest fused updates (see docs/architecture.md), but a step that overflows then writes
    #: inf/NaN and is only caught at the next step.
    check_result: bool = True

    def _loss_finite(self, used: Any) -> bool:
        """Whether the loss the update will use (:meth:`_used_loss`) is finite; raise under
        ``"raise"``. A floating tensor loss was already scanned with the gradients of its device
        (no extra host synchronisation), so only numbers are checked here."""
        if used is None or isinstance(used, Tensor):
            return True
        return self._nonfinite_loss(float(used))

    def _nonfinite_loss(self, value: float) -> bool:
        """True if ``value`` is finite; else False under ``"skip"``, DivergenceError otherwise."""
        if math.isfinite(value):
            return True
        if self.nonfinite == "skip":
            return False
        step = self.global_state["step"] + 1
        raise DivergenceError(
            f"{type(self).__name__}: non-finite loss {value} at step {step}; no parameter or "
            "optimizer state was changed. Lower lr or use nonfinite='skip' to skip such steps.",
            step=step)

    def _used_loss(self, loss: Any, kwargs: dict[str, Any]) -> Any:
        """The loss value the update will read (None if it reads none)."""
        return None

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """One step; returns the closure's loss (None without a closure).

        Raises:
            DivergenceError: With ``nonfinite="raise"``, if a gradient is NaN/inf; the
                parameters and the optimizer state are left unchanged.
        """
        for key in kwargs:
            if key not in self._step_keywords:
                hint = (f"; {type(self).__name__} does not read the loss (uses_loss is False): "
                        "call step() after backward(), or step(closure)"
                        if key == "loss" else "")
                raise TypeError(f"{type(self).__name__}.step() got an unexpected keyword "
                                f"argument {key!r}{hint}")
        self._refuse_keys_set_later()
        try:
            if any(g.get("differentiable") for g in self.param_groups):
                with torch.enable_grad():
                    return self._step_impl(closure, **kwargs)
            return self._step_impl(closure, **kwargs)
        finally:  # the lr schedules read as the next step's lr (a bare function is wrapped)
            self._show_lr_schedules()

    def _update(self, loss: Any = None, **kwargs: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _refuse_unsupported(self) -> None:
        """Sparse gradients and parameters on the meta device (no storage yet) are refused."""
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.is_meta:
                    raise RuntimeError(
                        f"{type(self).__name__}: param group {gi}, parameter {pi} is on the meta "
                        "device (it has no values to step): materialize the model first "
                        "(model.to_empty(device=...), then initialize it) and build the optimizer "
                        "on its parameters (to_empty replaces them unless "
                        "torch.__future__.set_swap_module_params_on_conversion(True))")
                if p.grad is not None and p.grad.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse "
                                     f"gradients (param group {gi}, parameter {pi})")
                if p.grad is not None and p.is_complex():  # made complex after construction
                    raise ValueError(f"{type(self).__name__} does not support complex "
                                     f"parameters (param group {gi}, parameter {pi} is a "
                                     f"{p.dtype} tensor of shape {tuple(p.shape)})")

    def _gradients_finite(self, loss: Any = None) -> bool:
        """One fused reduction per (device, dtype); raises or returns False on NaN/inf. A tensor
        ``loss`` (the value the update will read) joins the scan of its device and dtype, so
        checking it costs no host synchronisation of its own."""
        buckets: dict[tuple[torch.device, torch.dtype], list[tuple[int, int, Tensor]]] = {}
        if isinstance(loss, Tensor):
            if not loss.is_floating_point() and not loss.is_complex():
                loss = loss.to(torch.float64)
            flat = loss.detach().reshape(-1)
            buckets.setdefault((flat.device, flat.dtype), []).append((-1, -1, flat))
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                g = p.grad
                if g is not None:
                    if g.is_sparse or p.is_meta:
                        self._refuse_unsupported()
                    buckets.setdefault((device_of(g), g.dtype), []).append((gi, pi, g))
        tops = self.__dict__.setdefault("_grad_absmax", {})
        tops.clear()
        for key, items in buckets.items():
            if key[1].is_complex:
                self._refuse_unsupported()
            tops[key] = abs_max([g for _, _, g in items])
            if tops[key] < math.inf:
                continue
            if items[0][0] < 0 and not bool(torch.isfinite(items[0][2]).all()):
                return self._nonfinite_loss(float(items[0][2].sum()))
            if self.nonfinite == "skip":
                return False
            gi, pi = next(((gi, pi) for gi, pi, g in items if not bool(torch.isfinite(g).all())),
                          (items[0][0], items[0][1]))
            step = self.global_state["step"] + 1
            raise DivergenceError(
                f"{type(self).__name__}: non-finite gradient at step {step} in param group {gi}, "
                f"parameter {pi}; no parameter or optimizer state was changed. Lower lr or "
                "use nonfinite='skip' to skip such steps.",
                step=step, chain=pi)
        return True

    #: True where the subclass adds the prior itself (it needs its value inside the step).
    prior_in_step: ClassVar[bool] = False

    def params_with_grad(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
        """``(params, grads)`` of a group, skipping params without gradients; the gradients are
        ∇U of :mod:`dynopt.optim.prior` (negated loss gradient under ``maximize``, plus weight
        decay, tether and nβ): new tensors, ``.grad`` is untouched."""
        params, grads = [], []
        add_prior = not self.prior_in_step and not prior.is_trivial(group)
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            g = -p.grad if group.get("maximize") else p.grad
            grads.append(prior.gradient(group, p, g, self.state[p]) if add_prior else g)
        return params, grads

    def prior_value(self) -> Tensor | None:
        """Σ over groups of the prior terms of U (see :mod:`dynopt.optim.prior`) at the
        parameters with a gradient: a 0-dim float64 tensor on the first such parameter's
        device, summed there (no host synchronisation); None when no group has a prior."""
        total: Tensor | None = None
        for group in self.param_groups:
            if not prior.is_trivial(group):
                ps = [p for p in group["params"] if p.grad is not None]
                v = prior.value(group, ps, [self.state[p] for p in ps])
                if v is not None:
                    total = v if total is None else total + v.to(total.device)
        return total

    # --- copies: deepcopy, pickle, torch.save(optimizer) ----------------------------------
    #: Attributes that are caches (rebuilt on demand): a copy starts them afresh, as ``name ->
    #: factory()``. Subclasses extend.
    _caches: ClassVar[dict[str, Callable[[], Any]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Everything that defines the optimizer (seed, generators, global state, events, the
        system, ...), not only torch's ``defaults``/``state``/``param_groups``, so that
        ``copy.deepcopy``, ``pickle`` and ``torch.save(optimizer)`` give an optimizer that
        continues bit for bit. Step and state-dict hooks are left out, as torch does (they may
        be closures over other objects); caches are rebuilt."""
        state = {k: v for k, v in self.__dict__.items()
                 if not k.startswith("_optimizer_") or not k.endswith("_hooks")}
        for name in (*self._caches, "_rollback_buffers", "_grad_absmax", "_group_keys_seen",
                     bound._CARRY, bound._PENDING, bound.STEP_PLAN):  # step scratch too
            state.pop(name, None)
        # an LR scheduler wraps ``step`` on the instance (a closure over this optimizer): a copy
        # that kept it would step the original; the copy gets its own wrapper instead
        wrapped = state.pop("step", None)
        if getattr(wrapped, "_wrapped_by_lr_sched", False):
            state[_SCHED_WRAPPED] = True
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if state.pop(_SCHED_WRAPPED, False):
            _track_step_called(self)
        super().__setstate__(state)
        for name, factory in self._caches.items():
            self.__dict__.setdefault(name, factory())
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("weight_decay", self.defaults.get("weight_decay", 0.0))
        drop_unset_momentum(self.param_groups)
        self._show_lr_schedules()  # pickled before LRSchedule: a bare function


_SCHED_WRAPPED = "_step_wrapped_by_lr_scheduler"


def drop_unset_momentum(groups: list[dict[str, Any]]) -> None:
    """Take an unset ``momentum`` (None) out of param groups.

    Optimizers whose friction may be given as SGD's momentum keep ``"momentum": None`` in their
    ``defaults``, so that ``OneCycleLR(cycle_momentum=True)`` accepts them (it checks the
    defaults and writes a value into each group). In a group the None would be read by tools
    that expect a number there (Lightning's ``LearningRateMonitor(log_momentum=True)`` reads
    ``group.get("momentum", 0)`` and failed on it); absent, they read 0 and dynopt reads None.
    """
    for group in groups:
        if "momentum" in group and group["momentum"] is None:
            del group["momentum"]


def _track_step_called(opt: torch.optim.Optimizer) -> None:
    """Wrap ``opt.step`` as an LR scheduler does when it is attached (it records that the
    optimizer stepped, so the scheduler does not warn about the order of calls), for a copy of
    an optimizer that had a scheduler."""
    ref = weakref.ref(opt)
    method = type(opt).step

    @functools.wraps(method)
    def step(*args: Any, **kwargs: Any) -> Any:
        target = ref()
        target._opt_called = True  # type: ignore[union-attr]
        return method(target, *args, **kwargs)

    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    opt.step = step  # type: ignore[method-assign]


@contextlib.contextmanager
def _hooks_held(opt: torch.optim.Optimizer, *names: str) -> Iterator[None]:
    """Hide the optimizer's hook dicts ``names`` while torch's own method runs (dynopt runs
    those hooks itself, where the contract puts them)."""
    held = {name: getattr(opt, name) for name in names}
    try:
        for name in names:
            setattr(opt, name, OrderedDict())
        yield
    finally:
        for name, hooks in held.items():
            setattr(opt, name, hooks)


def _detach_tree(obj: Any) -> Any:
    """A copy of nested dicts/lists with tensors detached and cloned (numbers kept)."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _detach_tree(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_detach_tree(v) for v in obj)
    return obj
