"""A train/test split of tensors and a seeded minibatch iterator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .._validation import check_int

__all__ = ["Split", "batches"]


@dataclass(frozen=True)
class Split:
    """Features and targets for training and testing.

    Attributes:
        x_train, y_train, x_test, y_test: Tensors (features float32; targets float32 for binary
            tasks, int64 class indices otherwise).
        n_classes: Number of classes (2 for the binary spiral task).
        name: Dataset name.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    name: str

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
    *, shuffle: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches of ``(x, y)``; the order is drawn from ``generator`` (reproducible)."""
    batch_size = check_int("batch_size", batch_size, minimum=1)
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y must have one row per example, got {n} inputs and "
                         f"{y.shape[0]} targets")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]
