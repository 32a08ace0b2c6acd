r"""Per-layer kinetic energy and the two halves of the per-layer configurational temperature.

For a block L of coordinates (one parameter tensor by default) with n_L coordinates:

.. math:: T_\mathrm{kin}^L = \frac{2\langle K_L\rangle}{n_L}, \quad K_L = \tfrac12 p_L^\top
          M_L^{-1} p_L; \qquad T_\mathrm{conf}^L = \frac{\langle |\nabla_L U|^2\rangle}
          {\langle \Delta_L U\rangle}, \quad \Delta_L U = \sum_{i\in L}\partial_i^2 U.

Both equal τ per block under exp(−H/τ) (equipartition; integration by parts coordinate by
coordinate). ΔU_L is estimated by Hutchinson's trick with Rademacher probes z:
E[Σ_{i∈L} zᵢ(∇²U z)ᵢ] = Σ_{i∈L} ∂ᵢ²U, one Hessian-vector product per probe giving every block at
once. The records are the per-draw |∇_L U|² and the estimate of ΔU_L, so
:func:`dynopt.observables.layer_temperatures` forms the *ratio of means* with a delta-method
standard error (a mean of per-draw ratios would be biased). Probes for chain c at step n come
from a generator keyed by (seed, n, c): independent of how chains are split.

| symbol | code |
|---|---|
| K_L | ``kinetic:<layer>`` |
| ∇_L U, ΔU_L | ``grad2:<layer>``, ``laplacian:<layer>`` |
| z, k | Rademacher probes, ``probes`` |
"""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_int
from ..potentials.minibatch import stream_seed
from .base import Context, Observable

__all__ = ["LayerConfigurational", "LayerKinetic", "layer_slices"]


def layer_slices(potential: Any, dim: int, groups: dict[str, slice] | None) -> dict[str, slice]:
    """The blocks: ``groups`` if given, else the potential's ``layers`` (one per parameter
    tensor of a NetworkLoss), else one block ``"all"``."""
    if groups is not None:
        for name, sl in groups.items():
            if not isinstance(sl, slice) or not _within(sl, dim):
                raise ValueError(f"groups[{name!r}] must be a non-empty slice within [0, {dim}), "
                                 f"got {sl!r}")
        return dict(groups)
    return dict(getattr(potential, "layers", None) or {"all": slice(0, dim)})


def _within(sl: slice, dim: int) -> bool:
    """Whether ``sl`` selects at least one coordinate and stays inside ``[0, dim)`` as
    written (no negative or clipped bounds)."""
    start = 0 if sl.start is None else sl.start
    stop = dim if sl.stop is None else sl.stop
    return 0 <= start < stop <= dim and (sl.step is None or sl.step >= 1)


class LayerKinetic(Observable):
    """``"layer_kinetic"``: K_L = p_Lᵀ M_L⁻¹ p_L / 2 per block, keys ``kinetic:<block>``.

    Args:
        groups: Optional block name -> slice of θ (default: per parameter tensor).
    """

    def __init__(self, groups: dict[str, slice] | None = None) -> None:
        self.groups = groups

    def __call__(self, ctx: Context) -> dict[str, torch.Tensor]:
        p, system = ctx.state.p, ctx.system
        if p.shape[1] == 0:
            raise ValueError(f"the 'layer_kinetic' observable needs momenta; "
                             f"{type(system).__name__} is first order")
        k = 0.5 * p * p * system._minv_like(p)  # (made once per device: no host copy)
        return {f"kinetic:{n}": k[:, sl].sum(-1)
                for n, sl in layer_slices(system.potential, p.shape[1], self.groups).items()}


class LayerConfigurational(Observable):
    """``"layer_configurational"``: ``grad2:<block>`` = |∇_L U|² and ``laplacian:<block>`` = the
    Hutchinson estimate of ΔU_L (full-batch U, ``probes`` Rademacher vectors per chain).

    Args:
        probes: Rademacher probes per chain and record (≥ 1).
        seed: Seed of the probes (≥ 0).
        groups: Optional block name -> slice of θ.
    """

    def __init__(self, probes: int = 1, seed: int = 0,
                 groups: dict[str, slice] | None = None) -> None:
        self.probes = check_int("probes", probes, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.groups = groups

    def rademacher(self, ctx: Context) -> torch.Tensor:
        """``(chains, probes, dim)`` ±1 probes, chain c's from a generator keyed (seed, step, c).

        Drawn by CPU generators, so every device gets the same probes; on CUDA they are copied
        from pinned memory without synchronising the host (once per record)."""
        q = ctx.state.q
        rows = []
        for c in ctx.chain_ids:
            g = torch.Generator().manual_seed(stream_seed(self.seed, ctx.step, c))
            rows.append(torch.randint(0, 2, (self.probes, q.shape[1]), generator=g))
        z = torch.stack(rows) if rows else torch.zeros((0, self.probes, q.shape[1]))
        z = (2 * z - 1).to(dtype=q.dtype)
        if q.device.type == "cuda":
            # drawn on the host (the same probes on every device), copied from pinned memory
            # without waiting: a pageable host-to-device copy would synchronise every record
            return z.pin_memory().to(q.device, non_blocking=True)
        return z.to(device=q.device)

    def __call__(self, ctx: Context) -> dict[str, torch.Tensor]:
        pot, q = ctx.potential, ctx.state.q
        if not hasattr(pot, "hutchinson"):
            raise TypeError(f"the 'layer_configurational' observable needs a potential with "
                            f"Hessian-vector products (a NetworkLoss), got {pot!r}")
        z = self.rademacher(ctx)
        if hasattr(pot, "grad_and_hvp"):   # the gradient from the products' own pass
            g, hz = pot.grad_and_hvp(q, z)
            terms = (z * hz).mean(1)                                # (chains, dim)
        else:
            g = pot.grad(q)
            terms = pot.hutchinson(q, z).mean(1)
        out: dict[str, torch.Tensor] = {}
        for n, sl in layer_slices(pot, q.shape[1], self.groups).items():
            out[f"grad2:{n}"] = (g[:, sl] * g[:, sl]).sum(-1)
            out[f"laplacian:{n}"] = terms[:, sl].sum(-1)
        return out

    def __repr__(self) -> str:
        return f"LayerConfigurational(probes={self.probes}, seed={self.seed})"
