"""What HeavyBall, BBI and ECDSep share: ``step(loss=...)``, events, momenta, participants."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from .._validation import check_real, short_repr
from ..events.actions import Action, Stop
from ..events.engine import EventLog
from ..events.triggers import Trigger
from ._events import OptimizerEvents, as_scalar, move_state
from .base import DynamicsOptimizer
from .checkpoint import PRIOR_STATE, Key, check_scalar_tensor
from .executor import Slot
from .partitioned import _buffer as _refuse_cast

__all__ = ["EventfulOptimizer", "Participants"]

#: Per group: (group, params with a gradient, their gradients (negated under ``maximize``)).
Participants = list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]


class EventfulOptimizer(DynamicsOptimizer):
    """A :class:`DynamicsOptimizer` that takes the loss and runs :mod:`dynopt.events`.

    ``step(closure)`` (the closure returns the loss) and ``step(loss=loss)`` (the loss already
    computed, gradients already in ``.grad``) are both accepted; the loss reaches ``_update``
    as ``loss``. Subclasses set ``supported_actions`` and implement ``_apply_action``.
    """

    supported_actions: tuple[type[Action], ...] = (Stop,)
    observables: tuple[str, ...] = ("loss", "energy", "step")
    needs_loss: bool = False
    #: Whether the step runs under autograd with ``differentiable=True`` (single-tensor path).
    supports_differentiable: bool = False
    #: Σ of the losses given to :meth:`observe_loss` since the last step (None: none).
    _observed_loss: Any = None

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *,
                 events: Iterable[Trigger] | Trigger | None, seed: int | None,
                 nonfinite: str) -> None:
        self._events = OptimizerEvents(events, type(self).__name__, self.supported_actions,
                                       self.observables)
        if not isinstance(events, Iterator):  # (kept for _own_settings; a generator, consumed,
            self.__dict__.setdefault("_given", {})["events"] = events  # would not pickle)
        super().__init__(params, defaults, seed=seed, nonfinite=nonfinite)

    def _validate_group(self, group: dict[str, Any], index: int) -> None:
        super()._validate_group(group, index)
        fused = group.get("fused")
        if not (fused is None or isinstance(fused, bool)):
            raise TypeError(f"fused must be None or a bool, got {group['fused']!r}")
        if group.get("fused") and group.get("foreach"):
            raise ValueError("fused=True and foreach=True are mutually exclusive")
        if group.get("differentiable"):
            if not self.supports_differentiable:
                raise ValueError(
                    f"{type(self).__name__} does not support differentiable=True: its step "
                    "reads the loss and global norms as Python floats (energy bookkeeping, "
                    "bounce and projection decisions), which autograd cannot follow")
            if group.get("fused"):
                raise ValueError("fused=True cannot be combined with differentiable=True")
        if group.get("maximize") and self.needs_loss:
            raise ValueError(f"{type(self).__name__} minimizes V = loss − shift (its energy "
                             "needs that value): maximize=True is not supported; pass −loss")

    # --- public extras ------------------------------------------------------------------------
    @property
    def event_log(self) -> EventLog:
        """Every event firing so far (step, observed value, actions)."""
        return self._events.log(self.global_state)

    @property
    def stopped(self) -> bool:
        """True once a ``Stop`` action fired (later steps do nothing)."""
        return bool(self.global_state.get("stopped", False))

    _step_keywords = ("given_loss",)

    @property
    def uses_loss(self) -> bool:
        """Whether the step reads the loss value (the optimizer's energy, or a loss event)."""
        return self.needs_loss or self._events.needs("loss") or self._events.needs("energy")

    # --- stepping -----------------------------------------------------------------------------
    def observe_loss(self, loss: Any) -> None:
        """Add a micro-batch's loss to the loss of the next ``step()``, as ``backward()`` adds
        its gradient to ``.grad``.

        Pass the tensor that is back-propagated (with gradient accumulation over N
        micro-batches: the micro-batch loss divided by N), so that the sum is the mean loss of
        the accumulated batch, matching the accumulated gradient; with a ``GradScaler``, the
        loss before ``scaler.scale`` (the scaler unscales the gradients, not this loss). The
        next ``step()`` uses the sum (also when given a closure: the closure then only
        recomputes the gradients, and its return value is returned but not used) and resets
        it. The tensor is detached and stays on its device (no synchronization). The pending
        sum is not part of ``state_dict()`` (checkpoints are taken between steps);
        ``zero_grad()`` and :meth:`discard_observed_loss` clear it. :mod:`dynopt.integrations`
        calls this from the Hugging Face ``Trainer`` and from Lightning.

        Raises:
            ValueError: If ``loss`` is not a scalar.
        """
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(f"observe_loss needs a scalar loss, got a tensor of shape "
                                 f"{tuple(loss.shape)}")
            loss = loss.detach().reshape(())
        else:
            loss = check_real("loss", loss)
        self._observed_loss = loss if self._observed_loss is None else self._observed_loss + loss

    def discard_observed_loss(self) -> None:
        """Drop the losses observed since the last step, e.g. after a step that a GradScaler
        skipped (its gradients were not finite), so that they do not add to the next step's."""
        self._observed_loss = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``; the observed loss is cleared with the gradients it belongs to
        (a step that a GradScaler skipped leaves both behind, and the next accumulation window
        starts with ``zero_grad``)."""
        self._observed_loss = None
        super().zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:  # type: ignore[override]
        """One step.

        Args:
            closure: Recomputes the loss and its gradients and returns the loss.
            loss: Or: the loss already computed at the current parameters (after
                ``loss.backward()``), e.g. ``opt.step(loss=loss)``. Or neither, after
                :meth:`observe_loss`.

        Returns:
            The closure's loss, else ``loss``, else the observed loss (None if none).
        """
        # a closure *and* loss= are refused only when the closure returns a loss too
        # (resolve_loss): frameworks such as Lightning wrap every step in a closure of their own
        # that returns None, so step(loss=loss) must still work through them
        observed = self._observed_loss
        try:
            out = super().step(closure, given_loss=loss)
        finally:
            self._observed_loss = None
        if closure is not None:
            return out
        return loss if loss is not None else observed

    def _step_loss(self, loss: Any, given_loss: Any) -> Any:
        """The loss of this step: observed (``observe_loss``), the closure's or ``loss=``."""
        from ._paths import resolve_loss

        observed = self._observed_loss  # includes losses observed inside the closure
        if observed is not None:
            if given_loss is not None:
                raise ValueError(f"{type(self).__name__}.step got loss= after observe_loss(); "
                                 "use one of them")
            loss = observed
        return resolve_loss(loss, given_loss, type(self).__name__, self.uses_loss)

    #: Under ``torch.distributed`` (more than one rank), average the loss over the ranks
    #: before the step reads it (energy, events), as DDP averages the gradients: every rank
    #: then takes the same decisions and the replicas stay identical. One scalar all-reduce
    #: per step; set False for ranks that train independent models.
    sync_loss: bool = True

    def _checked_update(self, loss: Any, kwargs: dict[str, Any]) -> Any:
        if self.stopped:  # after a Stop action every step does nothing: no checks either
            self.global_state["step"] += 1
            return loss
        if (self.uses_loss and loss is None and kwargs.get("given_loss") is None
                and self._observed_loss is None and not _any_grad(self)):
            # no gradient and no loss (a framework's skipped batch, Lightning's training_step
            # returning None): nothing to step, as torch's and dynopt's other optimizers
            self.global_state["step"] += 1
            return loss
        if self.sync_loss and self.uses_loss and _world_size() > 1:
            mean = _rank_mean(self._step_loss(loss, kwargs.get("given_loss")))
            self._observed_loss = None  # (included in mean)
            super()._checked_update(None, {**kwargs, "given_loss": mean})
            return loss
        return super()._checked_update(loss, kwargs)

    def _update(self, loss: Any = None, given_loss: Any = None) -> None:
        loss = self._step_loss(loss, given_loss)
        if loss is not None and self.uses_loss and not self.prior_in_step:
            # the dynamics' potential is U = loss + the weight-decay prior, summed on the
            # device (a float per tensor was a host synchronisation each); only when the step
            # reads the loss
            extra = self.prior_value()
            if extra is not None:  # (on the loss's device: a model may span several)
                loss = loss + (extra.to(loss.device) if isinstance(loss, Tensor) else extra)
        if self.stopped:
            return
        self._step(loss, self.participants())

    def _used_loss(self, loss: Any, kwargs: dict[str, Any]) -> Any:
        if not self.uses_loss:
            return None
        return self._step_loss(loss, kwargs.get("given_loss"))

    # --- checkpoints --------------------------------------------------------------------------
    def _state_schema(self, group: dict[str, Any]) -> dict[str, Key]:
        return {"momentum": Key("param"), **PRIOR_STATE}

    def _validate_global_state(self, glob: dict[str, Any], groups: list[dict[str, Any]]
                               ) -> None:
        if "ps2" in glob:
            check_scalar_tensor(glob["ps2"], "dynopt['global']['ps2']")
            if float(glob["ps2"]) < 0:
                raise ValueError("cannot load the checkpoint: dynopt['global']['ps2'] must be "
                                 "non-negative; the optimizer was left unchanged")
        if "ps2_key" in glob:  # [[group, index], ...] of the parameters |Π|² was summed over
            key = glob["ps2_key"]
            if not (isinstance(key, list) and all(
                    isinstance(x, list) and len(x) == 2 and all(type(i) is int for i in x)
                    and 0 <= x[0] < len(groups) and 0 <= x[1] < len(groups[x[0]]["params"])
                    for x in key)):
                raise ValueError(
                    "cannot load the checkpoint: dynopt['global']['ps2_key'] must be a list of "
                    "[group, index] pairs of this optimizer's parameters, got "
                    f"{short_repr(key)}; the optimizer was left unchanged")
        _validate_event_state(self, glob)
        for name, keys in self.extras_keys.items():
            if name not in glob:
                continue
            st = glob[name]
            where = f"dynopt['global'][{name!r}]"
            if not isinstance(st, dict) or set(st) != set(keys):
                raise ValueError(f"cannot load the checkpoint: {where} must hold exactly "
                                 f"{list(keys)}; the optimizer was left unchanged")
            for k, v in st.items():
                if not isinstance(v, Tensor) or not v.is_floating_point() or v.numel() != 1 or (
                        bool(torch.isnan(v).any())):
                    raise ValueError(f"cannot load the checkpoint: {where}[{k!r}] must be a "
                                     "1-element floating tensor, not NaN; the optimizer was "
                                     "left unchanged")

    def _after_load(self, state_dict: dict[str, Any]) -> None:
        super()._after_load(state_dict)
        est = self.global_state.get("events")
        if est is not None:  # the triggers run on the parameters' device (map_location="cpu")
            device = next((p.device for g in self.param_groups for p in g["params"]), None)
            if device is not None:
                move_state(est, device)

    #: Optimizer-level state dicts (``global_state[name]``) and their keys, checked on load.
    extras_keys: dict[str, tuple[str, ...]] = {}

    def _step(self, loss: Any, parts: Participants) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def participants(self) -> Participants:
        return [(g, *self.params_with_grad(g)) for g in self.param_groups]

    def participation_key(self) -> list[list[int]]:
        """[[group, index], ...] of the parameters with a gradient (identifies the set)."""
        return [[gi, pi] for gi, g in enumerate(self.param_groups)
                for pi, p in enumerate(g["params"]) if p.grad is not None]

    def run_events(self, values: dict[str, Tensor], device: torch.device) -> bool:
        """Fire the events on ``values``; apply their actions; True if the step must stop."""
        if not len(self._events):
            return False
        values = dict(values)
        if self._events.needs("step"):  # built only when watched (a fill, no host copy)
            values["step"] = as_scalar(self.step_count, device)
        for action in self._events.fire(self.global_state, values, self.step_count, device):
            if isinstance(action, Stop):
                self.global_state["stopped"] = True
            else:
                self._apply_action(action)
        return self.stopped

    def _apply_action(self, action: Action) -> None:  # pragma: no cover - guarded
        raise NotImplementedError

    @torch.compiler.disable  # state creation per tensor: recompiled per parameter otherwise
    def momentum(self, p: Tensor) -> Tensor:
        """The momentum buffer of ``p`` (zeros on first use)."""
        st = self.state[p]
        if "momentum" not in st:
            st["momentum"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return st["momentum"]

    def _momenta(self, params: list[Tensor]) -> list[Tensor]:
        """The momenta of ``params`` (zeros on first use). One whose dtype is no longer its
        parameter's (the model was cast after the first step, e.g. ``model.double()``) is
        refused as the Langevin family refuses it (a ValueError naming both dtypes), before
        anything is written: the paths would otherwise go on in the old precision."""
        ms = [self.momentum(p) for p in params]
        for p, m in zip(params, ms, strict=True):
            if m.dtype != p.dtype:
                index = next(i for i, q in enumerate(
                    q for g in self.param_groups for q in g["params"]) if q is p)
                _refuse_cast(Slot(p, p, self.state[p], index), "momentum", p.dtype)
        return ms

    def held_momenta(self, moms: Sequence[Tensor]) -> list[Tensor]:
        """The momenta in the state other than ``moms`` (those of the stepping tensors): of
        paused param groups (lr = 0) and of tensors without a gradient this step, which keep
        their momentum and so their share of the kinetic energy (state order, which
        ``state_dict`` and ``deepcopy`` keep)."""
        ids = {id(m) for m in moms}
        return [st["momentum"] for st in self.state.values()
                if isinstance(st.get("momentum"), Tensor) and id(st["momentum"]) not in ids]

    @staticmethod
    def device_of(parts: Participants) -> torch.device:
        return next((p.device for _, ps, _ in parts for p in ps), torch.device("cpu"))

    @staticmethod
    def norm2(tensors: Sequence[Tensor]) -> float:
        """Σ|t|² over tensors (float64 accumulation, one foreach reduction per bucket)."""
        from ._paths import bucket

        total = 0.0
        for (ts,) in bucket(tensors).values():
            norms = torch._foreach_norm(ts)
            total += float(torch.stack(norms).to(torch.float64).pow(2).sum())
        return total

    @staticmethod
    def norm2_tensor(tensors: Sequence[Tensor], device: torch.device) -> Tensor:
        """:meth:`norm2` left on ``device`` (a 0-dim float64 tensor, no host synchronisation):
        the same reductions and the same float64 sums in the same order, so the same value."""
        from ._paths import bucket

        total = torch.zeros((), dtype=torch.float64, device=device)
        for (ts,) in bucket(tensors).values():
            norms = torch._foreach_norm(ts)
            total = total + torch.stack(norms).to(torch.float64).pow(2).sum().to(device)
        return total


def _any_grad(opt: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for g in opt.param_groups for p in g["params"])


def _validate_event_state(opt: EventfulOptimizer, glob: dict[str, Any]) -> None:
    """The event part of a checkpoint: ``stopped``, ``gamma_override`` and the triggers' state
    must fit this optimizer's events (a checkpoint of other events failed at the next step
    with a raw KeyError; a negative friction loaded silently)."""
    def bad(what: str) -> ValueError:
        return ValueError(f"cannot load the checkpoint: dynopt['global']{what}; the optimizer "
                          "was left unchanged")

    if "stopped" in glob and type(glob["stopped"]) is not bool:
        raise bad(f"['stopped'] must be a bool, got {glob['stopped']!r}")
    if glob.get("gamma_override") is not None:
        g = glob["gamma_override"]
        value = float(g) if isinstance(g, int | float) and type(g) is not bool else None
        if value is None or not math.isfinite(value) or value < 0:
            raise bad(f"['gamma_override'] must be a finite friction >= 0 or None, got {g!r}")
    est = glob.get("events")
    if est is None:
        return
    fresh = opt._events.set.init_state(torch.zeros(1, dtype=torch.float64))
    n = len(fresh["trig"])
    if not isinstance(est, dict) or set(est) != set(fresh):
        raise bad(f"['events'] must hold {sorted(fresh)}")
    if not isinstance(est["trig"], list) or len(est["trig"]) != n or not isinstance(
            est["done"], list) or len(est["done"]) != n:
        raise bad(f"['events'] holds the state of other events (this optimizer has {n}: "
                  f"{opt._events.set.events!r})")
    for i, (st, want) in enumerate(zip(est["trig"], fresh["trig"], strict=True)):
        if not isinstance(st, dict) or set(st) != set(want):
            raise bad(f"['events']['trig'][{i}] must hold {sorted(want)} for "
                      f"{opt._events.set.events[i]!r} (a checkpoint of other events?)")
        for k, v in st.items():
            if not isinstance(v, Tensor) or v.shape != want[k].shape or (
                    v.dtype != want[k].dtype):
                raise bad(f"['events']['trig'][{i}][{k!r}] must be a tensor of shape "
                          f"{tuple(want[k].shape)} and dtype {want[k].dtype}")
    for i, d in enumerate(est["done"]):
        if not isinstance(d, Tensor) or d.dtype != torch.bool or d.shape != (1,):
            raise bad(f"['events']['done'][{i}] must be a bool tensor of shape (1,)")
    log = est["log"]
    if not isinstance(log, dict) or set(log) != set(fresh["log"]) or len(
            {len(v) if isinstance(v, list) else -1 for v in log.values()}) != 1 or any(
            not isinstance(v, list) for v in log.values()):
        raise bad("['events']['log'] must hold lists step, chain, event, value of one length")
    if any(not isinstance(e, int) or not 0 <= e < n for e in log["event"]):
        raise bad(f"['events']['log']['event'] must hold event indices in [0, {n})")


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank_mean(loss: Any) -> Tensor:
    """The mean of ``loss`` over the ranks: a float64 scalar on the backend's device (CUDA for
    NCCL, else the CPU); a NaN on any rank makes it NaN on all (they skip or raise alike)."""
    dist = torch.distributed
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = loss.device if isinstance(loss, Tensor) and loss.is_cuda else torch.device(
            "cuda", torch.cuda.current_device())
    t = as_scalar(loss, device)
    dist.all_reduce(t)
    return t.reshape(()) / dist.get_world_size()
