"""torch.optim's own contract (the categories of pytorch's test/test_optim.py, TestOptimRenewed),
for every dynopt optimizer class.

Where a torch convention cannot apply to a stochastic optimizer the test says why; equality
with torch or across paths is asserted at temperature 0, where the dynamics is deterministic.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from optim_zoo import FACTORIES, NEEDS_LOSS, PARAM_LIST, data, flat, loss_fn, model, train

from dynopt.optim import (
    BBI,
    AdaptiveLangevin,
    ECDSep,
    HeavyBall,
    Langevin,
    NoseHoover,
    OverdampedLangevin,
)

#: Classes whose lr has a default, with that default.
DEFAULT_LR = {Langevin: 0.25, OverdampedLangevin: 0.01, AdaptiveLangevin: 0.25, NoseHoover: 0.1,
              HeavyBall: 0.1, BBI: 0.1, ECDSep: 0.1}


# --- lr: a default, and optional when every group sets one ----------------------------------
@pytest.mark.parametrize("cls", list(DEFAULT_LR), ids=lambda c: c.__name__)
def test_lr_has_a_default(cls):
    m = model()
    opt = cls(m.parameters())
    assert [g["lr"] for g in opt.param_groups] == [DEFAULT_LR[cls]]


@pytest.mark.parametrize("cls", list(DEFAULT_LR), ids=lambda c: c.__name__)
def test_groups_with_only_their_own_lr(cls):
    """torch's convention: ``Opt([{"params": a, "lr": x}, {"params": b, "lr": y}])`` with no
    ``lr`` argument; each group steps with its own lr (checked against a run where the same
    values come from per-class defaults overridden group by group)."""
    name = cls.__name__
    kw = {"seed": 1}
    if cls in (Langevin, OverdampedLangevin, AdaptiveLangevin, NoseHoover):
        kw["temperature"] = 1e-3
    m1, m2 = model(), model()
    o1 = cls([{"params": m1[0].parameters(), "lr": 0.03},
              {"params": m1[2].parameters(), "lr": 0.07}], **kw)
    o2 = cls([{"params": m2[0].parameters()}, {"params": m2[2].parameters(), "lr": 0.07}],
             lr=0.03, **kw)
    assert [g["lr"] for g in o1.param_groups] == [0.03, 0.07]
    batches = data(4)
    loss_name = name if name in NEEDS_LOSS else "Langevin"
    assert torch.equal(train(m1, o1, batches, loss_name), train(m2, o2, batches, loss_name))


# --- seeding: seed=None follows torch's global generator -------------------------------------
@pytest.mark.parametrize("name", PARAM_LIST)
def test_seed_none_follows_torch_manual_seed(name):
    """Two runs after ``torch.manual_seed(s)`` draw the same seed (hence the same noise); a
    different global seed gives a different optimizer seed, and two optimizers built one after
    the other get different seeds (independent chains)."""
    m = model()  # (model() seeds torch itself)
    seeds = []
    for s in (7, 7, 8):
        torch.manual_seed(s)
        seeds.append(FACTORIES[name](m, seed=None).seed)
    assert seeds[0] == seeds[1] != seeds[2]
    torch.manual_seed(7)
    a, b = FACTORIES[name](m, seed=None), FACTORIES[name](m, seed=None)
    assert a.seed != b.seed


def test_seed_none_runs_are_reproducible_under_manual_seed():
    """A noisy run (τ = 0.1) with seed=None is reproduced exactly by re-seeding torch."""
    out = []
    for _ in range(2):
        torch.manual_seed(3)
        m = model()
        opt = Langevin(m.parameters(), lr=0.1, temperature=0.1)
        out.append(train(m, opt, data(5), "Langevin"))
    assert torch.equal(out[0], out[1])
    torch.manual_seed(4)
    m = model(seed=3)
    opt = Langevin(m.parameters(), lr=0.1, temperature=0.1)
    assert not torch.equal(train(m, opt, data(5), "Langevin"), out[0])


def test_explicit_seed_leaves_the_global_generator_alone():
    """With a seed nothing is drawn from torch's generator; seed=None draws one number (as
    DataLoader does for its base seed; documented)."""
    params = list(torch.nn.Linear(2, 2).parameters())
    state = torch.get_rng_state()
    Langevin(params, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    Langevin(params)
    assert not torch.equal(torch.get_rng_state(), state)


# --- state_dict round trip with weights_only --------------------------------------------------
@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_weights_only_round_trip(name):
    """Save after 5 steps, load with ``weights_only=True`` into an optimizer built with another
    seed, continue: bit-identical to the uninterrupted run."""
    batches = data(10)
    m = model()
    opt = FACTORIES[name](m, seed=2)
    train(m, opt, batches[:5], name)
    buf = io.BytesIO()
    torch.save({"m": m.state_dict(), "o": opt.state_dict()}, buf)
    ref = train(m, opt, batches[5:], name)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    m2 = model(seed=9)
    m2.load_state_dict(ck["m"])
    opt2 = FACTORIES[name](m2, seed=99)
    opt2.load_state_dict(ck["o"])
    assert torch.equal(train(m2, opt2, batches[5:], name), ref)
    assert flat(m2).shape == ref.shape


# --- schedulers: lr and momentum --------------------------------------------------------------
def _one_cycle(opt, **kw):
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=10, **kw)


@pytest.mark.parametrize("name", ["Langevin", "HeavyBall"])
def test_one_cycle_lr_cycles_the_friction(name):
    """OneCycleLR(cycle_momentum=True) drives lr and momentum; the run equals one where the
    same lr and the friction γ that the momentum means (Langevin c = e^{−γh}, HeavyBall
    c = 1 − γh) are set by hand each step."""
    batches = data(10)
    m1, m2 = model(), model()
    o1 = FACTORIES[name](m1, seed=6, temperature=0.0) if name == "Langevin" else HeavyBall(
        m1.parameters(), lr=0.1, seed=6)
    o2 = FACTORIES[name](m2, seed=6, temperature=0.0) if name == "Langevin" else HeavyBall(
        m2.parameters(), lr=0.1, seed=6)
    sched = _one_cycle(o1)
    seen = []
    for x, y in batches:
        lr, c = o1.param_groups[0]["lr"], o1.param_groups[0]["momentum"]
        seen.append(c)
        o2.param_groups[0]["lr"] = lr
        o2.param_groups[0]["gamma"] = -math.log(c) / lr if name == "Langevin" else (1 - c) / lr
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            loss = loss_fn(m, x, y)
            loss.backward()
            o.step(loss=loss) if name == "HeavyBall" else o.step()
        sched.step()
    assert max(seen) == pytest.approx(0.95) and min(seen) == pytest.approx(0.85)
    assert torch.allclose(flat(m1), flat(m2), rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", ["OverdampedLangevin", "AdaptiveLangevin", "NoseHoover", "BBI",
                                  "ECDSep"])
def test_one_cycle_momentum_refused_without_a_momentum(name):
    """No momentum key: torch's OneCycleLR refuses cycle_momentum=True itself; with
    cycle_momentum=False it drives lr."""
    opt = FACTORIES[name](model(), seed=0)
    assert "momentum" not in opt.defaults and "betas" not in opt.defaults
    with pytest.raises(ValueError, match="momentum"):
        _one_cycle(opt)
    _one_cycle(opt, cycle_momentum=False)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 / 25)


@pytest.mark.parametrize("name", ["AdLaLa", "LOL", "Partitioned"])
def test_one_cycle_momentum_on_mixed_dynamics_is_refused_clearly(name):
    """Mixed optimizers accept momentum on their Langevin groups only: a scheduler setting it on
    every group is refused at the step, naming the dynamics and the way out."""
    m = model()
    opt = FACTORIES[name](m, seed=0)
    _one_cycle(opt)
    m.zero_grad()
    loss_fn(m, *data(1)[0]).backward()
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        opt.step()


def test_momentum_and_gamma_agree():
    """Langevin(momentum=c) is Langevin(gamma=−ln c / h) (fixed h); c outside (0, 1] raises."""
    m1, m2 = model(), model()
    h, c = 0.1, 0.9
    o1 = Langevin(m1.parameters(), lr=h, momentum=c, temperature=0.0)
    o2 = Langevin(m2.parameters(), lr=h, gamma=-math.log(c) / h, temperature=0.0)
    batches = data(5)
    assert torch.allclose(train(m1, o1, batches, "Langevin"), train(m2, o2, batches, "Langevin"),
                          rtol=0, atol=1e-14)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="momentum"):
            Langevin(model().parameters(), momentum=bad)
