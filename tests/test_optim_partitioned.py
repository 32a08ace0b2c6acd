"""Partitioned dynamics: presets (AdLaLa, LOL) lower to the authors' steps, thermostat scopes,
live diagnostics and the CSV hook, the registry."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from dynopt.optim import LOL, REGISTRY, AdaptiveLangevin, AdLaLa, Langevin, NoseHoover, make
from dynopt.optim.hooks import CSVLogger
from dynopt.program import OpCode


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1),
                               torch.nn.Sigmoid())


def test_adlala_lowers_to_the_authors_steps():
    """Group 0: A½ C½ D½ E D½ C½ A½ after B_h (B½ on the first step); the others: B A½ O A½,
    with the constants of the paper's spiral run (h = 0.25, γ = 0.1, τ = 1e-4, σ_A = 0.01)."""
    m = _net()
    opt = AdLaLa([{"params": m[0].parameters()}, {"params": m[2].parameters()}])
    adl, lang = (opt._spec(g) for g in opt.param_groups)
    assert [op.letter for op in adl.steady] == list("BACDEDCA")
    assert [op.letter for op in adl.first] == list("BACDEDCA")
    assert adl.first[0].f == (0.125,) and adl.steady[0].f == (0.25,)
    d = adl.steady[3]
    assert d.code == OpCode.ADD_NOISE and d.f[0] == pytest.approx(0.01 * math.sqrt(0.125))
    e = adl.steady[4]
    assert e.code == OpCode.THERMOSTAT and e.f == pytest.approx((0.25 * 0.05, 1e-4, 0.0))
    assert [op.letter for op in lang.steady] == list("BAOA")
    c = math.exp(-0.1 * 0.25)
    assert lang.steady[2].f == pytest.approx((c, math.sqrt((1 - c * c) * 1e-4)))


def test_lol_overdamped_block_is_lm_with_step_h_squared_over_two():
    """LOL's second block: θ ← θ − (h²/2)∇L + (h/2)√τ₂ (R_prev + R) (LM with dt = h²/2)."""
    m = _net()
    h, tau2 = 0.25, 1e-4
    opt = LOL([{"params": m[0].parameters()},
               {"params": m[2].parameters(), "temperature": tau2}], lr=h)
    lang, od = (opt._spec(g) for g in opt.param_groups)
    assert [op.letter for op in lang.steady] == list("BAOA")
    assert [op.code for op in od.steady] == [OpCode.GRAD_STEP, OpCode.LM_NOISE]
    assert od.steady[0].f[0] == pytest.approx(h * h / 2)
    assert od.steady[1].f[0] == pytest.approx(h / 2 * math.sqrt(tau2))


