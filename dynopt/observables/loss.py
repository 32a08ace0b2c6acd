"""Training and held-out loss of a :class:`~dynopt.potentials.NetworkLoss` along a run."""

from __future__ import annotations

import torch

from .base import Context, Observable

__all__ = ["HeldoutLoss", "Loss"]


class Loss(Observable):
    """``"loss"``: the full-batch mean training loss (U without the prior term λ|θ|²/2)."""

    def __call__(self, ctx: Context) -> dict[str, torch.Tensor]:
        pot, q = ctx.potential, ctx.state.q
        if not hasattr(pot, "data_loss"):
            raise TypeError(f"the 'loss' observable needs a NetworkLoss potential, got {pot!r}")
        return {"loss": pot.data_loss(q)}


class HeldoutLoss(Observable):
    """``"heldout_loss"``: the mean loss on ``NetworkLoss(..., heldout=...)``."""

    def __call__(self, ctx: Context) -> dict[str, torch.Tensor]:
        pot = ctx.potential
        if getattr(pot, "heldout_data", None) is None:
            raise ValueError("the 'heldout_loss' observable needs NetworkLoss(..., heldout=...)")
        return {"heldout_loss": pot.heldout_loss(ctx.state.q)}
