r"""A new optimizer dynamics from existing ops, in one file: SGHMC with a gradient-noise estimate.

Stochastic-gradient HMC (Chen, Fox & Guestrin, ICML 2014, eq. 5) is Langevin dynamics whose
injected noise is reduced by an estimate B̂ of the noise the minibatch gradient already brings:

.. math:: d\theta = M^{-1}p\,dt,\quad dp = -\nabla\tilde L\,dt - \gamma p\,dt
          + \sqrt{2(\gamma - \hat B)\tau}\,M^{1/2}dW .

It needs no new op: its O letter is the exact Ornstein–Uhlenbeck op with friction γ and the
injected variance scaled by (1 − B̂/γ), i.e. ``OU`` with c = e^{−γt},
d = √((1 − c²) τ (1 − B̂/γ)).

| symbol | code |
|---|---|
| h | ``lr`` |
| γ | ``gamma`` (≥ 0, schedulable) |
| B̂ | ``grad_noise`` (0 ≤ B̂ ≤ γ; 0 gives plain Langevin) |
| τ | ``temperature`` (≥ 0, schedulable) |
| M | ``mass`` |

What it takes (the recipe of CONTRIBUTING.md, "add a system from existing ops"): this file (a
system that lowers its letters to existing ops, and its :class:`OptimizerDynamics`
declaration with one ``register_dynamics`` line) and, to ship it inside dynopt, one import line
in ``dynopt/optim/__init__.py``. ``Partitioned`` groups then take ``dynamics="sghmc"`` with
``grad_noise`` checked against that group only; the thin class below is optional.

    python examples/sghmc_dynamics.py
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dynopt import systems
from dynopt._validation import check_nonnegative
from dynopt.optim.dynamics import LR, MASS, Hyper, OptimizerDynamics, Value, register_dynamics
from dynopt.optim.partitioned import Partitioned
from dynopt.program import Op
from dynopt.systems import subflows


class SGHMCSystem(systems.Langevin):
    """Langevin whose O letter subtracts the gradient-noise estimate B̂ from the injected noise."""

    letters = {"A": "drift", "B": "kick",
               "O": "Ornstein–Uhlenbeck with injected variance × (1 − B̂/γ)"}

    def __init__(self, potential: Any, *, gamma: float, grad_noise: float, temperature: float,
                 mass: Any = 1.0) -> None:
        super().__init__(potential, gamma=gamma, temperature=temperature, mass=mass)
        self.grad_noise = check_nonnegative("grad_noise", grad_noise)
        if self.grad_noise > self.gamma:
            raise ValueError(f"grad_noise must be <= gamma (the injected variance "
                             f"2(gamma - grad_noise)tau is negative otherwise), got "
                             f"grad_noise={grad_noise!r}, gamma={gamma!r}")

    def _lower(self, letter: str, t: float) -> Op:
        if letter != "O":
            return super()._lower(letter, t)
        scale = 1.0 - self.grad_noise / self.gamma if self.gamma > 0 else 1.0
        return subflows.ornstein_uhlenbeck(t, self.gamma, self.temperature * scale)


def _system(group: Mapping[str, Any], value: Value) -> SGHMCSystem:
    return SGHMCSystem(None, gamma=value("gamma"), grad_noise=value("grad_noise"),
                       temperature=value("temperature"), mass=value("mass"))


SGHMC_DYNAMICS = register_dynamics(OptimizerDynamics(
    name="sghmc",
    hypers={"lr": LR, "temperature": Hyper(1e-4, check_nonnegative, schedulable=True),
            "mass": MASS, "gamma": Hyper(0.1, check_nonnegative, schedulable=True),
            "grad_noise": Hyper(0.0, check_nonnegative)},
    system=_system, scheme="BAOAB"))


class SGHMC(Partitioned):
    """``Partitioned`` restricted to ``dynamics="sghmc"`` (keywords: the hypers above)."""

    only_dynamics = "sghmc"

    def __init__(self, params: Any, lr: float = 0.1, **kwargs: Any) -> None:
        super().__init__(params, lr, dynamics="sghmc", **kwargs)


if __name__ == "__main__":
    torch.manual_seed(0)
    x, y = torch.randn(256, 4), torch.randn(256, 1)
    model = torch.nn.Linear(4, 1)
    opt = SGHMC(model.parameters(), lr=0.05, gamma=1.0, grad_noise=0.2, temperature=1e-4, seed=0)
    for _ in range(200):
        idx = torch.randint(0, 256, (32,))
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    print(f"minibatch loss after 200 SGHMC steps: {loss.item():.4f}")
