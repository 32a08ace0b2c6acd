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

A window whose step a GradScaler skips drops its loss with its gradients (the optimizer's
``zero_grad``). With several optimizers of which one or more read the loss (manual
optimization, e.g. a GAN) the callback cannot tell whose loss a backward pass is (another
optimizer's loss would be added to the reader's) and refuses; pass each its own,
``opt.step(loss=loss)``.

Requires ``pytorch_lightning`` (the ``integrations`` extra); with only the unified ``lightning``
package installed, ``lightning.pytorch`` is used.
"""

from __future__ import annotations

from typing import Any

from . import missing_framework

try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover - the unified package
    try:
        import lightning.pytorch as pl  # type: ignore[no-redef]
    except ImportError as err:
        raise missing_framework("lightning", "pytorch-lightning", err) from err

from .feed import feed_loss, unwrap

__all__ = ["FeedLoss"]


class FeedLoss(pl.Callback):
    """Feed each back-propagated loss to the trainer's dynopt optimizers (``observe_loss``)."""

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        loss = loss.detach()
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if scaler is not None and scaler.is_enabled():
            loss = loss / scaler.get_scale()
        readers = [opt for opt in trainer.optimizers if getattr(unwrap(opt), "uses_loss", False)]
        if readers and len(trainer.optimizers) > 1:
            names = ", ".join(type(unwrap(o)).__name__ for o in trainer.optimizers)
            raise ValueError(
                f"FeedLoss cannot tell which of the {len(trainer.optimizers)} optimizers "
                f"({names}) a back-propagated loss belongs to, and "
                f"{type(unwrap(readers[0])).__name__} reads the loss (another optimizer's loss "
                "would be added to its own); with several optimizers (manual optimization) "
                "drop FeedLoss and give each optimizer that reads the loss its own: "
                "opt.step(loss=loss) or opt.optimizer.observe_loss(loss)")
        for opt in readers:
            feed_loss(opt, loss)
