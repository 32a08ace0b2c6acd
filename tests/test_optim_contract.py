"""The torch.optim contract for the Langevin-family optimizers, on every path."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch

from dynopt.errors import DivergenceError
from dynopt.integrators import BAOAB, Splitting
from dynopt.optim import (
    BBI,
    LOL,
    AdaptiveLangevin,
    AdLaLa,
    Langevin,
    NoseHoover,
    OverdampedLangevin,
    Partitioned,
)

PATHS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def _model(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, 9), torch.nn.ReLU(), torch.nn.Linear(9, 1))


def _data(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 2, generator=g), torch.randn(6, 1, generator=g)) for _ in range(n)]


def _steps(model, opt, data, sched=None) -> torch.Tensor:
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


FACTORIES = {
    "langevin": lambda m, **kw: Langevin(m.parameters(), lr=0.1, gamma=0.5, temperature=1e-3,
                                         **kw),
    "overdamped-lm": lambda m, **kw: OverdampedLangevin(m.parameters(), lr=0.05,
                                                        temperature=1e-3, scheme="lm", **kw),
    "adl": lambda m, **kw: AdaptiveLangevin(m.parameters(), lr=0.1, temperature=1e-3, **kw),
    "nhc": lambda m, **kw: NoseHoover(m.parameters(), lr=0.1, temperature=1e-3, chain_length=3,
                                      scope="group", **kw),
    "adlala": lambda m, **kw: AdLaLa([{"params": m[0].parameters()},
                                      {"params": m[2].parameters()}], lr=0.1, **kw),
    "lol": lambda m, **kw: LOL([{"params": m[0].parameters()}, {"params": m[2].parameters()}],
                               lr=0.1, **kw),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(FACTORIES))
def test_resume_bit_exact_through_weights_only_load(name, path):
    """Save mid-run, torch.load(weights_only=True) into a fresh optimizer, continue: the next
    steps (noise, thermostats, LM memory included) are bit-identical."""
    data = _data(30)
    model = _model()
    opt = FACTORIES[name](model, seed=11, **PATHS[path])
    _steps(model, opt, data[:10])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    ref = _steps(model, opt, data[10:])
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2 = _model(seed=5)
    model2.load_state_dict(ckpt["model"])
    opt2 = FACTORIES[name](model2, seed=999, **PATHS[path])
    opt2.load_state_dict(ckpt["opt"])
    assert torch.equal(_steps(model2, opt2, data[10:]), ref)


@pytest.mark.parametrize("path", list(PATHS))
def test_lr_scheduler_drives_the_step_size(path):
    """A scheduler's lr is read every step: the run equals one where group['lr'] is set by hand,
    and differs from the constant-lr run."""
    data = _data(12)
    m1, m2, m3 = _model(), _model(), _model()
    o1 = Langevin(m1.parameters(), lr=0.2, temperature=0.0, **PATHS[path])
    sched = torch.optim.lr_scheduler.StepLR(o1, step_size=3, gamma=0.5)
    a = _steps(m1, o1, data, sched)
    o2 = Langevin(m2.parameters(), lr=0.2, temperature=0.0, **PATHS[path])
    for k, (x, y) in enumerate(data):
        o2.param_groups[0]["lr"] = 0.2 * 0.5 ** (k // 3)
        _steps(m2, o2, [(x, y)])
    b = torch.cat([p.detach().flatten() for p in m2.parameters()])
    o3 = Langevin(m3.parameters(), lr=0.2, temperature=0.0, **PATHS[path])
    c = _steps(m3, o3, data)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_temperature_and_gamma_schedules():
    """Schedules callable(step) are evaluated each step; a temperature schedule equal to 0 gives
    the τ = 0 trajectory, and a gamma schedule matches setting gamma by hand."""
    data = _data(10)
    m1, m2 = _model(), _model()
    o1 = Langevin(m1.parameters(), lr=0.1, gamma=lambda k: 0.1 * (k + 1),
                  temperature=lambda k: 0.0, seed=0)
    o2 = Langevin(m2.parameters(), lr=0.1, gamma=0.1, temperature=0.0, seed=0)
    a = _steps(m1, o1, data)
    for k, xy in enumerate(data):
        o2.param_groups[0]["gamma"] = 0.1 * (k + 1)
        _steps(m2, o2, [xy])
    assert torch.equal(a, torch.cat([p.detach().flatten() for p in m2.parameters()]))
    with pytest.raises(ValueError, match=re.escape("temperature (schedule value at step 0)")):
        Langevin(_model().parameters(), lr=0.1, temperature=lambda k: -1.0)
    bad = Langevin(_model().parameters(), lr=0.1, temperature=lambda k: 1e-3 * (1 - 2 * k))
    for p in bad.param_groups[0]["params"]:
        p.grad = torch.zeros_like(p)
    bad.step()
    with pytest.raises(ValueError, match=re.escape("temperature (schedule value at step 1) "
                                                   "must be >= 0, got -0.001")):
        bad.step()


def test_closure_hooks_and_maximize():
    data = _data(5)
    model = _model()
    opt = Langevin(model.parameters(), lr=0.1, temperature=0.0)
    calls = []
    opt.register_step_post_hook(lambda o, a, k: calls.append(o.step_count))
    x, y = data[0]

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and calls == [1]
    # maximize(−L) is minimize(L), bit for bit
    m1, m2 = _model(), _model()
    o1 = Langevin(m1.parameters(), lr=0.1, temperature=1e-3, seed=2, maximize=True)
    o2 = Langevin(m2.parameters(), lr=0.1, temperature=1e-3, seed=2)
    for xb, yb in data:
        o1.zero_grad()
        o2.zero_grad()
        (-torch.nn.functional.mse_loss(m1(xb), yb)).backward()
        torch.nn.functional.mse_loss(m2(xb), yb).backward()
        o1.step()
        o2.step()
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters(), strict=True))


def test_add_param_group_and_params_without_grad():
    """A group added later starts with its own first step (zero momentum, B½); parameters
    without a gradient are left alone."""
    m = _model()
    opt = Langevin(m[0].parameters(), lr=0.1, temperature=0.0)
    x, y = _data(1)[0]
    torch.nn.functional.mse_loss(m(x), y).backward()
    opt.step()
    before = m[2].weight.detach().clone()
    assert torch.equal(m[2].weight, before) and len(opt.state) == 2
    opt.add_param_group({"params": m[2].parameters(), "gamma": 2.0})
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "gamma": -1.0})
    opt.zero_grad()
    torch.nn.functional.mse_loss(m(x), y).backward()
    g = m[2].weight.grad.clone()
    opt.step()
    # first step of the new group: Δθ = −(h²/4)(1 + c)∇L with its own γ
    c = math.exp(-2.0 * 0.1)
    expected = before - 0.1**2 / 4 * (1 + c) * g
    assert torch.allclose(m[2].weight.detach(), expected, atol=1e-7)
    assert opt.state[m[2].weight]["step"] == 1 and opt.state[m[0].weight]["step"] == 2


@pytest.mark.parametrize("path", list(PATHS))
def test_nan_gradient_raises_and_leaves_state_unchanged(path):
    model = _model()
    opt = AdaptiveLangevin(model.parameters(), lr=0.1, temperature=1e-3, seed=0, **PATHS[path])
    _steps(model, opt, _data(3))
    sd = {k: {kk: vv.clone() if isinstance(vv, torch.Tensor) else vv for kk, vv in v.items()}
          for k, v in opt.state_dict()["state"].items()}
    params = [p.detach().clone() for p in model.parameters()]
    model[0].weight.grad[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="non-finite gradient at step 4"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    after = opt.state_dict()["state"]
    for k, v in sd.items():
        for kk, vv in v.items():
            assert torch.equal(vv, after[k][kk]) if isinstance(vv, torch.Tensor) else (
                vv == after[k][kk])
    assert opt.step_count == 3


@pytest.mark.parametrize(("factory", "message"), [
    (lambda p: Langevin(p, lr=-0.1), "lr must be >= 0, got -0.1"),
    (lambda p: Langevin(p, lr=0.1, temperature=-1.0), "temperature must be >= 0, got -1.0"),
    (lambda p: Langevin(p, lr=0.1, gamma=-2.0), "gamma must be >= 0, got -2.0"),
    (lambda p: Langevin(p, lr=0.1, scheme="BAXAB"), "unknown letter(s) ['X']"),
    (lambda p: Langevin(p, lr=0.1, scheme="BADAB"), "scheme='BADAB' cannot drive"),
    (lambda p: Langevin(p, lr=0.1, noise="uniform"), "noise must be one of"),
    (lambda p: AdaptiveLangevin(p, lr=0.1, eps=-0.05), "eps must be > 0, got -0.05"),
    (lambda p: AdaptiveLangevin(p, lr=0.1, sigma_a=-0.01), "sigma_a must be >= 0, got -0.01"),
    (lambda p: AdaptiveLangevin(p, lr=0.1, temperature=0.0), "temperature must be > 0, got 0.0"),
    (lambda p: AdaptiveLangevin(p, lr=0.1, scope="layer"), "scope must be one of"),
    (lambda p: NoseHoover(p, lr=0.1, tau=-1.0), "tau must be > 0, got -1.0"),
    (lambda p: NoseHoover(p, lr=0.1, chain_length=0), "chain_length must be >= 1, got 0"),
    (lambda p: OverdampedLangevin(p, lr=0.1, scheme="heun"), "scheme must be one of"),
    (lambda p: Partitioned(p, lr=0.1), "has no 'dynamics'"),
    (lambda p: Partitioned(p, lr=0.1, dynamics="brownian"), "dynamics must be one of"),
])
def test_bad_hyperparameters_raise_naming_the_parameter(factory, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        factory([torch.zeros(3, requires_grad=True)])


def test_sparse_and_complex_are_rejected():
    with pytest.raises(ValueError, match="complex"):
        Langevin([torch.zeros(2, dtype=torch.complex64, requires_grad=True)], lr=0.1)
    for nonfinite in ("raise", "skip", "ignore"):  # "ignore" skipped the check (raw errors)
        for make in (lambda ps: Langevin(ps, lr=0.1, nonfinite=nonfinite),
                     lambda ps: BBI(ps, lr=0.1, nonfinite=nonfinite, foreach=True)):
            p = torch.zeros(3, requires_grad=True)
            opt = make([p])
            p.grad = torch.zeros(3).to_sparse()
            with pytest.raises(ValueError, match="does not support sparse gradients "
                                                 r"\(param group 0, parameter 0\)"):
                opt.step(loss=1.0) if isinstance(opt, BBI) else opt.step()
            assert torch.equal(p, torch.zeros(3))


def test_meta_parameters_are_refused_at_the_step():
    """A model built on the meta device has no values: the step names the parameter (it was
    torch's "item() cannot be called on meta tensors"). ``to_empty`` replaces the parameters,
    so an optimizer built before it still holds meta tensors and keeps refusing (torch's SGD
    would step them silently); with torch's swap-on-conversion flag the same objects are
    materialized and the optimizer steps them."""
    def build(nonfinite):
        with torch.device("meta"):
            m = torch.nn.Linear(3, 2)
        return m, Langevin(m.parameters(), lr=0.1, temperature=0.0, nonfinite=nonfinite)

    def init_and_backward(m):
        torch.nn.init.ones_(m.weight)
        torch.nn.init.zeros_(m.bias)
        m(torch.ones(1, 3)).sum().backward()

    match = r"param group 0, parameter 0 is on the meta device .*to_empty"
    for nonfinite in ("raise", "ignore"):
        m, opt = build(nonfinite)
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        with pytest.raises(RuntimeError, match=match):
            opt.step()
        m.to_empty(device="cpu")
        init_and_backward(m)
        with pytest.raises(RuntimeError, match=match):
            opt.step()
    swap = torch.__future__.get_swap_module_params_on_conversion()
    try:
        torch.__future__.set_swap_module_params_on_conversion(True)
        m, opt = build("raise")
        m.to_empty(device="cpu")
        init_and_backward(m)
        opt.step()
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    # τ = 0: the step moved θ, and finitely
    assert not torch.equal(m.weight, torch.ones(2, 3))
    assert torch.isfinite(m.weight).all()


def test_adlala_needs_param_groups_and_assigns_dynamics():
    m = _model()
    with pytest.raises(ValueError, match=re.escape("[{'params': model[0].parameters()}")):
        AdLaLa(m.parameters())
    with pytest.raises(ValueError, match="at least two param groups"):
        AdLaLa([{"params": m.parameters()}])
    opt = AdLaLa([{"params": m[0].parameters(), "temperature": 1e-3},
                  {"params": m[2].parameters(), "temperature": 1e-6}])
    assert [g["dynamics"] for g in opt.param_groups] == ["adaptive-langevin", "langevin"]
    assert [g["temperature"] for g in opt.param_groups] == [1e-3, 1e-6]
    lol = LOL([{"params": m[0].parameters()}, {"params": m[2].parameters()}])
    assert [(g["dynamics"], g["scheme"], g["overdamped_dt"]) for g in lol.param_groups][1] == (
        "overdamped", "lm", "lr**2/2")
    with pytest.raises(ValueError, match="dynamics='langevin' only"):
        Langevin([{"params": m.parameters(), "dynamics": "overdamped"}], lr=0.1)


def _weights_only_round_trip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("scheme, entry", [
    (BAOAB(), "BAOAB"), (Splitting("OBABO"), "OBABO"), (Splitting("ABOBA"), "ABOBA"),
    (Splitting("BAOAB", [0.5, 0.3, 1.0, 0.7, 0.5]), None),
])
def test_a_scheme_object_checkpoints_as_plain_data(scheme, entry):
    """A scheme given as an integrator object was stored as the object: torch.load(...,
    weights_only=True) refused the checkpoint. It is stored as the string that builds it, or
    (a splitting with fractions) as its letters, matched on load against the optimizer's own
    object; either way the resumed run equals the uninterrupted one bit for bit."""
    data = _data(8)
    m, m2 = _model(), _model()
    opt = Langevin(m.parameters(), lr=0.1, temperature=1e-3, scheme=scheme, seed=1)
    _steps(m, opt, data[:4])
    sd = _weights_only_round_trip({"model": m.state_dict(), "opt": opt.state_dict()})
    saved = sd["opt"]["param_groups"][0]["scheme"]
    assert saved == entry if entry is not None else saved.startswith("<integrator>")
    m2.load_state_dict(sd["model"])
    same = Splitting("BAOAB", [0.5, 0.3, 1.0, 0.7, 0.5])
    opt2 = Langevin(m2.parameters(), lr=0.1, temperature=1e-3, seed=9,
                    scheme=same if entry is None else "BAOAB")
    opt2.load_state_dict(sd["opt"])
    assert torch.equal(_steps(m2, opt2, data[4:]), _steps(m, opt, data[4:]))
    if entry is None:
        other = Langevin(_model().parameters(), lr=0.1, temperature=1e-3, scheme="BAOAB")
        with pytest.raises(ValueError, match=r"checkpoint's scheme was the scheme object "
                                             r"\[\('B', 0.5\), \('A', 0.3\).*construct the optimizer with "
                                             r"the same scheme"):
            other.load_state_dict(sd["opt"])
