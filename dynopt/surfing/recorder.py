"""Recording network snapshots during a user's training loop (the θ_0, θ_1, … of Surfing)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
        snapshots: The recorded state dicts (detached CPU-independent clones).
        steps: The step number of each snapshot (0 for the initial one).
    """

    def __init__(self, model: nn.Module, every: int = 1, *, at: Sequence[int] | None = None,
                 include_initial: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.every = check_int("every", every, minimum=1)
        self.at = None if at is None else {check_int("at[i]", s, minimum=1) for s in at}
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

    def __len__(self) -> int:
        return len(self.snapshots)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return iter(self.snapshots)
