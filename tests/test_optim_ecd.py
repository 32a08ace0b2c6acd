"""BBI, ECDSep and HeavyBall as torch optimizers: maps, global norms, parity, the contract."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt.events import AtStep, Bounce, LossBelow, Plateau, SetFriction, Stop
from dynopt.optim import BBI, REGISTRY, ECDSep, HeavyBall, make
from dynopt.systems import BornInfeld
from dynopt.systems import ECDSep as ECDSepSystem

ACKLEY = P.Ackley(2, b=0.02)
BBI_KW = {"v0": 1e-4, "delta_energy": 2.0, "t0": 20, "n_bounces": 4, "t1": 100}
ECD_KW = {"F0": 1e-3, "eta": 1.01, "nu": 0.5, "s": 1.0, "delta_energy": 10.0}


def _model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8),
                               torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(dtype)


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(40, 3, generator=g, dtype=dtype)
    return x, torch.cos(x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=dtype))


def _train(model, opt, n, data=None, use_closure=False):
    x, y = data or _data(next(model.parameters()).dtype)
    out = []
    for _ in range(n):
        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean() + 0.05
            loss.backward()
            return loss

        if use_closure:
            opt.step(closure)
        else:
            loss = closure()
            opt.step(loss=loss)
        out.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    return torch.stack(out)


def _bbi(params, **kw):
    base = {"lr": 0.05, "v0": 0.0, "delta_energy": 0.5, "t0": 7, "n_bounces": 2, "t1": 15,
            "seed": 1}
    base.update(kw)
    return BBI(params, **base)


def _ecd(params, **kw):
    base = {"lr": 0.05, "F0": 0.0, "eta": 1.5, "nu": 1e-2, "delta_energy": 0.2, "seed": 1}
    base.update(kw)
    return ECDSep(params, **base)


FACTORIES = {"bbi": _bbi, "ecdsep": _ecd,
             "heavyball": lambda ps, **kw: HeavyBall(ps, lr=0.2, gamma=0.5, **kw)}


# --- the maps on a model: invariants with global norms over groups and tensors -----------------
def test_bbi_projection_and_initial_momentum_are_global():
    m = _model()
    groups = [{"params": list(m.parameters())[:2]}, {"params": list(m.parameters())[2:]}]
    opt = _bbi(groups, t0=None, t1=None)
    x, y = _data()
    for k in range(25):
        opt.zero_grad()
        loss = ((m(x) - y) ** 2).mean() + 0.05
        loss.backward()
        V = float(loss.detach())
        opt.step(loss=loss)
        st = opt.global_state["bbi"]
        E0, a = float(st["E0"]), 0.05 * float(st["kick_rate"])
        # Π after the projection = Π_new + Δt·kick_rate·∇ℓ (the kick undone)
        pi = [opt.state[p]["momentum"] + a * p.grad for p in m.parameters()]
        pi2 = sum(float((t * t).sum()) for t in pi)
        if k == 0:  # started along −∇ℓ with the *global* norm √(E₀²/V₀ − V₀)
            assert pi2 == pytest.approx(E0**2 / V - V, rel=1e-12)
        assert V * (V + pi2) == pytest.approx(E0**2, rel=1e-12)


def test_ecdsep_speed_limit_is_exact_on_a_model():
    m = _model()
    opt = _ecd([{"params": list(m.parameters())[:3]}, {"params": list(m.parameters())[3:]}],
               lr=0.3, s=2.0)
    traj = _train(m, opt, 40)
    dq = (traj[1:] - traj[:-1]).norm(dim=1)
    assert float(dq.max()) <= 0.3 / math.sqrt(2.0) * (1 + 1e-12)
    assert float(dq.max()) > 0.5 * 0.3 / math.sqrt(2.0)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_two_groups_equal_one_group(name):
    a, b = _model(), _model()
    one = FACTORIES[name](a.parameters())
    ps = list(b.parameters())
    two = FACTORIES[name]([{"params": ps[:3]}, {"params": ps[3:]}])
    torch.testing.assert_close(_train(a, one, 40), _train(b, two, 40), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_parameters_without_gradients_are_left_alone(name):
    m = _model()
    extra = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))  # never gets a gradient
    frozen = torch.nn.Parameter(torch.ones(2, dtype=torch.float64), requires_grad=False)
    opt = FACTORIES[name]([*m.parameters(), extra, frozen])
    _train(m, opt, 10)
    assert torch.equal(extra, torch.ones(3, dtype=torch.float64))
    assert torch.equal(frozen, torch.ones(2, dtype=torch.float64))
    assert "momentum" not in opt.state[extra]


# --- parity with integrate() and between paths -----------------------------------------------
def _optimizer_path(opt_cls, kw, n, seed, path, pot=ACKLEY, q0=(-4.0, 3.0)):
    th = torch.tensor(q0, dtype=torch.float64)
    opt = opt_cls([th], seed=seed, **kw, **path)
    out = []
    for _ in range(n):
        th.grad = pot.grad(th)
        opt.step(loss=pot.value(th))
        out.append(th.clone())
    return torch.stack(out).numpy()


def test_bbi_optimizer_equals_integrate_bit_for_bit_with_bounces():
    sys = BornInfeld(ACKLEY, **BBI_KW)
    tr = dynopt.integrate(sys, None, [-4.0, 3.0], h=0.00965, n_steps=400, seed=3,
                          backend="torch")
    assert tr.extras["bounces"][0, -1] >= 5
    ref = _optimizer_path(BBI, {"lr": 0.00965, **BBI_KW}, 400, 3,
                          {"foreach": False, "fused": False})
    np.testing.assert_array_equal(ref, tr.q[0, 1:])
    for path in ({"fused": True}, {"foreach": True}):
        other = _optimizer_path(BBI, {"lr": 0.00965, **BBI_KW}, 400, 3, path)
        np.testing.assert_allclose(other, ref, atol=1e-10)
    # numba backend: same map, its own (Philox) bounces: equal up to the first bounce
    nb = dynopt.integrate(sys, None, [-4.0, 3.0], h=0.00965, n_steps=20, seed=3)
    np.testing.assert_allclose(nb.q[0, 1:21], ref[:20], atol=1e-12)


def test_ecdsep_optimizer_equals_integrate_bit_for_bit(monkeypatch):
    """The optimizer performs the system's map bit for bit, given the same rotation normals:
    on CPU its normals come from Philox (tests/test_optim_ecd_noise.py), integrate's torch
    backend draws them from a torch generator, so here the optimizer draws from its generator
    as it does on CUDA (``_philox_bucket`` says no)."""
    monkeypatch.setattr(ECDSep, "_philox_bucket", staticmethod(lambda *a: False))
    sys = ECDSepSystem(ACKLEY, **ECD_KW)
    tr = dynopt.integrate(sys, None, [-4.0, 3.0], h=0.698, n_steps=200, seed=5, backend="torch")
    ref = _optimizer_path(ECDSep, {"lr": 0.698, **ECD_KW}, 200, 5, {"foreach": False})
    np.testing.assert_array_equal(ref, tr.q[0, 1:])
    # the foreach path: same rotation normals, other rounding of the norms, which Ackley at
    # this step amplifies about twofold per step (5.9e-10 at step 30)
    other = _optimizer_path(ECDSep, {"lr": 0.698, **ECD_KW}, 20, 5, {"foreach": True})
    np.testing.assert_allclose(other, ref[:20], atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ecdsep_paths_agree_with_rotation_weight_decay_and_mixed_groups(dtype):
    """The foreach path (start along −∇F̃, projection, kick with wd·θ, drift with the global
    |p|², rotation with the generator's normals) against the reference path; a model whose
    groups take different paths (foreach, single) is the same map: the norms are global.
    Catches: a path that drops wd·θ, the start, the projection or the rotation; |p|² of one
    group only (the foreach kick returned none at first: 0.08 off); normals drawn in another
    order than the reference's."""
    def run(groups):
        m = _model(dtype=dtype)
        ps = list(m.parameters())
        spec = [{"params": ps[:2], **groups[0]}, {"params": ps[2:4], **groups[1]},
                {"params": ps[4:], **groups[2]}]
        opt = _ecd(spec, nu=0.3, weight_decay=1e-2)
        return _train(m, opt, 25), opt

    ref, ref_opt = run([{"foreach": False}] * 3)
    tol = {"rtol": 0, "atol": 1e-11} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for groups in ([{"foreach": True}] * 3, [{}] * 3,
                   [{"foreach": True}, {}, {"foreach": False}]):
        got, opt = run(groups)
        torch.testing.assert_close(got, ref, **tol)
        # E is fixed at the first step from ℓ + (wd/2)|θ|²: float32 |θ|² is reduced in float32
        # by the reference path and in float64 by the others
        e_tol = 0.0 if dtype == torch.float64 else 1e-6
        assert float(opt.global_state["ecd"]["E"]) == pytest.approx(
            float(ref_opt.global_state["ecd"]["E"]), rel=e_tol, abs=0.0)
        mom = [opt.state[p]["momentum"] for g in opt.param_groups for p in g["params"]]
        want = [ref_opt.state[p]["momentum"] for g in ref_opt.param_groups for p in g["params"]]
        torch.testing.assert_close(torch.cat([t.flatten() for t in mom]),
                                   torch.cat([t.flatten() for t in want]), **tol)
    assert (ref[-1] - ref[0]).abs().max() > 1e-2  # it moved: the comparison is not vacuous


def test_float32_fused_bbi_close_to_foreach():
    runs = []
    for path in ({"fused": True}, {"foreach": True}):
        m = _model(dtype=torch.float32)
        runs.append(_train(m, _bbi(m.parameters(), t0=None, t1=None, **path), 20))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-4, atol=1e-5)


