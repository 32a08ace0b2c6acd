"""Evaluate models as fixed functions: eval mode for the duration of a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Every module in eval mode (dropout off, batch norm on its running statistics) inside the
    block, each submodule's own mode restored afterwards: a network is a fixed function of its
    parameters only in eval mode (a training loop may have called ``model.train()``)."""
    roots = list(modules)
    held = [(m, m.training) for root in roots for m in root.modules()]
    try:
        for root in roots:
            root.eval()
        yield
    finally:
        for m, training in held:
            m.train(training)
