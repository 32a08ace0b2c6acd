"""Every dynopt optimizer class, built on a tiny model, with a training loop that fits it.

Shared by the copy, contract and integration tests. Each factory takes a model (from
:func:`model`) and keyword overrides and returns the optimizer; the settings make every piece
of state matter: noise at τ > 0, thermostats, BBI bounces, ECDSep rotation noise, an event that
fires, DDPNOpt feedback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dynopt.events import LossBelow, SetFriction
from dynopt.optim import (
    BBI,
    LOL,
    AdaptiveLangevin,
    AdLaLa,
    DDPNOpt,
    ECDSep,
    HeavyBall,
    Langevin,
    NoseHoover,
    OverdampedLangevin,
    Partitioned,
)


def model(seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.nn.Sequential:
    """Linear(3, 6) → Tanh → Linear(6, 1)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(),
                               torch.nn.Linear(6, 1)).to(dtype)


def data(n: int, seed: int = 1, dtype: torch.dtype = torch.float64, batch: int = 8
         ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(batch, 3, generator=g, dtype=dtype)
        out.append((x, torch.sin(x.sum(1, keepdim=True))))
    return out


def _groups(m: torch.nn.Sequential) -> list[dict[str, Any]]:
    return [{"params": m[0].parameters()}, {"params": m[2].parameters()}]


Factory = Callable[..., torch.optim.Optimizer]

FACTORIES: dict[str, Factory] = {
    "Langevin": lambda m, **kw: Langevin(m.parameters(), **{"lr": 0.1, "gamma": 0.5,
                                                             "temperature": 1e-3, **kw}),
    "OverdampedLangevin": lambda m, **kw: OverdampedLangevin(
        m.parameters(), **{"lr": 0.05, "temperature": 1e-3, "scheme": "lm", **kw}),
    "AdaptiveLangevin": lambda m, **kw: AdaptiveLangevin(
        m.parameters(), **{"lr": 0.1, "temperature": 1e-3, **kw}),
    "NoseHoover": lambda m, **kw: NoseHoover(m.parameters(), **{"lr": 0.1, "temperature": 1e-3,
                                                                 **kw}),
    "NoseHooverChain": lambda m, **kw: NoseHoover(
        m.parameters(), **{"lr": 0.1, "temperature": 1e-3, "chain_length": 3,
                           "scope": "group", **kw}),
    "AdLaLa": lambda m, **kw: AdLaLa(_groups(m), **{"lr": 0.1, "temperature": 1e-3, **kw}),
    "LOL": lambda m, **kw: LOL(_groups(m), **{"lr": 0.1, "temperature": 1e-3, **kw}),
    "Partitioned": lambda m, **kw: Partitioned(
        [{"params": m[0].parameters(), "dynamics": "nose-hoover"},
         {"params": m[2].parameters(), "dynamics": "langevin"}],
        **{"lr": 0.1, "temperature": 1e-3, **kw}),
    "BBI": lambda m, **kw: BBI(m.parameters(), **{"lr": 0.05, "t0": 3, "n_bounces": 3, **kw}),
    "ECDSep": lambda m, **kw: ECDSep(m.parameters(), **{"lr": 0.05, "nu": 1e-2, **kw}),
    "HeavyBall": lambda m, **kw: HeavyBall(
        m.parameters(), **{"lr": 0.1, "gamma": 0.5,
                           "events": [LossBelow(0.9, then=SetFriction(3.0))], **kw}),
    "DDPNOpt": lambda m, **kw: DDPNOpt(m, **{"lr": 0.05, "terminal_hessian": "identity",
                                             **kw}),
}

#: Optimizers whose step reads the loss value.
NEEDS_LOSS = ("BBI", "ECDSep", "HeavyBall")
#: Optimizers built from a param list (torch's signature) rather than a whole model.
PARAM_LIST = tuple(n for n in FACTORIES if n != "DDPNOpt")


def loss_fn(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(m(x), y)


def train(m: torch.nn.Module, opt: torch.optim.Optimizer, batches: list[Any], name: str,
          sched: Any = None) -> torch.Tensor:
    """Plain loop (zero_grad, backward, step; the loss passed where needed; then the LR
    scheduler's step, if given); the flat params."""
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(m, x, y)
        loss.backward()
        if name in NEEDS_LOSS:
            opt.step(loss=loss)
        else:
            opt.step()
        if sched is not None:
            sched.step()
    return flat(m)


def flat(m: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in m.parameters()])
