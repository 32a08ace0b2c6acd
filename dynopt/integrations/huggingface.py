"""dynopt optimizers in the Hugging Face ``transformers.Trainer``.

The ``Trainer`` calls ``optimizer.step()`` without the loss, so the optimizers that need it
(BBI, ECDSep, HeavyBall with loss events) could not run in it. :class:`FeedLossMixin` hands every
micro-batch's back-propagated loss (``Trainer.training_step``'s return value: the loss divided by
the number of gradient-accumulation steps when the Trainer divides) to
``optimizer.observe_loss``, so the step sees the mean loss of the accumulated batch, matching the
accumulated gradient::

    from dynopt.integrations.huggingface import DynoptTrainer
    opt = dynopt.optim.BBI(model.parameters(), lr=0.05, seed=0)
    trainer = DynoptTrainer(model=model, args=args, train_dataset=ds, optimizers=(opt, None))
    trainer.train()

The Trainer's param groups (``weight_decay`` on all but biases and norms) are honoured: in dynopt
``weight_decay`` is the Gaussian prior λ|θ|²/2 (:mod:`dynopt.optim.prior`). Checkpoints resume
bit for bit (the optimizer's ``state_dict`` loads with ``weights_only=True``).
"""

from __future__ import annotations

from typing import Any

import transformers

from .feed import discard_loss, feed_loss

__all__ = ["DynoptTrainer", "FeedLossMixin"]


class _DiscardSkippedLoss(transformers.TrainerCallback):
    """After the optimizer step: a step that the GradScaler skipped (non-finite fp16
    gradients) did not consume the observed loss, and the Trainer zeroes the gradients through
    the model, not the optimizer, so the loss is dropped here."""

    def on_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                          **kwargs: Any) -> None:
        if optimizer is not None:
            discard_loss(optimizer)


class FeedLossMixin:
    """Mix into a ``transformers.Trainer`` subclass (before it) to feed the loss to the
    optimizer after every backward pass (and drop it when the step is skipped)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.add_callback(_DiscardSkippedLoss())  # type: ignore[attr-defined]

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        loss = super().training_step(*args, **kwargs)  # type: ignore[misc]
        feed_loss(self.optimizer, loss)  # type: ignore[attr-defined]
        return loss


class DynoptTrainer(FeedLossMixin, transformers.Trainer):
    """``transformers.Trainer`` that feeds every micro-batch loss to the dynopt optimizer."""
