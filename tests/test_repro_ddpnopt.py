"""``dynopt reproduce ddpnopt`` pieces (issue 12): the paired-difference statistics, the
table, the momentum base's equivalence with torch, and the SGD-VGR regularizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dynopt.reproductions import ddpnopt as rd
from dynopt.training import fit


def test_paired_difference_se_is_sample_sd_over_sqrt_n_and_skips_diverged_pairs():
    base = [0.90, 0.80, 0.85, float("nan"), 0.70]
    ddp = [0.95, 0.81, 0.80, 0.99, 0.90]
    m, se, n = rd.paired(base, ddp)
    d = np.array([0.05, 0.01, -0.05, 0.20])
    assert n == 4
    assert m == pytest.approx(d.mean(), abs=1e-15)
    assert se == pytest.approx(d.std(ddof=1) / math.sqrt(4), abs=1e-15)
    assert math.isnan(rd.paired([float("nan")], [0.5])[0])


def _fake(acc_b, acc_d, loss_b, loss_d):
    return {"dataset": "digits", "base_name": "sgd", "lr": 1.0,
            "base": [{"acc": a, "train_loss": lo} for a, lo in zip(acc_b, loss_b, strict=True)],
            "ddpnopt": [{"acc": a, "train_loss": lo} for a, lo in
                        zip(acc_d, loss_d, strict=True)]}


def test_paired_rows_report_epoch_1_2_and_last_with_their_standard_errors():
    acc_b = [[0.5, 0.6, 0.9], [0.4, 0.7, 0.9], [0.6, 0.8, 0.9]]
    acc_d = [[0.7, 0.7, 0.9], [0.5, 0.8, 0.8], [0.8, 0.9, 1.0]]
    loss_b = [[1.0, 0.5, 0.1]] * 3
    loss_d = [[0.8, 0.5, 0.1], [0.9, 0.4, 0.2], [0.7, 0.3, 0.1]]
    row = rd.paired_rows([_fake(acc_b, acc_d, loss_b, loss_d)], 3)[0]
    header = rd.paired_header(3)
    assert len(row) == len(header)
    d1 = np.array([0.2, 0.1, 0.2]) * 100
    assert row[header.index("Δacc ep 1 (pts)")] == \
        f"{d1.mean():+.1f} ± {d1.std(ddof=1) / math.sqrt(3):.1f}"
    dl = np.array([-0.2, -0.1, -0.3])
    assert row[header.index("Δloss ep 1")] == \
        f"{dl.mean():+.3f} ± {dl.std(ddof=1) / math.sqrt(3):.3f}"
    assert row[header.index("win/tie/loss ep 3")] == "1/1/1"
    assert row[-1] == 0


def test_momentum_base_run_equals_torch_sgd_momentum():
    """run_one with base "sgdm" and the feedback off is torch's SGD(momentum=0.9): the same
    per-epoch test accuracy and training loss."""
    res = rd.run_one("wine", "sgdm", 0.05, 0, 2, False)
    split = rd.load("wine", 0)
    model = rd.network(split, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=False)
    losses = []
    hist = fit(model, opt, split, epochs=2, batch_size=8, seed=0, eval_every=1,
               callback=lambda e, h: losses.append(float(nn.functional.cross_entropy(
                   model(split.x_train).detach(), split.y_train))))
    assert res["acc"] == hist.test_accuracy
    assert res["train_loss"] == pytest.approx(losses, rel=1e-6)


def _chain(scale: float) -> nn.Sequential:
    torch.manual_seed(0)
    q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0]
    net = nn.Sequential(nn.Linear(4, 6), nn.Identity(), nn.Linear(6, 6), nn.Identity(),
                        nn.Linear(6, 6), nn.Identity(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        net[2].weight.copy_(scale * q)
        net[4].weight.copy_(scale * q.T)
    return net


@pytest.mark.parametrize(("scale", "omega"), [(1.0, 0.0), (2.0, 2.0), (0.5, 0.5)])
def test_vgr_penalty_is_zero_for_norm_preserving_layers(scale, omega):
    """Ω = Σ_t E(‖J_tᵀv‖/‖v‖ − 1)²: orthogonal hidden layers give 0; scaled by c, each of the
    two hidden-to-hidden Jacobians contributes (c − 1)²."""
    net = _chain(scale)
    x = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss, om = rd.vgr_penalty(net, x, lambda out: (out ** 2).sum(1).mean())
    assert float(om.detach()) == pytest.approx(omega, abs=1e-12)
    assert float(loss.detach()) == pytest.approx(float((net(x) ** 2).sum(1).mean().detach()),
                                                 abs=1e-12)
    om.backward()     # the regularizer is differentiable in the weights
    assert net[2].weight.grad is not None


def test_lowest_after_first_sees_a_transient_collapse_and_counts_divergence_as_zero():
    runs = [{"acc": [0.1, 0.9, 0.95]}, {"acc": [0.2, 0.6, 0.96]}]
    assert rd.lowest_after_first(runs) == 0.6          # epoch 1 (0.1) is not counted
    assert rd.lowest_after_first([*runs, {"acc": [0.5, float("nan"), float("nan")]}]) == 0.0