# --- the torch.optim contract ------------------------------------------------------------------
def _events(name):
    if name == "heavyball":
        return [LossBelow(0.8, then=SetFriction(1.5)), Plateau(5)]
    if name == "bbi":
        return [AtStep(12, then=Bounce()), Plateau(4)]
    return [Plateau(4)]


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_resume_is_bit_exact_through_a_weights_only_checkpoint(name):
    m = _model()
    opt = FACTORIES[name](m.parameters(), events=_events(name))
    _train(m, opt, 10)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, buf)
    ref = _train(m, opt, 30)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    m2 = _model(seed=5)
    m2.load_state_dict(ckpt["model"])
    opt2 = FACTORIES[name](m2.parameters(), events=_events(name), seed=99)
    opt2.load_state_dict(ckpt["opt"])
    assert torch.equal(_train(m2, opt2, 30), ref)
    assert opt2.event_log == opt.event_log and len(opt.event_log) > 0


def test_state_dict_holds_energy_counters_and_events():
    m = _model()
    opt = _bbi(m.parameters(), events=[Plateau(3)])
    _train(m, opt, 12)
    sd = opt.state_dict()["dynopt"]["global"]
    assert {"E0", "counter0", "counter", "fixed_bounces", "min_V", "bounces"} <= set(sd["bbi"])
    assert "events" in sd and "ps2" in sd
    assert opt.energy == float(sd["bbi"]["E0"])


