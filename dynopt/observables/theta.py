"""θ itself (small models) and fixed random projections of θ (any model)."""

from __future__ import annotations

import torch

from .._validation import check_int
from .base import Context, Observable

__all__ = ["Projections", "Theta"]


class Theta(Observable):
    """``"theta"``: the whole position vector; it becomes ``traj.q`` (chains × dim per record)."""

    def __call__(self, ctx: Context) -> dict[str, torch.Tensor]:
        return {"q": ctx.state.q.clone()}


class Projections(Observable):
    """``"projections"``: θ·vⱼ for k fixed random unit vectors vⱼ (seeded), ``(chains, k)``.

    The directions are drawn once (float64 normals from a generator seeded with ``seed``,
    normalised) and are the same for every chain, process and run with that seed: a cheap
    low-dimensional view of θ for ESS and R-hat.

    Args:
        k: Number of directions (≥ 1).
        seed: Seed of the directions (≥ 0).
    """

    def __init__(self, k: int = 4, seed: int = 0) -> None:
        self.k = check_int("k", k, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self._v: torch.Tensor | None = None

    def directions(self, dim: int) -> torch.Tensor:
        """The ``(k, dim)`` unit vectors (float64, CPU)."""
        if self._v is None or self._v.shape[1] != dim:
            g = torch.Generator().manual_seed(self.seed)
            v = torch.randn(self.k, dim, generator=g, dtype=torch.float64)
            self._v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True)
        return self._v

    def __call__(self, ctx: Context) -> dict[str, torch.Tensor]:
        q = ctx.state.q
        v = self.directions(q.shape[1]).to(dtype=q.dtype, device=q.device)
        # row-wise reductions, not a GEMM: a chain's value must not depend on how many chains
        # are projected with it (GEMM blocking does), so split runs stay bit-identical
        return {"projections": torch.stack([(q * vj).sum(-1) for vj in v], dim=1)}

    def __repr__(self) -> str:
        return f"Projections(k={self.k}, seed={self.seed})"
