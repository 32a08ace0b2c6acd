r"""The minibatch stream of a :class:`~dynopt.potentials.NetworkLoss`: batch k as a pure function.

Gradient evaluation k (k = 0, 1, 2, ... along a run, see :func:`gradient_points`) uses batch
``s = k mod B`` of epoch ``e = k div B`` (B = ``n_batches`` = ⌊n / batch_size⌋): the examples
``perm_e[s·b : (s+1)·b]`` of a permutation ``perm_e`` of the n examples drawn by
``torch.randperm`` from a generator seeded with a hash of ``(seed, e)``. The batch therefore
depends on ``(seed, k)`` only: not on the number of chains, on which process holds a chain, on
how a run is chunked or resumed. Every chain at evaluation k sees the same batch (as replicas of
one training loop would, and it keeps the batched evaluation one call with shared inputs).

Each epoch is a fresh permutation cut into B batches of exactly ``batch_size`` examples (the
remainder ``n mod batch_size`` is left out of that epoch, like ``drop_last=True``), so every batch
is a uniformly random subset: the minibatch gradient is an unbiased estimate of the full-batch
gradient, and if ``batch_size`` divides n the mean over an epoch *equals* it.

| symbol | code |
|---|---|
| k | ``index`` (gradient-evaluation counter) |
| b, B | ``batch_size``, ``n_batches`` |
| e, s | ``epoch``, ``slot`` |
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_int

__all__ = ["BatchSchedule", "gradient_points", "stream_seed"]


def stream_seed(*key: int) -> int:
    """A 63-bit seed from integer keys (NumPy SeedSequence hash: unrelated seeds per key)."""
    words = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


class BatchSchedule:
    """Batch indices of evaluation k, a pure function of ``(seed, k)`` (see the module doc).

    Args:
        n: Number of examples.
        batch_size: Examples per batch (1 ≤ batch_size ≤ n).
        seed: Seed of the stream (≥ 0).
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n = check_int("n", n, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if self.batch_size > self.n:
            raise ValueError(f"batch_size must be <= the number of examples ({self.n}), "
                             f"got {batch_size}")
        self.seed = check_int("seed", seed, minimum=0)
        self.n_batches = self.n // self.batch_size
        self._epoch = -1
        self._perm = torch.arange(self.n)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The example order of ``epoch`` (cached for the current epoch)."""
        epoch = check_int("epoch", epoch, minimum=0)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(stream_seed(self.seed, epoch))
            self._perm = torch.randperm(self.n, generator=g)
            self._epoch = epoch
        return self._perm

    def indices(self, index: int) -> torch.Tensor:
        """Example indices of evaluation ``index`` (a view of the epoch's permutation)."""
        index = check_int("index", index, minimum=0)
        epoch, slot = divmod(index, self.n_batches)
        b = self.batch_size
        return self.permutation(epoch)[slot * b:(slot + 1) * b]


def gradient_points(grad_reads: list[bool], position_moves: list[bool]) -> tuple[list[int], int]:
    """Which gradient evaluation each op of a step reads, for a stochastic potential.

    A run evaluates ∇U at a sequence of positions; between two position changes all gradient
    reads share one evaluation (the backends cache it, also across the step boundary). Numbering
    these evaluations 0, 1, 2, ... along an uninterrupted run, the read at op j of step n uses
    evaluation ``n·G + offset[j]``: a pure function of the step counter, so chunking, replays
    and restarts (which recompute the gradient at the same position) use the same batch.

    Args:
        grad_reads: Per op, whether it reads ∇U.
        position_moves: Per op, whether it changes q.

    Returns:
        ``(offset, G)``: per op its offset (-1 for ops that read no gradient) and the number of
        new evaluations per step. For BAOAB ``"BAOAB"`` offsets are (0, -1, -1, -1, 1) with G = 1:
        the gradient at q_n uses evaluation n.
    """
    offsets: list[int] = []
    count = 0          # evaluations opened so far in this step
    fresh = True       # whether the next read opens a new evaluation
    for reads, moves in zip(grad_reads, position_moves, strict=True):
        if reads:
            if fresh:
                count += 1
                fresh = False
            offsets.append(count - 1)
        else:
            offsets.append(-1)
        if moves:
            fresh = True
    if count == 0:
        return offsets, 0
    first_read = next(j for j, r in enumerate(grad_reads) if r)
    moves_before = any(position_moves[:first_read])
    # the first evaluation of a step continues the previous step's last one if no position
    # change separates them (q did not move since the last read of the previous step)
    merged = not moves_before and not fresh
    per_step = count - 1 if merged else count
    return offsets, per_step
