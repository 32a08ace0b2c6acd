"""The single-dynamics optimizer classes spell out their signatures (for help(), IDEs and
torch.optim's own style) but must not drift from the declared dynamics: built with their
defaults, each runs exactly the update a Partitioned group of that dynamics runs."""

from __future__ import annotations

import inspect

import pytest
import torch

import dynopt.optim as O
from dynopt.optim import dynamics as D

CLASSES = [O.Langevin, O.OverdampedLangevin, O.AdaptiveLangevin, O.NoseHoover]
#: Declared keys a class deliberately does not offer, and why.
NOT_OFFERED = {"overdamped_dt": "set by LOL's overdamped groups only (dt = lr²/2)"}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_class_signature_covers_every_declared_hyperparameter(cls):
    dyn = D.get(cls.only_dynamics)
    params = inspect.signature(cls.__init__).parameters
    missing = [name for name in dyn.hypers if name not in params and name not in NOT_OFFERED]
    assert not missing, (cls.__name__, missing)
    assert "lr" in params


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_class_defaults_give_the_declared_dynamics_update(cls):
    """Cls(params) and Partitioned(params, lr=<the class's lr>, dynamics=...) with nothing else
    set lower to the same ops with the same constants, the same initial thermostat values and
    the same scheme (a default changed in one place only fails here)."""
    lr = inspect.signature(cls.__init__).parameters["lr"].default
    p1 = [torch.nn.Parameter(torch.zeros(3))]
    p2 = [torch.nn.Parameter(torch.zeros(3))]
    a = cls(p1, seed=0)
    b = O.Partitioned(p2, lr=lr, dynamics=cls.only_dynamics, seed=0)
    sa, sb = a._spec(a.param_groups[0]), b._spec(b.param_groups[0])
    assert type(sa.system) is type(sb.system)
    assert type(sa.integrator) is type(sb.integrator)
    assert sa.h == sb.h
    assert sa.steady == sb.steady and sa.first == sb.first
    assert sa.initial_extras == sb.initial_extras
    assert sa.mass == sb.mass
