r"""λ_max of the Hessian of U at each chain's θ, as a per-record observable.

.. math:: λ_{max}(θ_c) = \max_{|v|=1} v^\top \nabla^2 U(θ_c)\, v

by Lanczos on the potential's Hessian-vector products (:func:`dynopt.diagnostics.
hessian_top_eigenvalue`; a :class:`~dynopt.potentials.NetworkLoss` supplies them through its
``hvp``). Each record synchronizes with the host and costs ~20 Hessian-vector products per
chain, so record it sparsely (``every``) and compare it with
:func:`dynopt.diagnostics.stability_limit` of the run's scheme.

| symbol | code |
|---|---|
| λ_max | ``lambda_max`` (``(chains,)``; NaN in the records it skips) |
| U | ``system.potential`` |
"""

from __future__ import annotations

import math

import torch

from .._validation import check_int, check_positive
from .base import Context, Observable

__all__ = ["LambdaMax"]


class LambdaMax(Observable):
    """``lambda_max``: the top Hessian eigenvalue per chain, every ``every``-th record.

    Args:
        every: Compute it at records 0, every, 2·every, ... (NaN in between).
        tol: Lanczos relative tolerance.
    """

    def __init__(self, every: int = 1, tol: float = 1e-6) -> None:
        self.every = check_int("every", every, minimum=1)
        self.tol = check_positive("tol", tol)

    def __call__(self, ctx: Context) -> dict[str, torch.Tensor]:
        from ..diagnostics import potential_top_eigenvalue

        q = ctx.state.q
        pot = ctx.potential
        due = ctx.record % self.every == 0  # by the run's record index: the object may be reused
        vals = []
        for c in range(q.shape[0]):
            if not due:
                vals.append(math.nan)
            else:  # a NetworkLoss uses its own Hessian-vector products, on its device
                qc = q[c].detach() if hasattr(pot, "hvp") else q[c].detach().cpu()
                vals.append(potential_top_eigenvalue(pot, qc, tol=self.tol).value)
        return {"lambda_max": torch.tensor(vals, dtype=torch.float64, device=q.device)}

    def __repr__(self) -> str:
        return f"LambdaMax(every={self.every}, tol={self.tol})"
