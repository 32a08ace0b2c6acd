"""Tests written to kill surviving mutants of dynopt/optim (mutation testing, session 12).

Each test states the property it checks and the one-line bug it catches."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynopt.optim import LOL, AdLaLa, DDPNOpt


@pytest.mark.parametrize("cls", [AdLaLa, LOL])
def test_presets_refuse_a_single_param_group(cls):
    """AdLaLa and LOL partition the network: one param group has no "rest" to run the second
    dynamics, so it is refused with a ValueError that says how many groups were given (not
    silently run as a one-dynamics optimizer). Catches the "at least two groups" check
    weakened to "at least one"."""
    a = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"at least two param groups .*got 1"):
        cls([{"params": [a]}])


def test_lol_group_added_later_is_overdamped_lm_with_step_h_squared_over_two():
    """A group added to LOL after construction runs, like the constructor's groups 1..n, the
    overdamped LM scheme with dt = h²/2 (the class's documented second block): at zero gradient
    its increments are Δθₖ = (h/2)√τ (Rₖ₋₁ + Rₖ), so Var Δθ = τ h²/2 and the lag-1 correlation
    of successive increments is ½ (Euler–Maruyama would give 2·τ h²/2 and 0). Measured over
    4000 elements: standard error of the correlation 1/√4000 ≈ 0.016, of the variance ratio
    √(2/4000) ≈ 0.022. Catches add_param_group defaulting the group to another scheme."""
    n, h, tau = 4000, 0.5, 1.0
    a = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    c = nn.Parameter(torch.zeros(n, dtype=torch.float64))
    opt = LOL([{"params": [a]}, {"params": [b]}], lr=h, temperature=tau, seed=3, foreach=True)
    opt.add_param_group({"params": [c]})
    assert opt.param_groups[2]["dynamics"] == "overdamped"
    steps = []
    for _ in range(3):
        for p in (a, b, c):
            p.grad = torch.zeros_like(p)
        before = c.detach().clone()
        opt.step()
        steps.append(c.detach() - before)
    se_corr, se_var = 1.0 / math.sqrt(n), math.sqrt(2.0 / n)
    assert abs(float(torch.corrcoef(torch.stack(steps[1:]))[0, 1]) - 0.5) < 5 * se_corr
    var_ratio = float(steps[2].var()) / (tau * h * h / 2)
    assert abs(var_ratio - 1.0) < 5 * se_var


def test_ekfac_eigenbasis_is_recomputed_every_update_freq_steps():
    """EKFAC recomputes its eigenbases U_A, U_G on the first step and then every
    ``update_freq`` steps (steps 1, 1+f, 1+2f, ...), keeping them bit for bit in between
    (only the running factors A, G and the scaling S move). With f = 3 over 7 steps the basis
    changes exactly at steps 1, 4 and 7. Catches the refresh schedule shifted by one step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    opt = DDPNOpt(model, lr=1e-2, base="ekfac", feedback=False, update_freq=3)
    w = model[0].weight
    changed, last = [], None
    g = torch.Generator().manual_seed(1)
    for k in range(1, 8):
        x = torch.randn(16, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        ua = opt.state[w]["ekfac_UA"].clone()
        if last is None or not torch.equal(ua, last):
            changed.append(k)
        last = ua
    assert changed == [1, 4, 7]


def _ekfac_pair_after(steps, scale_s):
    """An EKFAC DDPNOpt (update_freq=3) after ``steps`` steps, and a copy loaded from its
    checkpoint with every scaling S multiplied by ``scale_s``; both then take one more step on
    the same batch. Returns the two models' parameters after it."""
    def data(k):
        g = torch.Generator().manual_seed(10 + k)
        return (torch.randn(16, 4, generator=g, dtype=torch.float64),
                torch.randint(0, 3, (16,), generator=g))

    def one_step(model, opt, k):
        x, y = data(k)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    kw = dict(lr=1e-2, base="ekfac", feedback=False, update_freq=3, ekfac_decay=0.5)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    opt = DDPNOpt(model, **kw)
    for k in range(steps):
        one_step(model, opt, k)
    twin = copy.deepcopy(model)
    opt2 = DDPNOpt(twin, **kw)
    sd = copy.deepcopy(opt.state_dict())  # (its per-tensor dicts are the live state)
    for st in sd["state"].values():
        if "ekfac_S" in st:
            st["ekfac_S"] = st["ekfac_S"] * scale_s
    opt2.load_state_dict(sd)
    one_step(model, opt, steps)
    one_step(twin, opt2, steps)
    return ([p.detach().clone() for p in model.parameters()],
            [p.detach().clone() for p in twin.parameters()])


def test_ekfac_scaling_is_reset_when_the_eigenbasis_is_recomputed():
    """EKFAC's second moment S lives in the eigenbasis: when the basis is recomputed (step 4
    with update_freq = 3) S restarts from this batch's moment, so the step does not depend on
    the old S at all (a copy whose S was doubled takes the bit-identical step), while between
    refreshes (step 3) S is a running average and the doubled S changes the step. Catches S
    carried over across a basis change."""
    a, b = _ekfac_pair_after(3, 2.0)     # the 4th step refreshes the basis
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    a, b = _ekfac_pair_after(2, 2.0)     # the 3rd step does not
    assert not all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["BBI", "ECDSep"])
def test_zero_grad_drops_the_loss_observed_with_the_gradients_it_clears(name):
    """``zero_grad`` clears the observed loss together with the gradients it belongs to (a
    step a GradScaler skipped leaves both behind; the next accumulation window starts with
    zero_grad): after observe_loss(stale), zero_grad(), backward and observe_loss(L), the step
    reads L alone, i.e. returns L and moves θ bit for bit as step(loss=L) does. Catches a
    zero_grad that keeps the stale loss (it was added to the next step's)."""
    from dynopt.optim import BBI, ECDSep

    cls = {"BBI": BBI, "ECDSep": ECDSep}[name]
    x = torch.tensor([[1.0, -2.0], [3.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(nn.Linear(2, 1).double())
    ref, obs = (cls(m.parameters(), lr=0.05, seed=2) for m in models)
    loss = F.mse_loss(models[0](x), y)
    loss.backward()
    ref.step(loss=loss)
    obs.observe_loss(torch.tensor(5.0, dtype=torch.float64))  # left behind by a skipped step
    obs.zero_grad()
    loss2 = F.mse_loss(models[1](x), y)
    loss2.backward()
    obs.observe_loss(loss2)
    assert torch.equal(obs.step(), loss2)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("c", [0.0, -0.5, 1.5])
def test_langevin_momentum_outside_zero_one_is_refused_naming_it(c):
    """``momentum`` is the friction factor c = e^{−γh} ∈ (0, 1]: c = 0 would be γ = ∞ (it is
    not SGD's "no momentum"), so it is refused at construction like any value outside the
    interval, with a ValueError naming momentum and the interval (not a bare "math domain
    error" from log 0). Catches the lower bound of the check made inclusive."""
    from dynopt.optim import Langevin

    p = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\]"):
        Langevin([p], lr=0.1, momentum=c)


def test_bbi_checkpoint_with_a_negative_momentum_norm_is_refused():
    """BBI keeps |Π|² (``dynopt['global']['ps2']``, a sum of squares) across steps; a
    checkpoint where it is negative cannot come from a run (the energy's square root would be
    NaN at the next step), so load_state_dict refuses it with a ValueError naming the entry,
    and leaves the optimizer exactly as it was. Catches the non-negativity check dropped."""
    from dynopt.optim import BBI

    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    opt = BBI(model.parameters(), lr=0.05, seed=1)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step(loss=loss)
    sd = copy.deepcopy(opt.state_dict())
    ps2 = sd["dynopt"]["global"]["ps2"]
    assert float(ps2) >= 0
    sd["dynopt"]["global"]["ps2"] = (torch.full_like(ps2, -1.0) if isinstance(ps2, torch.Tensor)
                                     else -1.0)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"\['ps2'\] must be non-negative"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert float(after["dynopt"]["global"]["ps2"]) == float(before["dynopt"]["global"]["ps2"])
    assert all(torch.equal(after["state"][k]["momentum"], before["state"][k]["momentum"])
               for k in before["state"])


@pytest.mark.parametrize("name", ["BBI", "ECDSep", "HeavyBall"])
@pytest.mark.parametrize(("bad", "exc", "match"), [
    (lambda: torch.ones(2, dtype=torch.float64), ValueError,
     r"loss must be a scalar, got a tensor of shape \(2,\)"),
    (lambda: True, TypeError, r"loss must be a real number or a 1-element tensor, got True"),
], ids=["vector", "bool"])
def test_a_loss_that_is_not_one_real_number_is_refused_before_anything_moves(name, bad, exc,
                                                                            match):
    """The loss an energy optimizer reads must be one real number: a per-sample loss vector
    (reduction="none") and a bool are refused with an error naming what was given, and the
    parameters and state are unchanged. Catches the 1-element check weakened to "non-empty",
    or bools read as 0/1."""
    from dynopt.optim import BBI, ECDSep, HeavyBall

    cls = {"BBI": BBI, "ECDSep": ECDSep, "HeavyBall": HeavyBall}[name]
    p = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = cls([p], lr=0.05, seed=0)
    p.grad = torch.ones_like(p)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(exc, match=match):
        opt.step(loss=bad())
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))
    assert opt.state_dict()["dynopt"]["global"] == before["dynopt"]["global"]


def test_csv_logger_rows_are_on_disk_after_each_logged_step(tmp_path):
    """The CSV logger is a reporter of a live run: after each logged step its rows are in the
    file (flushed), so a reader (``tail -f``, a notebook plotting the run) sees them before the
    run ends and nothing is lost if the process dies. Catches the per-call flush dropped (the
    rows then sat in the write buffer until close())."""
    import csv

    from dynopt.optim import Langevin
    from dynopt.optim.hooks import CSVLogger

    p = nn.Parameter(torch.ones(4))
    opt = Langevin([{"params": [p]}], lr=0.1, temperature=0.0, seed=0)
    log = CSVLogger(tmp_path / "run.csv", every=1)
    opt.register_step_post_hook(log)
    try:
        for k in range(1, 3):
            p.grad = p.detach().clone()
            opt.step()
            with (tmp_path / "run.csv").open() as f:
                rows = list(csv.DictReader(f))
            assert [int(r["step"]) for r in rows] == list(range(1, k + 1))
            assert rows[-1]["dynamics"] == "langevin"
    finally:
        log.close()


@pytest.mark.parametrize("name", ["BBI", "ECDSep", "HeavyBall"])
def test_energy_optimizers_refuse_a_model_cast_after_the_first_step(name):
    """After a step, casting the model (``model.double()``) leaves the momentum in the old
    dtype; the next step refuses it with a ValueError naming the momentum, both dtypes and the
    parameter, before anything is written (θ and the momentum unchanged), as the Langevin
    family does. Catches the dtype check dropped (the step then ran on in mixed precision)."""
    from dynopt.optim import BBI, ECDSep, HeavyBall

    cls = {"BBI": BBI, "ECDSep": ECDSep, "HeavyBall": HeavyBall}[name]
    model = nn.Linear(3, 1)
    opt = cls(model.parameters(), lr=0.05, seed=0)
    x = torch.randn(4, 3)
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step(loss=loss)
    model.double()
    opt.zero_grad()
    loss = model(x.double()).pow(2).mean()
    loss.backward()
    theta = [p.detach().clone() for p in model.parameters()]
    mom = [opt.state[p]["momentum"].clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"state\['momentum'\] of parameter 0 must be a "
                                         r"contiguous torch.float64 tensor .* got torch.float32"):
        opt.step(loss=loss)
    assert all(torch.equal(p.detach(), t) for p, t in zip(model.parameters(), theta, strict=True))
    assert all(torch.equal(opt.state[p]["momentum"], m)
               for p, m in zip(model.parameters(), mom, strict=True))


def test_a_seed_of_64_bits_or_more_is_refused():
    """The noise key is 64 bits, so seeds live in [0, 2**64): 2**64 − 1 is accepted and kept,
    2**64 is refused naming the range (it would alias seed 0). Catches the upper bound
    dropped."""
    from dynopt.optim import Langevin

    p = nn.Parameter(torch.zeros(2))
    assert Langevin([p], seed=2**64 - 1).seed == 2**64 - 1
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\), got "
                                         r"18446744073709551616"):
        Langevin([p], seed=2**64)


