"""Replicas split across processes: ``torch.distributed`` ranks each integrate a block of chains.

Each rank runs the chains ``[lo, hi)`` of :func:`chain_block` with ``integrate(...,
chain_ids=range(lo, hi))``: chain c's noise comes from its own generator keyed by ``(seed, c)``
(:mod:`dynopt.backends.torch.streams`) and a :class:`~dynopt.potentials.NetworkLoss` minibatch
stream is keyed by the gradient-evaluation counter, never by the rank. The records are then
gathered so every rank returns the whole study, equal bit for bit to the same study run in one
process with ``chain_ids=range(n_chains)``, provided the model evaluation of a chain does not
depend on how many chains are evaluated beside it (true for the CPU kernels of MLPs with a fixed
thread count, which the tests check; GPU libraries may pick batch-size dependent kernels).

Launch (CPU, gloo; nccl on GPUs)::

    torchrun --nproc_per_node=4 my_study.py        # my_study.py calls
    #   torch.distributed.init_process_group("gloo")
    #   traj = dynopt.replicas.integrate_distributed(system, "BAOAB", theta0, n_chains=16,
    #                                                h=0.05, n_steps=10_000, seed=1,
    #                                                observables=["loss", "layer_kinetic"])
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ._validation import check_int
from .integrate import integrate
from .trajectory import Trajectory

__all__ = ["chain_block", "integrate_distributed"]


def chain_block(n_chains: int, rank: int, world: int) -> range:
    """The contiguous chains of ``rank``: sizes differ by at most one, lower ranks first."""
    n_chains = check_int("n_chains", n_chains, minimum=1)
    world = check_int("world", world, minimum=1)
    rank = check_int("rank", rank, minimum=0)
    if rank >= world:
        raise ValueError(f"rank must be < world ({world}), got {rank}")
    base, extra = divmod(n_chains, world)
    lo = rank * base + min(rank, extra)
    return range(lo, lo + base + (rank < extra))


def _rows(name: str, a: Any, block: range, n_chains: int) -> Any:
    """``a`` restricted to the block's rows if it has one row per chain. A torch tensor stays
    a tensor on its device (``integrate`` runs where ``q0`` lives: a CUDA ``q0`` on its GPU)."""
    if a is None:
        return None
    arr = a.detach() if hasattr(a, "detach") else np.asarray(a)
    if arr.ndim == 2:
        if arr.shape[0] != n_chains:
            raise ValueError(f"{name} has {arr.shape[0]} rows but n_chains={n_chains}")
        return arr[block.start:block.stop]
    return arr


def integrate_distributed(system: Any, integrator: Any, q0: Any, *, n_chains: int,
                          group: Any = None, **kwargs: Any) -> Trajectory:
    """``integrate()`` with the chains split over the ranks of ``group``; gathered result.

    Args:
        system, integrator, q0: As for :func:`dynopt.integrate` (``q0`` ``(dim,)`` or
            ``(n_chains, dim)``; rows are split like the chains, and so is ``p0``).
        n_chains: Total number of chains (all ranks together).
        group: The process group (default: the world; without an initialised
            ``torch.distributed`` the run is a single process).
        **kwargs: Everything else :func:`dynopt.integrate` takes (backend is torch);
            ``seed`` must be given and equal on all ranks.

    Returns:
        The whole trajectory (all chains, in chain order) on every rank; ``final_state`` is
        this rank's block only.
    """
    import torch.distributed as dist

    if kwargs.get("seed") is None:
        raise ValueError("integrate_distributed needs seed= (the same integer on every rank)")
    for bad in ("chain_ids", "state", "events"):
        if kwargs.get(bad) is not None:
            raise ValueError(f"integrate_distributed does not take {bad}=")
    if kwargs.setdefault("backend", "torch") != "torch":
        raise ValueError(f"integrate_distributed needs backend='torch', got {kwargs['backend']!r}")
    n_chains = check_int("n_chains", n_chains, minimum=1)
    on = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank(group) if on else 0
    world = dist.get_world_size(group) if on else 1
    if n_chains < world:  # on every rank alike (only the empty blocks raised: the rest hung)
        raise ValueError(f"n_chains={n_chains} is fewer than the {world} ranks")
    block = chain_block(n_chains, rank, world)
    local: Trajectory | None = None
    error: BaseException | None = None
    try:
        kwargs["p0"] = _rows("p0", kwargs.get("p0"), block, n_chains)
        local = integrate(system, integrator, _rows("q0", q0, block, n_chains),
                          n_chains=len(block), chain_ids=block, **kwargs)
    except Exception as e:  # every rank must reach the gather, or the others wait forever
        if world == 1:
            raise
        error = e
    if world == 1:
        assert local is not None
        return local
    parts: list[Any] = [None] * world
    mine = ({"error": f"{type(error).__name__}: {error}"} if error is not None else
            {"q": local.q, "p": local.p, "energy": local.energy, "extras": local.extras})
    dist.all_gather_object(parts, mine, group=group)
    failed = [(r, pt["error"]) for r, pt in enumerate(parts) if "error" in pt]
    if error is not None:
        raise error
    if failed:
        r, msg = failed[0]
        raise RuntimeError(f"integrate_distributed: rank {r} failed ({msg}); this rank's "
                           "block finished but the gathered trajectory is incomplete")
    assert local is not None

    def cat(key: str) -> Any:
        return None if parts[0][key] is None else np.concatenate([pt[key] for pt in parts])

    extras = {k: np.concatenate([pt["extras"][k] for pt in parts]) for k in local.extras}
    return dataclasses.replace(local, q=cat("q"), p=cat("p"), energy=cat("energy"),
                               extras=extras)
