"""dynopt's optimizers inside the training frameworks people use.

The optimizers that read the loss value (:class:`~dynopt.optim.BBI`,
:class:`~dynopt.optim.ECDSep`, :class:`~dynopt.optim.HeavyBall` with loss events) get it through
``optimizer.observe_loss(loss)``, called with every back-propagated micro-batch loss; these
adapters make the frameworks call it:

| framework | adapter (module) |
|---|---|
| Hugging Face ``Trainer`` | ``DynoptTrainer``, ``FeedLossMixin`` (``.huggingface``) |
| PyTorch Lightning | the ``FeedLoss`` callback (``.lightning``) |
| a plain loop | ``opt.observe_loss(loss)`` after each ``loss.backward()`` |

The framework packages are optional (``pip install dynopt[integrations]``); each adapter module
imports its framework, this package imports none.
"""

from __future__ import annotations

from .feed import feed_loss as feed_loss
from .feed import unwrap as unwrap

__all__ = ["feed_loss", "unwrap"]


def missing_framework(adapter: str, package: str, err: ImportError) -> ImportError:
    """The ImportError an adapter module raises when its framework is not installed: names the
    package and the extra that installs it (not the last module the import tried)."""
    return ImportError(f"dynopt.integrations.{adapter} needs {package}, which is not "
                       f"installed ({err}): pip install 'dynopt[integrations]' (or pip install "
                       f"{package})")
