"""What HeavyBall, BBI and ECDSep share: ``step(loss=...)``, events, momenta, participants."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..events.actions import Action, Stop
from ..events.engine import EventLog
from ..events.triggers import Trigger
from ._events import OptimizerEvents, as_scalar
from .base import DynamicsOptimizer

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

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *,
                 events: Iterable[Trigger] | Trigger | None, seed: int | None,
                 nonfinite: str) -> None:
        self._events = OptimizerEvents(events, type(self).__name__, self.supported_actions,
                                       self.observables)
        super().__init__(params, defaults, seed=seed, nonfinite=nonfinite)

    def _validate_group(self, group: dict[str, Any], index: int) -> None:
        super()._validate_group(group, index)
        fused = group.get("fused")
        if not (fused is None or isinstance(fused, bool)):
            raise TypeError(f"fused must be None or a bool, got {group['fused']!r}")
        if group.get("fused") and group.get("foreach"):
            raise ValueError("fused=True and foreach=True are mutually exclusive")
        if group.get("differentiable"):
            raise ValueError(f"{type(self).__name__} does not support differentiable=True")
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

    # --- stepping -----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:  # type: ignore[override]
        """One step.

        Args:
            closure: Recomputes the loss and its gradients and returns the loss.
            loss: Or: the loss already computed at the current parameters (after
                ``loss.backward()``), e.g. ``opt.step(loss=loss)``.

        Returns:
            The loss.
        """
        if closure is not None and loss is not None:
            raise ValueError(f"{type(self).__name__}.step got both a closure and loss=; pass "
                             "one of them")
        out = super().step(closure, given_loss=loss)
        return out if closure is not None else loss

    def _update(self, loss: Any = None, given_loss: Any = None) -> None:
        from ._paths import resolve_loss

        loss = resolve_loss(loss, given_loss, type(self).__name__,
                            self.needs_loss or self._events.needs("loss"))
        if loss is not None and not self.prior_in_step:
            extra = self.prior_value()
            if extra:  # the dynamics' potential is U = loss + the weight-decay prior
                loss = loss + extra
        if self.stopped:
            return
        self._step(loss, self.participants())

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
        values["step"] = as_scalar(self.step_count, device)
        for action in self._events.fire(self.global_state, values, self.step_count, device):
            if isinstance(action, Stop):
                self.global_state["stopped"] = True
            else:
                self._apply_action(action)
        return self.stopped

    def _apply_action(self, action: Action) -> None:  # pragma: no cover - guarded
        raise NotImplementedError

    def momentum(self, p: Tensor) -> Tensor:
        """The momentum buffer of ``p`` (zeros on first use)."""
        st = self.state[p]
        if "momentum" not in st:
            st["momentum"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return st["momentum"]

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
