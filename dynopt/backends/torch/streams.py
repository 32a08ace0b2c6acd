r"""Per-chain noise streams for the torch backend: chain c's noise depends on (seed, c) only.

By default the torch backend draws one ``(chains, dim)`` tensor per noise op per step from the
run's single generator, so what chain c receives depends on how many chains run beside it.
With ``integrate(..., chain_ids=...)`` each chain instead owns a ``torch.Generator`` seeded with
a hash of ``(seed, c)`` (c its *global* index, :func:`dynopt.potentials.minibatch.stream_seed`)
and every draw of a step is made row by row from these generators, in program order. A chain's
numbers are then the same whichever process holds it and whoever runs beside it: replicas split
over processes reproduce the single-process run bit for bit (given a batch-size invariant
model evaluation, see docs/networks.md).

Initial momenta and extras are drawn per chain from the same generators (before any step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...potentials.minibatch import stream_seed
from . import ops

__all__ = ["ChainStreams"]


class ChainStreams:
    """One seeded generator per chain.

    Args:
        seed: The run's seed.
        chain_ids: Global index of each local chain (distinct, ≥ 0).
        device: Device of the generators (and of the draws).
    """

    def __init__(self, seed: int, chain_ids: Sequence[int], device: torch.device) -> None:
        self.chain_ids = [int(c) for c in chain_ids]
        self.device = device
        self.generators = []
        for c in self.chain_ids:
            g = torch.Generator(device=device)
            g.manual_seed(stream_seed(seed, c))
            self.generators.append(g)

    def normal(self, dim: int, dtype: torch.dtype, kind: str = "gaussian") -> torch.Tensor:
        """``(chains, dim)`` standard normals (or the discrete variable), row c from chain c."""
        if not self.generators:
            return torch.empty((0, dim), dtype=dtype, device=self.device)
        return torch.stack([ops.standard_normal((dim,), g, dtype, self.device, kind)
                            for g in self.generators])

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, states, strict=True):
            g.set_state(s)

    def copy(self) -> ChainStreams:
        new = ChainStreams.__new__(ChainStreams)
        new.chain_ids = list(self.chain_ids)
        new.device = self.device
        new.generators = []
        for g in self.generators:
            h = torch.Generator(device=self.device)
            h.set_state(g.get_state())
            new.generators.append(h)
        return new

    def __getitem__(self, i: int) -> Any:
        return self.generators[i]

    def __len__(self) -> int:
        return len(self.generators)