@pytest.mark.parametrize("name", ["bbi", "ecdsep"])
def test_seed_makes_bounces_reproducible(name):
    a, b, c = (_train(m, FACTORIES[name](m.parameters(), seed=s), 25)
               for m, s in ((_model(), 4), (_model(), 4), (_model(), 5)))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_closure_and_loss_keyword_agree(name):
    a, b = _model(), _model()
    ta = _train(a, FACTORIES[name](a.parameters()), 15, use_closure=True)
    tb = _train(b, FACTORIES[name](b.parameters()), 15, use_closure=False)
    assert torch.equal(ta, tb)
    # the authors' usage: step(lambda: loss) with the loss computed outside
    c = _model()
    opt = FACTORIES[name](c.parameters())
    x, y = _data()
    for _ in range(15):
        opt.zero_grad()
        loss = ((c(x) - y) ** 2).mean() + 0.05
        loss.backward()
        opt.step(lambda loss=loss: loss)
    torch.testing.assert_close(torch.cat([p.detach().flatten() for p in c.parameters()]),
                               ta[-1], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["bbi", "ecdsep"])
def test_lr_scheduler_changes_the_time_step(name):
    a, b = _model(), _model()
    oa = FACTORIES[name](a.parameters())
    sched = torch.optim.lr_scheduler.StepLR(oa, step_size=5, gamma=0.5)
    ob = FACTORIES[name](b.parameters())
    x, y = _data()
    for k in range(15):
        for mdl, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            loss = ((mdl(x) - y) ** 2).mean() + 0.05
            loss.backward()
            opt.step(loss=loss)
        sched.step()
        ob.param_groups[0]["lr"] = 0.05 * 0.5 ** ((k + 1) // 5)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert oa.param_groups[0]["lr"] == pytest.approx(0.05 / 8)


def test_stop_event_and_bounce_event():
    m = _model()
    opt = _bbi(m.parameters(), t0=None, t1=None, events=[AtStep(5, then=Bounce()),
                                                         AtStep(9, then=Stop())])
    traj = _train(m, opt, 15)
    assert float(opt.global_state["bbi"]["bounces"]) == 1
    assert torch.equal(traj[5], traj[4])  # the bounce step does not move θ
    assert opt.stopped and torch.equal(traj[-1], traj[8])
    assert [f.step for f in opt.event_log] == [5, 9]


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda ps: BBI(ps, lr=-1.0), "lr must be >= 0, got -1.0"),
        (lambda ps: BBI(ps, lr=0.1, t0=0), "t0 must be >= 1, got 0"),
        (lambda ps: BBI(ps, lr=0.1, delta_energy=-1.0), "delta_energy must be >= 0"),
        (lambda ps: BBI(ps, lr=0.1, bounce_direction="x"), "bounce_direction must be one of"),
        (lambda ps: ECDSep(ps, lr=0.1, eta=0.5), "eta must be >= 1, got 0.5"),
        (lambda ps: ECDSep(ps, lr=0.1, weight_decay=-1.0), "weight_decay must be >= 0"),
        (lambda ps: ECDSep(ps, lr=0.1, events=[AtStep(2, then=Bounce())]),
         "does not support the action Bounce"),
        (lambda ps: BBI(ps, lr=0.1, events=[AtStep(2, then=SetFriction(1.0))]),
         "does not support the action SetFriction"),
        (lambda ps: BBI(ps, lr=0.1, maximize=True), "maximize=True is not supported"),
        (lambda ps: HeavyBall(ps, lr=0.1, fused=1), "fused must be None or a bool"),
    ],
)
def test_bad_input(factory, message):
    with pytest.raises((ValueError, TypeError), match=message):
        factory(_model().parameters())


