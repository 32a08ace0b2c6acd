"""``dynopt reproduce surfing`` pieces (issue 12): the trained path of the random ReLU network
is a real training run from the synthetic path's θ_a; every method runs with both inner
optimizers; "GD on final" is surf on the final snapshot alone."""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call

from dynopt.reproductions import surfing as rs
from dynopt.surfing import surf

DIMS = (2, 8, 16)


def test_trained_path_starts_at_the_random_network_and_lowers_the_training_loss():
    student, snaps = rs.trained_path(0, 5, DIMS, steps=200)
    assert len(snaps) == 5
    theta_a = rs.expansive_path(0, 2, DIMS)[0]
    for (k, v), p in zip(snaps[0].items(), theta_a.parameters(), strict=True):
        assert torch.equal(v, p.detach()), k
    teacher = rs.expansive_path(0, 2, DIMS)[1]
    z = torch.randn(500, DIMS[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        losses = [float(((functional_call(student, sd, (z,)) - teacher(z)) ** 2).sum(1).mean())
                  for sd in snaps]
    assert losses[-1] < 0.5 * losses[0]       # a training run, not an interpolation
    assert not torch.equal(snaps[1][next(iter(snaps[1]))], snaps[0][next(iter(snaps[0]))])


def test_evaluate_runs_every_method_with_both_inner_optimizers():
    snaps = rs.expansive_path(1, 3, DIMS)
    x_true = torch.randn(4, DIMS[0], dtype=torch.float64,
                         generator=torch.Generator().manual_seed(2))
    res = rs.evaluate(snaps, None, x_true, None, 4, 0)
    for inner in rs.INNERS:
        for m in (f"surfing ({inner})", f"surfing, ½ on final ({inner})", f"{inner} on final",
                  f"{rs.RESTARTS} restarts ({inner})"):
            assert res[m]["residual"].shape == (4,)
    # "GD on final" is surf on the final snapshot alone with the whole budget, from x_0
    g = torch.Generator().manual_seed(1000)
    x0 = torch.randn(4, DIMS[0], generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = snaps[-1](x_true)
    x = surf([snaps[-1]], y, x0=x0, steps_per_snapshot=12, lr=rs.LR).x
    with torch.no_grad():
        resid = ((snaps[-1](x) - y).norm(dim=1) / y.norm(dim=1)).numpy()
    assert np.array_equal(resid, res["GD on final"]["residual"])


def test_surf_evaluates_snapshots_in_eval_mode_and_restores_their_mode():
    """Snapshots recorded while training were surfed in train mode: dropout made two seeded
    runs differ (batch norm crashed on one code)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(16, 5)).double()
    net.train()
    y = net.eval()(torch.randn(3, 2, dtype=torch.float64)).detach()
    net.train()
    runs = [surf([net], y, steps_per_snapshot=50, lr=0.05, seed=0).x for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert net.training and net[2].training  # the caller's mode is restored
