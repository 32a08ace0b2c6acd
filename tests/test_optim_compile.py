"""torch.compile: a compiled optimizer step runs on every path and matches eager at τ = 0; a
compiled model trains with every optimizer. (Compilation takes seconds per graph on a small CPU,
so the default tier compiles twice; the path matrix is in the slow tier.)"""

from __future__ import annotations

import logging

import pytest
import torch
from optim_zoo import FACTORIES, NEEDS_LOSS, PARAM_LIST, data, flat, loss_fn, model

from dynopt.optim import (
    BBI,
    LOL,
    AdaptiveLangevin,
    ECDSep,
    HeavyBall,
    Langevin,
    NoseHoover,
    OverdampedLangevin,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _quiet_dynamo():
    torch._dynamo.reset()
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    yield
    torch._dynamo.reset()


def _run(make, name, steps, compiled, backend="inductor"):
    m = model()
    opt = make(m)
    step = torch.compile(opt.step, backend=backend) if compiled else opt.step
    for x, y in data(steps):
        opt.zero_grad()
        loss = loss_fn(m, x, y)
        loss.backward()
        if name in NEEDS_LOSS:
            step(loss=loss.detach())
        else:
            step()
    return flat(m), opt


@pytest.mark.parametrize("make", [
    lambda m: OverdampedLangevin(m.parameters(), lr=0.05, temperature=1e-3, seed=0),
    lambda m: OverdampedLangevin(m.parameters(), lr=0.05, temperature=1e-3, scheme="em",
                                 seed=0),
    lambda m: LOL([{"params": m[0].parameters()}, {"params": m[2].parameters()}], lr=0.05,
                  temperature=1e-3, seed=0),
])
def test_compiled_overdamped_default_path_takes_its_first_step(make):
    """The fused runner of the overdamped schemes was created inside the traced step and read
    back as None: AttributeError 'init_prev' at the first compiled step."""
    ref, _ = _run(make, "OverdampedLangevin", 3, compiled=False)
    got, opt = _run(make, "OverdampedLangevin", 3, compiled=True, backend="eager")
    assert opt.step_count == 3
    assert torch.allclose(got, ref, rtol=0, atol=1e-13)


def test_compiled_step_matches_eager_on_the_default_path():
    """Langevin at τ = 0 (default path: the numba kernel eagerly, foreach when compiled);
    dynamo's graph capture with the eager backend here (fast), inductor in the slow tier."""
    def make(m):
        return Langevin(m.parameters(), lr=0.1, gamma=0.5, temperature=0.0, seed=0)

    ref, _ = _run(make, "Langevin", 3, compiled=False)
    got, opt = _run(make, "Langevin", 3, compiled=True, backend="eager")
    assert opt.step_count == 3
    assert torch.allclose(got, ref, rtol=0, atol=1e-13)
    assert not torch.equal(got, flat(model()))


CASES = {
    "langevin-single": ("Langevin", lambda m: Langevin(m.parameters(), lr=0.1, temperature=0.0,
                                                       foreach=False)),
    "langevin-foreach": ("Langevin", lambda m: Langevin(m.parameters(), lr=0.1,
                                                        temperature=0.0, foreach=True)),
    "langevin-fused": ("Langevin", lambda m: Langevin(m.parameters(), lr=0.1, temperature=0.0,
                                                      fused=True)),
    "adl": ("AdaptiveLangevin", lambda m: AdaptiveLangevin(m.parameters(), lr=0.1,
                                                           temperature=1e-3, sigma_a=0.0)),
    "nhc": ("NoseHoover", lambda m: NoseHoover(m.parameters(), lr=0.1, temperature=1e-3,
                                               chain_length=3)),
    "heavyball-fused": ("HeavyBall", lambda m: HeavyBall(m.parameters(), lr=0.1, gamma=0.5,
                                                         fused=True)),
    "heavyball-foreach": ("HeavyBall", lambda m: HeavyBall(m.parameters(), lr=0.1, gamma=0.5,
                                                           foreach=True)),
    # the fused default path of the overdamped schemes: the lazily created fused runner read
    # as None under dynamo at the first compiled step ('init_prev' of None)
    "overdamped-lm-fused": ("OverdampedLangevin", lambda m: OverdampedLangevin(
        m.parameters(), lr=0.05, temperature=1e-3, seed=0)),
    "overdamped-em-fused": ("OverdampedLangevin", lambda m: OverdampedLangevin(
        m.parameters(), lr=0.05, temperature=1e-3, scheme="em", seed=0)),
    "bbi": ("BBI", lambda m: BBI(m.parameters(), lr=0.05, seed=0)),
    "ecdsep": ("ECDSep", lambda m: ECDSep(m.parameters(), lr=0.05, nu=0.0, seed=0)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_compiled_step_matches_eager_on_every_path(case):
    name, make = CASES[case]
    ref, _ = _run(make, name, 3, compiled=False)
    got, _ = _run(make, name, 3, compiled=True)
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)


def _train_model(name, compiled_model):
    m = model()
    fwd = torch.compile(m) if compiled_model else m
    opt = FACTORIES[name](m, seed=1)
    for x, y in data(3):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(fwd(x), y)
        loss.backward()
        opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()
    return flat(m)


@pytest.mark.parametrize("name", ["Langevin", "BBI"])
def test_compiled_model_trains(name):
    """A torch.compile'd model with an eager optimizer: the same parameters as the eager model
    (the compiled forward/backward may round differently: 1e-12)."""
    assert torch.allclose(_train_model(name, True), _train_model(name, False), rtol=0,
                          atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", PARAM_LIST)
def test_compiled_model_trains_with_every_optimizer(name):
    assert torch.allclose(_train_model(name, True), _train_model(name, False), rtol=0,
                          atol=1e-10)
