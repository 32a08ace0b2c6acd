"""Per-layer kinetic and configurational temperatures from a run recorded with observables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..diagnostics import Estimate, estimate_mean, estimate_ratio
from ..diagnostics._input import check_burn_in
from .layers import layer_slices

__all__ = ["LayerTemperature", "layer_temperatures"]


@dataclass(frozen=True)
class LayerTemperature:
    """Temperatures of one block of coordinates (None where not recorded).

    Attributes:
        n: Number of coordinates of the block.
        kinetic: 2⟨K_L⟩/n_L with its batch-means SE.
        configurational: ⟨|∇_L U|²⟩/⟨ΔU_L⟩ with its delta-method batch-means SE.
    """

    n: int
    kinetic: Estimate | None
    configurational: Estimate | None


def layer_temperatures(traj: Any, *, burn_in: int = 0, n_batches: int | None = None,
                       groups: dict[str, slice] | None = None) -> dict[str, LayerTemperature]:
    """T_kin and T_conf per block from ``kinetic:<L>``, ``grad2:<L>``, ``laplacian:<L>`` records.

    Args:
        traj: A trajectory recorded with ``"layer_kinetic"`` and/or ``"layer_configurational"``.
        burn_in: Leading draws to discard. T_kin also skips the leading draws that have no
            momenta in any chain (NaN: a TrainingMonitor's record 0, before the first step).
        n_batches: Batches per chain for the standard errors.
        groups: The blocks used when recording (default: the potential's layers).
    """
    # the parameter count: from the potential (an observables= run without "theta" records no
    # θ, and an interrupted run has no final state)
    pot = traj.system.potential
    dim = pot.dim if pot is not None else (
        traj.final_state.dim if traj.final_state is not None else traj.dim)
    blocks = layer_slices(traj.system.potential, dim, groups)
    ex = traj.extras
    first = next(iter(ex.values()))
    b = check_burn_in(burn_in, first.shape[1])
    out = {}
    for name, sl in blocks.items():
        n = len(range(*sl.indices(dim)))
        kin = conf = None
        if f"kinetic:{name}" in ex:
            k = 2.0 * np.asarray(ex[f"kinetic:{name}"])[:, b:] / n
            defined = ~np.isnan(k).all(axis=0)
            if defined.any():  # all NaN: the block has no momenta (e.g. LOL's)
                # leading records without momenta in any chain (a TrainingMonitor's record 0,
                # before the optimizer's first step) have no kinetic temperature: skip them
                kin = estimate_mean(k[:, int(np.argmax(defined)):], n_batches)
        if f"grad2:{name}" in ex:
            conf = estimate_ratio(np.asarray(ex[f"grad2:{name}"])[:, b:],
                                  np.asarray(ex[f"laplacian:{name}"])[:, b:], n_batches)
        out[name] = LayerTemperature(n=n, kinetic=kin, configurational=conf)
    if not any(t.kinetic or t.configurational for t in out.values()):
        raise ValueError("traj has no per-layer records; integrate with observables="
                         "['layer_kinetic', 'layer_configurational']")
    return out
