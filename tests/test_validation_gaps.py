"""Refusals that a line-coverage run found no test reaching: each row is a bad input, the error
type, and the text the message must carry (the parameter's name and, where it has one, its
value). The one-line bug each row catches is its check going missing: the bad input then fails
later with an unrelated message (a shape error inside a kernel, a NaN in the result) or is
silently accepted."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import dynopt
from dynopt import potentials as P
from dynopt import stepping, systems
from dynopt.diagnostics.curvature import model_top_eigenvalue
from dynopt.events import Plateau, RelativeReduction, StateCondition, Threshold
from dynopt.integrators import resolve
from dynopt.optim import DDPNOpt
from dynopt.surfing import surf


def _langevin() -> Any:
    return systems.Langevin(P.DoubleWell(), gamma=1.0, temperature=0.25)


def _state() -> Any:
    return stepping.init(_langevin(), resolve("BAOAB"), [0.5], n_chains=2, seed=0,
                         backend="torch")


def _generator() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()


def _surf(**kw: Any) -> Any:
    args: dict[str, Any] = {"x0": torch.zeros(3, dtype=torch.float64), "steps_per_snapshot": 1,
                            "lr": 0.1}
    args.update(kw)
    y = args.pop("y", torch.zeros(4, dtype=torch.float64))
    snaps = args.pop("snaps", [_generator()])
    return surf(snaps, y, **args)


CASES: dict[str, tuple[Callable[[], Any], type, str]] = {
    # --- integrate / step ---------------------------------------------------------------
    "p0 for a first-order system": (
        lambda: dynopt.integrate(systems.OverdampedLangevin(P.DoubleWell(), temperature=0.25),
                                 None, [0.5], p0=[0.1], h=0.01, n_steps=2, seed=0),
        ValueError, "p0 given but OverdampedLangevin has no momenta"),
    "chain_ids with state=": (
        lambda: dynopt.integrate(_langevin(), "BAOAB", None, state=_state(), h=0.01, n_steps=2,
                                 chain_ids=[0, 1]),
        ValueError, "chain_ids cannot be combined with state="),
    "events with chain_ids": (
        lambda: dynopt.integrate(_langevin(), "BAOAB", [0.5], h=0.01, n_steps=2, n_chains=2,
                                 seed=0, backend="torch", chain_ids=[4, 7],
                                 events=[dynopt.events.AtStep(1, then=dynopt.events.Stop())]),
        ValueError, "events= cannot be combined with chain_ids="),
    "run without h on a fresh state": (
        lambda: stepping.run(_langevin(), resolve("BAOAB"), _state(), n_steps=2),
        ValueError, r"h must be given \(the state has no previous step size\)"),
    "a system without potential has no dim": (
        lambda: systems.Langevin(None, gamma=1.0, temperature=0.25).dim,
        ValueError, "Langevin has no potential, so no dimension"),
    "nbeta without a potential": (
        lambda: systems.Langevin(None, gamma=1.0, temperature=0.25, nbeta=2.0),
        ValueError, "nbeta/localization/center need a potential"),
    # --- surfing ------------------------------------------------------------------------
    "snapshots of mixed kinds": (
        lambda: _surf(snaps=[_generator(), _generator().state_dict()]),
        TypeError, "snapshots must all be nn.Modules or all be state dicts"),
    "y of three dimensions": (
        lambda: _surf(y=torch.zeros(1, 1, 4, dtype=torch.float64)),
        ValueError, r"y must have shape \(m,\) or \(n, m\), got \(1, 1, 4\)"),
    "A with a NaN": (
        lambda: _surf(A=torch.tensor([[math.nan, 0.0, 0.0, 0.0]], dtype=torch.float64),
                      y=torch.zeros(1, dtype=torch.float64)),
        ValueError, "A must be finite"),
    "x0 of three dimensions": (
        lambda: _surf(x0=torch.zeros(1, 1, 3, dtype=torch.float64)),
        ValueError, r"x0 must have shape \(d,\) or \(n, d\), got \(1, 1, 3\)"),
    "x0 against latent_dim": (
        lambda: _surf(latent_dim=2),
        ValueError, "x0 has 3 latent coordinates but latent_dim=2"),
    "x0 with an inf": (
        lambda: _surf(x0=torch.tensor([0.0, math.inf, 0.0], dtype=torch.float64)),
        ValueError, "x0 must be finite"),
    "no x0 and no Linear to read d from": (
        lambda: _surf(x0=None, snaps=[nn.Sequential(nn.Tanh()).double()]),
        ValueError, "give x0 or latent_dim"),
    # --- DDPNOpt ---------------------------------------------------------------------------
    "DDPNOpt feedback not a bool": (
        lambda: DDPNOpt(_generator(), lr=0.1, feedback=1),
        TypeError, r"feedback must be a bool, got 1 \(param group 0\)"),
    "DDPNOpt betas of three": (
        lambda: DDPNOpt(_generator(), lr=0.1, base="adam", betas=(0.9, 0.99, 0.5)),
        ValueError, r"betas must be a pair \(beta1, beta2\), got \(0.9, 0.99, 0.5\)"),
    "DDPNOpt beta2 = 1": (
        lambda: DDPNOpt(_generator(), lr=0.1, base="adam", betas=(0.9, 1.0)),
        ValueError, r"betas\[1\]"),
    "DDPNOpt maximize": (
        lambda: (lambda m: DDPNOpt(m, lr=0.1, params=[
            {"params": list(m.parameters()), "maximize": True}]))(_generator()),
        ValueError, "DDPNOpt does not support maximize=True"),
    # --- events ---------------------------------------------------------------------------
    "RelativeReduction(0)": (lambda: RelativeReduction(0.0), ValueError,
                             "fraction must be > 0, got 0.0"),
    "Plateau on the gradient": (lambda: Plateau(3, observable="grad"), ValueError,
                                "observable must be 'loss' or 'energy', got 'grad'"),
    "Threshold on the gradient": (lambda: Threshold(1.0, observable="grad"), ValueError,
                                  "observable must be 'loss' or 'energy', got 'grad'"),
    "StateCondition of a number": (lambda: StateCondition(3.0), TypeError,
                                   "fn must be callable, got 3.0"),
    # --- curvature ------------------------------------------------------------------------
    "model_top_eigenvalue of a function": (
        lambda: model_top_eigenvalue(lambda x: x, torch.nn.functional.mse_loss,
                                     (torch.zeros(2, 3), torch.zeros(2, 4))),
        TypeError, "model must be a torch.nn.Module, got function"),
    "model_top_eigenvalue of a frozen model": (
        lambda: model_top_eigenvalue(_generator().requires_grad_(False),
                                     torch.nn.functional.mse_loss,
                                     (torch.zeros(2, 3, dtype=torch.float64),
                                      torch.zeros(2, 4, dtype=torch.float64))),
        ValueError, "the model has no parameters that require gradients"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_by_name(case):
    fn, error, message = CASES[case]
    with pytest.raises(error, match=message):
        fn()


def test_a_first_order_system_still_integrates_without_p0():
    """The control of the p0 row: the same call without p0 runs (the row's error is p0's)."""
    traj = dynopt.integrate(systems.OverdampedLangevin(P.DoubleWell(), temperature=0.25), None,
                            [0.5], h=0.01, n_steps=2, seed=0)
    assert traj.q.shape == (1, 3, 1) and np.isfinite(traj.q).all()


def test_integer_parameters_take_one_element_integer_arrays_as_real_ones_do():
    # check_real accepted 1-element tensors and arrays, check_int refused them: integrate(
    # n_steps=torch.tensor(100)) and seed=np.array(3) failed while h=torch.tensor(0.1) worked
    system = systems.Langevin(P.Harmonic(1.0, dim=1), gamma=1.0, temperature=0.5)
    ref = dynopt.integrate(system, "BAOAB", [0.5], h=0.1, n_steps=7, seed=3)
    for n, seed in ((torch.tensor(7), np.array(3)), (np.array([7]), torch.tensor([3]))):
        got = dynopt.integrate(system, "BAOAB", [0.5], h=0.1, n_steps=n, seed=seed)
        np.testing.assert_array_equal(got.q, ref.q)
    for bad in (torch.tensor(7.0), np.array(7.0), torch.tensor(True), np.array([7, 8])):
        with pytest.raises(TypeError, match="n_steps must be an integer"):
            dynopt.integrate(system, "BAOAB", [0.5], h=0.1, n_steps=bad, seed=3)
