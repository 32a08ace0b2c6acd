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
