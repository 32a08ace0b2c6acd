r"""Per-chain noise streams for the torch backend: chain c's noise depends on (seed, c) only.

By default the torch backend draws one ``(chains, dim)`` tensor per noise op per step from the
run's single generator, so what chain c receives depends on how many chains run beside it.
With ``integrate(..., chain_ids=...)`` each chain instead owns a ``torch.Generator`` seeded from
``(seed, c)`` (c its *global* index, :func:`chain_seed`: distinct chains, distinct streams)
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

__all__ = ["ChainStreams", "chain_seed"]

_M32 = 0xFFFFFFFF


def chain_seed(seed: int, chain: int, device: torch.device) -> int:
    """The seed of chain ``chain``'s generator in a run seeded ``seed``.

    torch's CPU generator keeps only 32 bits of its seed, so 32 bits of a hash of (seed, c)
    gave two chains the same stream with probability ≈ n²/2³³ (39 % for 65,536 chains). On the
    CPU the seed is instead a bijection of c modulo 2³² (murmur3's 32-bit finalizer of
    base + c, base a hash of the run seed): chains of one run never share a stream. Other
    devices (CUDA's Philox) take a 63-bit hash of (seed, c).
    """
    if device.type != "cpu":
        return stream_seed(seed, chain)
    h = (stream_seed(seed) + chain) & _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


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
            g.manual_seed(chain_seed(seed, c, device))
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
