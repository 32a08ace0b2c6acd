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
``weight_decay`` is the Gaussian prior λ|θ|²/2 (:mod:`dynopt.optim.prior`). AdLaLa and LOL,
whose group 0 is the first layer, cannot be built from those groups (they would run the first
layer's dynamics on every weight): ``optimizer_cls_and_kwargs=(AdLaLa, ...)`` is refused; pass
``optimizers=(dynopt.optim.make("adlala", model), None)``. Checkpoints resume bit for bit (the
optimizer's ``state_dict`` loads with ``weights_only=True``).
"""

from __future__ import annotations

from typing import Any

from . import missing_framework

try:
    import transformers
except ImportError as err:
    raise missing_framework("huggingface", "transformers", err) from err

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

    def create_optimizer(self, model: Any = None) -> Any:
        """The Trainer's optimizer; AdLaLa/LOL from ``optimizer_cls_and_kwargs`` are refused
        (the Trainer's groups are weight-decay groups, not the layers they partition)."""
        from ..optim import LOL, AdLaLa

        given = getattr(self, "optimizer_cls_and_kwargs", None)
        if (getattr(self, "optimizer", None) is None and given is not None
                and isinstance(given[0], type) and issubclass(given[0], AdLaLa | LOL)):
            name = given[0].__name__
            raise ValueError(
                f"{name} partitions the network by layer (param group 0 is the first layer), "
                "but the Trainer builds it from its weight-decay groups (all weights, then all "
                f"biases and norms); build it yourself and pass optimizers=(opt, None), e.g. "
                f"dynopt.optim.make({name.lower()!r}, model)")
        return super().create_optimizer(model)  # type: ignore[misc]

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        loss = super().training_step(*args, **kwargs)  # type: ignore[misc]
        feed_loss(self.optimizer, loss)  # type: ignore[attr-defined]
        return loss


class DynoptTrainer(FeedLossMixin, transformers.Trainer):
    """``transformers.Trainer`` that feeds every micro-batch loss to the dynopt optimizer."""
