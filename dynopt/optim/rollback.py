"""Undo a step: the snapshot behind the non-finite *result* policy of every dynopt optimizer.

With ``nonfinite="raise"`` or ``"skip"``, :meth:`DynamicsOptimizer.step` takes a
:class:`Snapshot` of everything a step may change (the parameters that have a gradient, every
tensor and entry of their state, the optimizer-level state and the generator states) before the
update, and checks the result afterwards with one elementwise finiteness scan
(:func:`dynopt.optim.finite.all_finite`). If the step wrote a NaN/inf anywhere, or raised (e.g. a
hyperparameter made invalid by a scheduler, checked where it is used), the snapshot is restored,
so the optimizer and the parameters are bit for bit what they were before the step.

Steps that :mod:`dynopt.optim.bound` proves finite beforehand (ordinary Langevin, overdamped
and HeavyBall steps) skip the snapshot; every other step takes it.

The copies go into buffers kept between steps (no allocation, no page faults per step), so the
cost is one copy of θ and the optimizer buffers per step plus one read for the check; measured
numbers are in docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import _detach_tree
from .finite import all_finite, copy_all

__all__ = ["Snapshot"]


class Snapshot:
    """The part of an optimizer a step can change, copied so that it can be put back.

    Args:
        opt: The optimizer (a :class:`~dynopt.optim.base.DynamicsOptimizer`).
        buffers: The list of copy buffers kept by the optimizer between steps (reused when the
            tensors keep their shapes, dtypes and devices; refilled otherwise).
    """

    def __init__(self, opt: Any, buffers: list[Tensor]) -> None:
        live: list[Tensor] = []
        where: list[tuple[int, int, str]] = []
        entries: list[tuple[Tensor, dict[str, Any] | None]] = []
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                live.append(p)
                where.append((gi, pi, "parameter"))
                st = opt.state.get(p)
                entries.append((p, dict(st) if st is not None else None))
                if st:
                    for k, v in st.items():
                        if isinstance(v, Tensor):
                            live.append(v)
                            where.append((gi, pi, k))
        if len(buffers) != len(live) or any(
                b.shape != t.shape or b.dtype != t.dtype or b.device != t.device
                for b, t in zip(buffers, live, strict=False)):
            buffers[:] = [torch.empty_like(t, memory_format=torch.contiguous_format)
                          for t in live]
        copy_all(buffers, [t.detach() for t in live])
        self.live = live
        self.where = where
        self.buffers = buffers
        self.entries = entries
        # the event log only grows (one entry per firing, without bound for once=False
        # triggers): kept by reference with its lengths, and cut back on restore, instead of
        # copied, which made each step cost O(firings so far) (0.5 s at 10^5 firings)
        self.log, self.log_lengths = _event_log(opt.global_state)
        if self.log is None:
            self.global_state = _detach_tree(opt.global_state)
        else:
            events = opt.global_state["events"]
            events["log"] = None
            try:
                self.global_state = _detach_tree(opt.global_state)
            finally:
                events["log"] = self.log
            self.global_state["events"]["log"] = self.log
        self.generators = {k: g.get_state() for k, g in opt._generators.items()}

    def first_nonfinite(self, opt: Any) -> tuple[int, int, str, bool] | None:
        """(group, index, what, already) of the first non-finite tensor after the step, or
        None. ``already``: a tensor held a NaN/inf before the step (put there outside the
        optimizer: the model's initial values, a write between steps), so the step did not
        produce it; that tensor (the first such) is the one named."""
        buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, t in enumerate(self.live):
            if t.is_floating_point():
                buckets.setdefault((t.device, t.dtype), []).append(i)
        for idx in buckets.values():
            if not all_finite([self.live[i] for i in idx]):
                for j, b in enumerate(self.buffers):  # the error path: cost does not matter
                    if b.is_floating_point() and not bool(torch.isfinite(b).all()):
                        return (*self.where[j], True)
                for i in idx:
                    if not bool(torch.isfinite(self.live[i]).all()):
                        return (*self.where[i], False)
        extra = _global_tensors(opt.global_state.get("extras", {}))  # thermostats
        if extra and not all(bool(torch.isfinite(t).all()) for t in extra
                             if t.is_floating_point()):
            return (-1, -1, "optimizer-level state", False)
        return None

    def restore(self, opt: Any) -> None:
        """Put every saved tensor, state entry, counter and generator state back."""
        with torch.no_grad():
            copy_all([t.detach() for t in self.live], self.buffers)
        for p, saved in self.entries:
            if saved is None:
                opt.state.pop(p, None)
            else:
                st = opt.state[p]
                st.clear()
                st.update(saved)
        opt.global_state = self.global_state
        if self.log is not None:  # the firings of the undone step come off the log
            for key, n in self.log_lengths.items():
                del self.log[key][n:]
        for key in list(opt._generators):
            if key in self.generators:
                opt._generators[key].set_state(self.generators[key])
            else:
                del opt._generators[key]


def _event_log(glob: dict[str, Any]) -> tuple[dict[str, list[Any]] | None, dict[str, int]]:
    """The event log of an optimizer's ``global_state`` (``{"step": [...], "chain": [...],
    ...}``, see :meth:`dynopt.events.EventSet.init_state`) and the length of each of its
    lists; (None, {}) where there is none."""
    events = glob.get("events")
    log = events.get("log") if isinstance(events, dict) else None
    if not isinstance(log, dict) or not all(isinstance(v, list) for v in log.values()):
        return None, {}
    return log, {k: len(v) for k, v in log.items()}


def _global_tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _global_tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _global_tensors(v)]
    return []
