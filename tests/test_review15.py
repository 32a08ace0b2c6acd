"""Session 15 review: gaps found where the session's merged changes meet."""

from __future__ import annotations

import pickle

import pytest
import torch

from dynopt.optim import Langevin, Partitioned
from dynopt.optim.base import LRSchedule


def _schedule(step: int) -> float:
    return 0.05 / (1.0 + step)


def _make(name: str) -> torch.optim.Optimizer:
    model = torch.nn.Linear(3, 2)
    if name == "Partitioned":
        return Partitioned([{"params": [model.weight], "dynamics": "langevin"},
                            {"params": [model.bias], "dynamics": "langevin"}],
                           lr=_schedule, seed=0)
    return Langevin(model.parameters(), lr=_schedule, seed=0)


@pytest.mark.parametrize("name", ["Langevin", "Partitioned"])
def test_an_optimizer_pickled_before_lr_schedule_refuses_a_torch_scheduler_clearly(name):
    """An optimizer pickled before LRSchedule existed holds its lr schedule as a bare function
    (unpickling does not go through add_param_group): a torch LR scheduler on it failed inside
    torch with "unsupported operand type(s) for *: 'function' and 'float'" instead of the
    refusal that names the schedule. Unpickling now wraps it as add_param_group does."""
    opt = _make(name)
    state = opt.__getstate__()
    # an older version's pickle: the groups hold the function itself
    state["param_groups"] = [{**g, "lr": _schedule} for g in state["param_groups"]]
    old = type(opt).__new__(type(opt))
    old.__setstate__(state)
    old = pickle.loads(pickle.dumps(old))
    for g in old.param_groups:
        assert isinstance(g["lr"], LRSchedule) and g["lr"].fn is _schedule
    with pytest.raises(TypeError, match=r"lr is a dynopt schedule .*_schedule"):
        torch.optim.lr_scheduler.LambdaLR(old, lambda s: 1.0)


def _shell_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    n, dim = 4, 2000
    p = torch.zeros(n, dim, dtype=dtype)  # |p| = 0 at the first active step: started along −∇U
    grad = torch.randn(n, dim, generator=g, dtype=dtype) * 0.37
    v = torch.rand(n, 1, generator=g, dtype=torch.float64) * 3 + 0.1
    return p, grad, v


def test_the_torch_bbi_shell_applies_its_per_chain_coefficients_in_the_momenta_s_dtype():
    """The torch backend's BBI shell computes its per-chain scalars in float64 (session 15),
    but applied the float64 coefficients to the whole (chains, dim) momenta, so every step ran
    a float64 where() and mul_() over them (a float32 integrate() step 2-3x slower) and rounded
    twice where the optimizer rounds once: the optimizer casts each coefficient to the
    momenta's dtype first (bbi.scalar_like). Now p = (−c₀·∇U)·r with c₀, r in p's dtype."""
    from dynopt.backends.torch.energy_ops import BBIConstants, bbi_shell_
    from dynopt.program import BBI_EXTRAS

    for dtype in (torch.float32, torch.float64):
        p, grad, v = _shell_inputs(dtype)
        st = {k: torch.zeros(p.shape[0], 1, dtype=dtype) for k in BBI_EXTRAS}
        c = BBIConstants(v0=0.0, delta_energy=1.0, t0=float("inf"), n_bounces=0.0,
                         t1=float("inf"), eps1=0.0, eps2=1e-12, project=True, cube=False)
        dec = bbi_shell_(p, grad, v, st, c, torch.Generator().manual_seed(0))
        assert p.dtype == dtype and bool((dec.init_coef != 0).all())
        want = (-dec.init_coef.to(dtype) * grad) * dec.scale.to(dtype)
        assert torch.equal(p, want)