@pytest.mark.parametrize("name", ["bbi", "ecdsep"])
def test_loss_is_required_and_must_be_scalar(name):
    m = _model()
    opt = FACTORIES[name](m.parameters())
    x, y = _data()
    ((m(x) - y) ** 2).mean().backward()
    with pytest.raises(ValueError, match="needs the loss value"):
        opt.step()
    with pytest.raises(ValueError, match="loss must be a scalar"):
        opt.step(loss=torch.ones(2))
    with pytest.raises(ValueError, match="both a closure and loss="):
        opt.step(lambda: torch.tensor(1.0), loss=torch.tensor(1.0))


def test_registry():
    assert {"bbi", "ecdsep", "heavyball"} <= set(REGISTRY)
    opt = make("bbi", _model(), v0=0.01)
    assert isinstance(opt, BBI) and opt.param_groups[0]["lr"] == 0.1


def test_heavy_ball_maximize_and_gamma_schedule():
    a, b = _model(), _model()
    x, y = _data()
    up = HeavyBall(a.parameters(), lr=0.2, gamma=lambda k: 0.5 if k < 5 else 2.0, maximize=True)
    down = HeavyBall(b.parameters(), lr=0.2, gamma=lambda k: 0.5 if k < 5 else 2.0)
    for _ in range(10):
        for m, o, sign in ((a, up, -1.0), (b, down, 1.0)):
            o.zero_grad()
            (sign * ((m(x) - y) ** 2).mean()).backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert down.friction(down.param_groups[0]) == 2.0


