"""dynopt optimizers in PyTorch Lightning.

Lightning calls ``optimizer.step(closure)`` once per accumulation window, and the closure
returns only the last micro-batch's loss divided by ``accumulate_grad_batches``. The
:class:`FeedLoss` callback hands every back-propagated micro-batch loss (Lightning's
``on_before_backward`` argument, already divided by ``accumulate_grad_batches``; a GradScaler's
scale is divided out) to ``optimizer.observe_loss``, so the optimizers that need the loss (BBI,
ECDSep, HeavyBall with loss events) see the mean loss over the accumulated micro-batches, as in a
manual loop::

    from dynopt.integrations.lightning import FeedLoss
    trainer = pl.Trainer(callbacks=[FeedLoss()], accumulate_grad_batches=4)

Requires ``pytorch_lightning`` (the ``integrations`` extra); with only the unified ``lightning``
package installed, ``lightning.pytorch`` is used.
"""

from __future__ import annotations

from typing import Any

try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover - the unified package
    import lightning.pytorch as pl  # type: ignore[no-redef]

from .feed import feed_loss

__all__ = ["FeedLoss"]


class FeedLoss(pl.Callback):
    """Feed each back-propagated loss to the trainer's dynopt optimizers (``observe_loss``)."""

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        loss = loss.detach()
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if scaler is not None and scaler.is_enabled():
            loss = loss / scaler.get_scale()
        for opt in trainer.optimizers:
            feed_loss(opt, loss)
