"""A user function of the state as an observable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .base import Context, Observable

__all__ = ["Callback"]


class Callback(Observable):
    """``fn(state) -> tensor`` of shape ``(chains,)`` or ``(chains, k)``, stored as ``name``.

    Args:
        name: Key in ``traj.extras``.
        fn: The function (it gets the :class:`~dynopt.stepping.State`; the potential is
            ``system.potential``, bind it in a closure if needed).
    """

    def __init__(self, name: str, fn: Callable[[Any], torch.Tensor]) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self.name, self.fn = name, fn

    def __call__(self, ctx: Context) -> dict[str, torch.Tensor]:
        out = self.fn(ctx.state)
        n = ctx.state.q.shape[0]
        if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"observable {self.name!r} must return a ({n},) or ({n}, k) tensor, "
                             f"got {shape}")
        return {self.name: out.detach()}

    def __repr__(self) -> str:
        return f"Callback({self.name!r})"