def test_heavy_ball_energy_events_under_maximize_see_the_dynamics_energy():
    """Under maximize the dynamics descends U = −loss, so its energy is −loss + ½|p|²; the
    'energy' observable was loss + ½|p|² (it swung between ±1.25 while H stayed in
    [1.21, 1.30]). Maximizing f equals minimizing −f: same parameters, same firings, same
    observed energies. Mixed objectives across groups have no energy (refused)."""
    from dynopt.events import EnergyBelow

    runs = []
    for maximize in (True, False):
        m = _model()
        x, y = _data()
        opt = HeavyBall(m.parameters(), lr=0.2, gamma=0.5, maximize=maximize,
                        events=[EnergyBelow(0.45, then=SetFriction(2.0))])
        for _ in range(30):
            opt.zero_grad()
            f = -((m(x) - y) ** 2).mean() - 0.05
            obj = f if maximize else -f
            obj.backward()
            opt.step(loss=obj)
        runs.append((torch.cat([p.detach().flatten() for p in m.parameters()]),
                     [(e.step, e.value) for e in opt.event_log]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] and len(runs[0][1]) == 1 and runs[0][1][0][1] > 0
    m = _model()
    ps = list(m.parameters())
    mixed = HeavyBall([{"params": ps[:2], "maximize": True}, {"params": ps[2:]}], lr=0.1,
                      events=[EnergyBelow(0.3)])
    ((m(_data()[0]) - _data()[1]) ** 2).mean().backward()
    with pytest.raises(ValueError, match="some param groups maximize and others minimize"):
        mixed.step(loss=1.0)


def test_energy_events_need_the_loss_and_a_stopped_optimizer_checks_nothing():
    """Energy-only events read the loss too: step() without one raised a raw KeyError('loss'),
    and a NaN loss passed the non-finite checks. After Stop, step() does nothing, also with
    NaN gradients (it raised DivergenceError)."""
    from dynopt.errors import DivergenceError
    from dynopt.events import EnergyBelow

    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = HeavyBall([w], lr=0.1, events=[EnergyBelow(0.1)])
    w.grad = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs the loss value"):
        opt.step()
    with pytest.raises(DivergenceError, match="non-finite loss nan at step 1"):
        opt.step(loss=float("nan"))
    assert torch.equal(w, torch.ones(3, dtype=torch.float64))
    opt = HeavyBall([w], lr=0.1, events=[AtStep(1, then=Stop())])
    opt.step()
    opt.step()
    assert opt.stopped
    w.grad = torch.full((3,), math.nan, dtype=torch.float64)
    before = w.detach().clone()
    opt.step()
    assert torch.equal(w, before) and opt.step_count == 3


def test_a_checkpoint_of_other_events_or_bad_event_state_is_refused_on_load():
    """load_state_dict checked no event state: another optimizer's events loaded and failed at
    the next step with a raw KeyError, gamma_override = −5 loaded and amplified, stopped='no'
    read as True, a reference of the wrong shape failed later in a broadcast."""
    def build(events):
        w = torch.nn.Parameter(torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64))
        return w, HeavyBall([w], lr=0.1, gamma=0.5, events=events)

    def step(w, opt):
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        opt.step(loss=loss)

    w, opt = build([LossBelow(0.5, then=SetFriction(1.0)), Plateau(3)])
    for _ in range(25):
        step(w, opt)
    good = opt.state_dict()
    assert good["dynopt"]["global"]["gamma_override"] == 1.0
    cases = [
        ([Plateau(3)], None, "holds the state of other events"),
        ([Plateau(3), LossBelow(0.5, then=SetFriction(1.0))], None, r"\['trig'\]\[0\] must hold"),
        (None, ("gamma_override", -5.0), "must be a finite friction >= 0"),
        (None, ("gamma_override", math.nan), "must be a finite friction >= 0"),
        (None, ("stopped", "no"), r"\['stopped'\] must be a bool"),
    ]
    for events, edit, match in cases:
        sd = io.BytesIO()
        torch.save(good, sd)
        sd.seek(0)
        sd = torch.load(sd, weights_only=True)
        if edit is not None:
            sd["dynopt"]["global"][edit[0]] = edit[1]
        w2, opt2 = build(events or [LossBelow(0.5, then=SetFriction(1.0)), Plateau(3)])
        before = opt2.state_dict()
        with pytest.raises(ValueError, match=match):
            opt2.load_state_dict(sd)
        assert opt2.state_dict()["dynopt"] == before["dynopt"]  # left unchanged
    sd = dict(good)
    sd["dynopt"] = {**good["dynopt"], "global": {**good["dynopt"]["global"]}}
    est = sd["dynopt"]["global"]["events"]
    sd["dynopt"]["global"]["events"] = {**est, "trig": [{"reference": torch.zeros(5)},
                                                       est["trig"][1]]}
    w2, opt2 = build([LossBelow(0.5, then=SetFriction(1.0)), Plateau(3)])
    with pytest.raises(ValueError, match=r"\['reference'\] must be a tensor of shape \(1,\)"):
        opt2.load_state_dict(sd)
    opt2.load_state_dict(good)  # the checkpoint itself loads and continues
    step(w2, opt2)
    assert opt2.friction(opt2.param_groups[0]) == 1.0


@pytest.mark.parametrize(("loss", "error"), [("0.5", TypeError), (True, TypeError),
                                             (torch.tensor(True), TypeError),
                                             (np.array([0.5]), None), (np.float32(0.5), None)])
def test_loss_values_are_type_checked(loss, error):
    """step(loss=...) read "0.5" and True as numbers and gave numpy's raw error for a
    1-element array; arrays of one number are read, the rest refused naming loss."""
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = HeavyBall([w], lr=0.1, events=[LossBelow(0.5)])
    w.grad = torch.ones(3, dtype=torch.float64)
    if error is None:
        opt.step(loss=loss)
        assert float(opt.global_state["events"]["trig"][0]["reference"]) == 0.5
    else:
        with pytest.raises(error, match="loss must be a real number"):
            opt.step(loss=loss)
        assert torch.equal(w, torch.ones(3, dtype=torch.float64))
