"""Hand a back-propagated loss to the optimizer behind a framework's wrappers."""

from __future__ import annotations

from typing import Any

__all__ = ["discard_loss", "feed_loss", "unwrap"]

#: Attributes under which wrappers keep the optimizer they wrap (accelerate's
#: ``AcceleratedOptimizer.optimizer``, Lightning's ``LightningOptimizer._optimizer``).
_WRAPPED = ("optimizer", "_optimizer")


def unwrap(optimizer: Any) -> Any:
    """The innermost optimizer of a chain of framework wrappers."""
    seen = set()
    while id(optimizer) not in seen:
        seen.add(id(optimizer))
        inner = next((getattr(optimizer, a) for a in _WRAPPED
                      if getattr(optimizer, a, None) is not None), None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return optimizer


def feed_loss(optimizer: Any, loss: Any) -> bool:
    """``observe_loss(loss)`` on the (unwrapped) optimizer if it reads the loss value.

    Returns:
        Whether the loss was handed over.
    """
    opt = unwrap(optimizer)
    if getattr(opt, "uses_loss", False) and callable(getattr(opt, "observe_loss", None)):
        opt.observe_loss(loss)
        return True
    return False


def discard_loss(optimizer: Any) -> None:
    """Drop the (unwrapped) optimizer's pending observed loss, if it keeps one: after a step
    that a GradScaler skipped, the loss of the skipped window must not add to the next one."""
    opt = unwrap(optimizer)
    if callable(getattr(opt, "discard_observed_loss", None)):
        opt.discard_observed_loss()