def test_a_warm_up_that_starts_at_lr_zero_pauses_only_its_first_step():
    """A schedule ``lr(step)`` is read at the current step when deciding whether a group sits a
    step out: with a warm-up lr(0) = 0, lr(k ≥ 1) = 0.1 the first step leaves θ as it is (and
    does not even read its NaN gradient) while the counter advances, and the second step is,
    bit for bit, the first step of an optimizer with lr = 0.1 (the paused step left no trace).
    Catches the pause test evaluating the schedule at step 0 (the group then never moved)."""
    from dynopt.optim import Langevin

    p = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Langevin([p], lr=lambda step: 0.0 if step == 0 else 0.1, temperature=0.0, seed=0)
    p.grad = torch.full_like(p, float("nan"))
    opt.step()
    assert opt.step_count == 1 and torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.step_count == 2
    q = nn.Parameter(torch.ones(3, dtype=torch.float64))
    ref = Langevin([q], lr=0.1, temperature=0.0, seed=0)
    q.grad = torch.ones_like(q)
    ref.step()
    assert not torch.equal(q.detach(), torch.ones(3, dtype=torch.float64))
    assert torch.equal(p.detach(), q.detach())


def test_ekfac_input_factor_is_the_running_average_of_the_batch_second_moments():
    """EKFAC's input factor is a running average A ← d·A + (1 − d)·X̃ᵀX̃/B with d =
    ``ekfac_decay`` (first step: A = X̃ᵀX̃/B), X̃ the layer's inputs with a column of ones for the
    bias; for the first layer X̃ is the batch itself, so A is known in closed form: after two
    steps with d = 0.75 it is 0.75·A₁ + 0.25·A₂. Catches the weights of the average swapped."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    opt = DDPNOpt(model, lr=1e-2, base="ekfac", feedback=False, ekfac_decay=0.75)
    g = torch.Generator().manual_seed(2)
    moments = []
    for _ in range(2):
        x = torch.randn(16, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (16,), generator=g)
        xa = torch.cat([x, torch.ones(16, 1, dtype=torch.float64)], 1)
        moments.append(xa.T @ xa / 16)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if len(moments) == 1:
            assert torch.allclose(opt.state[model[0].weight]["ekfac_A"], moments[0], rtol=1e-12,
                                  atol=0)
    want = 0.75 * moments[0] + 0.25 * moments[1]
    assert torch.allclose(opt.state[model[0].weight]["ekfac_A"], want, rtol=1e-12, atol=0)