def test_group_scope_is_one_thermostat_over_all_elements():
    """scope='group' on tensors (a, b) is AdL on their concatenation (N = total elements; the
    single and foreach paths draw one flat noise buffer in tensor order, so even the noise is the
    same): equal to rounding."""
    torch.manual_seed(0)
    a0, b0 = torch.randn(7, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    a, b = a0.clone(), b0.clone()
    ab = torch.cat([a0, b0.flatten()])
    kw = dict(lr=0.1, temperature=0.2, sigma_a=0.3, eps=0.5, seed=9, foreach=True)
    o1 = AdaptiveLangevin([a, b], scope="group", **kw)
    o2 = AdaptiveLangevin([ab], **kw)
    for _ in range(50):
        a.grad, b.grad, ab.grad = a**3, b**3, ab**3
        o1.step()
        o2.step()
    assert torch.allclose(torch.cat([a, b.flatten()]), ab, rtol=0, atol=1e-12)
    xi_group = o1.global_state["extras"]["group0"]
    assert torch.allclose(xi_group, o2.state[ab]["extras"], rtol=0, atol=1e-12)
    assert "extras" not in o1.state[a]
    # model scope across two groups = group scope over both
    a, b = a0.clone(), b0.clone()
    c, d = a0.clone(), b0.clone()
    o3 = AdaptiveLangevin([{"params": [a]}, {"params": [b]}], scope="model", **kw)
    o4 = AdaptiveLangevin([c, d], scope="group", **kw)
    for _ in range(20):
        a.grad, b.grad, c.grad, d.grad = a**3, b**3, c**3, d**3
        o3.step()
        o4.step()
    assert torch.allclose(a, c, rtol=0, atol=1e-12) and torch.allclose(b, d, rtol=0, atol=1e-12)
    bad = AdaptiveLangevin([{"params": [a]}, {"params": [b], "eps": 1.0}], scope="model", **kw)
    a.grad, b.grad = a.clone(), b.clone()
    with pytest.raises(ValueError, match=r"scope='model'.*identical"):
        bad.step()


def test_kinetic_temperature_diagnostic_is_exact_for_baoab():
    """The stored momentum is BAOAB's post-O momentum, whose ⟨p²⟩ = τ exactly on a quadratic
    (langevin-thermostats.md §5.2): the time average of diagnostics()'s kinetic temperature
    equals τ within 4 SE (batch means). diagnostics() returns device tensors (no host sync)."""
    tau, h = 0.4, 0.3
    omega = torch.linspace(0.5, 2.0, 20, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(100, 20, generator=g, dtype=torch.float64) * (math.sqrt(tau) / omega)
    opt = Langevin([theta], lr=h, gamma=1.0, temperature=tau, seed=1)
    series = []
    for _ in range(1200):
        theta.grad = omega**2 * theta
        opt.step()
        diag = opt.diagnostics()[0]
        series.append(diag["kinetic_temperature"])
    assert isinstance(series[0], torch.Tensor) and diag["xi"] is None
    t = torch.stack(series[200:]).numpy()
    batches = t.reshape(20, -1).mean(1)
    se = batches.std(ddof=1) / math.sqrt(20)
    assert abs(batches.mean() - tau) < 4 * se, (batches.mean(), se)
    # SE against 2·10⁶ independent p² draws (Var p²/τ = 2τ), 2× the measured factor 2.25
    assert se < 4.5 * math.sqrt(2 * tau**2 / (100 * 20 * 1000)), se


def test_csv_logger_writes_the_diagnostics(tmp_path):
    m = _net()
    opt = AdLaLa([{"params": m[0].parameters()}, {"params": m[2].parameters()}], seed=0)
    log = CSVLogger(tmp_path / "sub" / "log.csv", every=2, tensorboard_dir=tmp_path / "tb")
    opt.register_step_post_hook(log)
    x, y = torch.randn(10, 2), torch.rand(10, 1).round()
    expected = []
    for _ in range(4):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy(m(x), y).backward()
        opt.step()
        expected.append(opt.diagnostics(host=True))
    log.close()
    rows = list(csv.DictReader((tmp_path / "sub" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 2, 4, 4]
    assert [r["dynamics"] for r in rows[:2]] == ["adaptive-langevin", "langevin"]
    for r, d in zip(rows[2:], expected[3], strict=True):
        assert float(r["kinetic_temperature"]) == pytest.approx(d["kinetic_temperature"])
    assert float(rows[2]["xi"]) == pytest.approx(expected[3][0]["xi"])
    assert rows[3]["xi"] == ""  # the Langevin group has no thermostat
    xi = torch.stack([opt.state[p]["extras"][0] for p in m[0].parameters()]).mean()
    assert expected[3][0]["xi"] == pytest.approx(float(xi))


@pytest.mark.parametrize("name", ["langevin", "overdamped-langevin", "sgld", "adaptive-langevin",
                                  "nose-hoover", "adlala", "lol"])
def test_registry_builds_from_a_module(name):
    m = _net()
    opt = make(name, m, seed=0)
    assert name in REGISTRY and opt.seed == 0
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in m.parameters())
    if name in ("adlala", "lol"):
        assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
        assert opt.param_groups[0]["params"][0] is m[0].weight


def test_train_command_runs_an_optimizer(tmp_path):
    """``dynopt train --optimizer adlala`` trains the spiral MLP (test loss drops)."""
    import argparse
    import json

    from dynopt.cli import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--optimizer", "adlala", "--epochs", "20", "--out", str(tmp_path)])
    assert train.run(args) == 0
    hist = json.loads((tmp_path / "train" / "adlala-spirals.json").read_text())
    assert hist["epoch"][-1] == 20
    assert hist["test_loss"][-1] < hist["test_loss"][0]
    assert np.isfinite(hist["test_loss"]).all()


@pytest.mark.parametrize("path", [{"foreach": False}, {"foreach": True}, {"fused": True}])
@pytest.mark.parametrize("make", [
    lambda ps, **kw: NoseHoover(ps, lr=0.05, temperature=1e-3, **kw),
    lambda ps, **kw: NoseHoover(ps, lr=0.05, temperature=1e-3, chain_length=3, **kw),
    lambda ps, **kw: AdaptiveLangevin(ps, lr=0.05, temperature=1e-3, **kw),
    lambda ps, **kw: Langevin(ps, lr=0.05, temperature=1e-3, **kw),
], ids=["nose-hoover", "nhc", "adaptive-langevin", "langevin"])
@pytest.mark.parametrize("empty_alone", [False, True])
def test_empty_parameters_are_left_out_of_the_step(make, path, empty_alone):
    """A zero-element parameter (nn.Linear(8, 0), an empty adapter) has no degrees of freedom.
    Its own thermostat divided by N = 0 (NaN, then DivergenceError at step 2) and a fused bucket
    of empty tensors failed with a raw dtype error. Now it is left out: the other parameters
    follow the run without it bit for bit, and it gets no state."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float32))
    w_ref = torch.nn.Parameter(w.detach().clone())
    empty = torch.nn.Parameter(torch.empty(0, 2, dtype=torch.float64))
    groups = ([{"params": [w]}, {"params": [empty]}] if empty_alone else [w, empty])
    opt = make(groups, seed=4, **path)
    ref = make([{"params": [w_ref]}, {"params": []}] if empty_alone else [w_ref], seed=4,
               **path)
    for _ in range(4):
        w.grad, w_ref.grad = w.detach().clone(), w_ref.detach().clone()
        empty.grad = torch.zeros_like(empty)
        opt.step()
        ref.step()
    assert torch.equal(w, w_ref)
    assert empty not in opt.state and empty.shape == (0, 2)
