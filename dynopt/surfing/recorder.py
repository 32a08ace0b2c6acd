"""Recording network snapshots during a user's training loop (the θ_0, θ_1, … of Surfing)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_int

__all__ = ["SnapshotRecorder"]


class SnapshotRecorder:
    """Copies of a model's ``state_dict`` taken every ``every`` optimizer steps (or at the steps
    listed in ``at``), starting with the untrained network.

    Use it by calling :meth:`step` after each ``optimizer.step()``, or attach it as a step
    post-hook with :meth:`attach`::

        rec = SnapshotRecorder(decoder, every=50)      # θ_0 recorded now
        rec.attach(optimizer)                          # then every 50 steps
        ...train...
        result = dynopt.surfing.surf(rec.snapshots, y, model=decoder, ...)

    Args:
        model: The module whose parameters are recorded.
        every: Record after every ``every``-th step (ignored when ``at`` is given).
        at: Record after exactly these step numbers (1-based), e.g. a log-spaced schedule.
        include_initial: Record the current (untrained) state at construction.

    Attributes:
        snapshots: The recorded state dicts (detached clones, on the model's device: K
            snapshots hold K copies of the model there).
        steps: The step number of each snapshot (0 for the initial one).

    To resume an interrupted training run, save :meth:`state_dict` with the checkpoint and
    load it into the new recorder (whose own θ_0 would otherwise be the resumed, partly trained
    network, and whose count would restart at 0).
    """

    def __init__(self, model: nn.Module, every: int = 1, *, at: Sequence[int] | None = None,
                 include_initial: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.every = check_int("every", every, minimum=1)
        if at is not None and (isinstance(at, str) or not isinstance(at, Iterable)):
            raise TypeError(f"at must be a sequence of step numbers, got {at!r}")
        self.at = None if at is None else {
            check_int(f"at[{i}]", s, minimum=1) for i, s in enumerate(at)}
        self.count = 0
        self.snapshots: list[dict[str, Tensor]] = []
        self.steps: list[int] = []
        if include_initial:
            self.record()

    def record(self) -> None:
        """Record the model's current state now."""
        self.snapshots.append({k: v.detach().clone() for k, v in
                               self.model.state_dict().items()})
        self.steps.append(self.count)

    def step(self) -> None:
        """Count one optimizer step and record if it is due."""
        self.count += 1
        due = self.count in self.at if self.at is not None else self.count % self.every == 0
        if due:
            self.record()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        """Step post-hook signature ``hook(optimizer, args, kwargs)``."""
        self.step()

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Register as a step post-hook of ``optimizer``; returns the removable handle."""
        return optimizer.register_step_post_hook(self)

    def state_dict(self) -> dict[str, Any]:
        """The recorder's progress: step count, snapshots, their steps and the schedule (loads
        with ``torch.load(..., weights_only=True)``)."""
        return {"count": self.count, "every": self.every,
                "at": None if self.at is None else sorted(self.at),
                "steps": list(self.steps), "snapshots": [dict(sd) for sd in self.snapshots]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (replacing what was recorded), checked first.

        Raises:
            ValueError / TypeError: Naming the bad entry; the recorder is left unchanged.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping (SnapshotRecorder.state_dict()), got "
                            f"{type(state).__name__}")
        missing = sorted({"count", "every", "at", "steps", "snapshots"} - set(state))
        if missing:
            raise ValueError(f"SnapshotRecorder state lacks {missing}")
        count = check_int("state['count']", state["count"], minimum=0)
        every = check_int("state['every']", state["every"], minimum=1)
        at = None if state["at"] is None else {
            check_int(f"state['at'][{i}]", s, minimum=1) for i, s in enumerate(state["at"])}
        steps = [check_int(f"state['steps'][{i}]", s, minimum=0, maximum=count)
                 for i, s in enumerate(state["steps"])]
        snaps = list(state["snapshots"])
        if len(snaps) != len(steps):
            raise ValueError(f"SnapshotRecorder state has {len(snaps)} snapshots but "
                             f"{len(steps)} steps")
        for i, sd in enumerate(snaps):
            if not isinstance(sd, Mapping) or not all(isinstance(t, Tensor) for t in sd.values()):
                raise TypeError(f"state['snapshots'][{i}] must be a state dict of tensors")
        self.count, self.every, self.at, self.steps = count, every, at, steps
        self.snapshots = [dict(sd) for sd in snaps]

    def __len__(self) -> int:
        return len(self.snapshots)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return iter(self.snapshots)
