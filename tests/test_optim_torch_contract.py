"""torch.optim's own contract (the categories of pytorch's test/test_optim.py, TestOptimRenewed),
for every dynopt optimizer class.

Where a torch convention cannot apply to a stochastic optimizer the test says why; equality
with torch or across paths is asserted at temperature 0, where the dynamics is deterministic.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from optim_zoo import FACTORIES, NEEDS_LOSS, PARAM_LIST, data, flat, loss_fn, model, train
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

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


# --- τ = 0 variants: deterministic settings of every class ------------------------------------
#: Every class with its noise switched off (τ = 0; ECDSep ν = 0; BBI bounces off), where torch's
#: deterministic conventions apply exactly. (NoseHoover/AdaptiveLangevin need τ > 0; their
#: dynamics is deterministic anyway: σ_A = 0.)
COLD = {
    "Langevin": {"temperature": 0.0}, "OverdampedLangevin": {"temperature": 0.0},
    "AdaptiveLangevin": {"temperature": 1e-3, "sigma_a": 0.0},
    "NoseHoover": {"temperature": 1e-3}, "NoseHooverChain": {"temperature": 1e-3},
    "AdLaLa": {"temperature": 1e-3, "sigma_a": 0.0}, "LOL": {"temperature": 0.0},
    "Partitioned": {"temperature": 1e-3}, "BBI": {"t0": None, "t1": None},
    "ECDSep": {"nu": 0.0}, "HeavyBall": {},
}
#: BBI and ECDSep reduce their global norms differently on the two torch paths (the reference
#: path sums per-tensor dot products in float64 as the torch backend does; foreach uses
#: torch._foreach_norm), so those paths agree to rounding, not bit for bit.
GLOBAL_NORMS = ("BBI", "ECDSep")


def _cold(name, m, **kw):
    opt = FACTORIES[name](m, seed=0, **COLD[name], **kw)
    for g in opt.param_groups:  # thermostats need τ > 0; their Langevin groups go to τ = 0
        if g.get("dynamics") == "langevin":
            g["temperature"] = 0.0
    return opt


def _loss_of(m):
    x, y = data(1, seed=9, batch=32)[0]
    with torch.no_grad():
        return float(loss_fn(m, x, y))


@pytest.mark.parametrize("sched", [False, True])
@pytest.mark.parametrize("name", list(COLD))
def test_forloop_goes_right_direction(name, sched):
    """torch's test_forloop_goes_right_direction: 20 closure steps on the single-tensor path
    (with and without an LR scheduler) lower the loss."""
    m = model()
    opt = _cold(name, m, foreach=False)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 5, 0.7) if sched else None
    x, y = data(1, seed=9, batch=32)[0]
    before = _loss_of(m)

    def closure():
        opt.zero_grad()
        loss = loss_fn(m, x, y)
        loss.backward()
        return loss

    for _ in range(20):
        returned = opt.step(closure)
        assert isinstance(returned, torch.Tensor)
        if scheduler is not None:
            scheduler.step()
    assert _loss_of(m) < before


@pytest.mark.parametrize("name", list(COLD))
def test_paths_agree_at_zero_temperature(name):
    """foreach == for-loop (== fused where it exists): every available path gives the same
    parameters after 6 steps (bit for bit between single and foreach; the numba kernel
    rounds like torch's ops but may fuse multiply-adds: 1e-13)."""
    paths = [{"foreach": False}, {"foreach": True}]
    if name != "ECDSep":  # (ECDSep has no fused kernel: its foreach path is faster)
        paths.append({"fused": True})
    runs = []
    for kw in paths:
        m = model()
        runs.append(train(m, _cold(name, m, **kw), data(6), name))
    if name in GLOBAL_NORMS:
        assert torch.allclose(runs[1], runs[0], rtol=0, atol=1e-13)
    else:
        assert torch.equal(runs[0], runs[1])
    for other in runs[2:]:
        assert torch.allclose(other, runs[0], rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", PARAM_LIST)
def test_tensor_lr_equals_float_lr(name):
    """lr as a 1-element tensor (torch's Tensor-LR convention) gives the same steps; a
    2-element tensor is refused naming lr."""
    runs = []
    for lr in (0.05, torch.tensor(0.05, dtype=torch.float64)):
        m = model()
        opt = FACTORIES[name](m, seed=1)
        for g in opt.param_groups:
            g["lr"] = lr
        runs.append(train(m, opt, data(4), name))
    assert torch.equal(runs[0], runs[1])
    with pytest.raises(ValueError, match="lr"):
        FACTORIES[name](model(), seed=1, lr=torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize("name", PARAM_LIST)
def test_lr_scheduler_equals_setting_lr_by_hand(name):
    """Scheduler interplay: StepLR(γ=0.5 every 2 steps) is the same as writing that lr into the
    groups by hand before each step (lr is read fresh every step)."""
    runs = []
    for by_hand in (False, True):
        m = model()
        opt = FACTORIES[name](m, seed=1)
        base = [g["lr"] for g in opt.param_groups]
        sched = None if by_hand else torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
        for k, (x, y) in enumerate(data(6)):
            if by_hand:
                for g, b in zip(opt.param_groups, base, strict=True):
                    g["lr"] = b * 0.5 ** (k // 2)
            opt.zero_grad()
            loss = loss_fn(m, x, y)
            loss.backward()
            opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()
            if sched is not None:
                sched.step()
        runs.append(flat(m))
        assert all("initial_lr" in g for g in opt.param_groups) or by_hand
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", [n for n in COLD if n not in ("BBI", "ECDSep")])
def test_param_groups_equal_separate_optimizers(name):
    """torch: param groups behave like separate optimizers. True for per-tensor dynamics at
    τ = 0. (Not for BBI/ECDSep, whose energy and norms are global over all groups by design,
    nor for a thermostat with scope='model', nor for the noise at τ > 0, which is drawn per
    bucket.)"""
    if name in ("AdLaLa", "LOL", "Partitioned"):
        pytest.skip("built from groups of different dynamics: separate optimizers differ")
    m1, m2 = model(), model()
    whole = _cold(name, m1, foreach=False)
    whole.param_groups[0]["params"] = list(m1[0].parameters())
    whole.add_param_group({"params": list(m1[2].parameters())})
    sep_a, sep_b = _cold(name, m2[0], foreach=False), _cold(name, m2[2], foreach=False)
    for x, y in data(5):
        for m, opts in ((m1, [whole]), (m2, [sep_a, sep_b])):
            for o in opts:
                o.zero_grad()
            loss = loss_fn(m, x, y)
            loss.backward()
            for o in opts:
                o.step(loss=loss) if name in NEEDS_LOSS else o.step()
    assert torch.equal(flat(m1), flat(m2))


@pytest.mark.parametrize("name", list(COLD))
def test_zero_gradients_at_zero_temperature_do_not_move(name):
    """torch's test_step_is_noop_for_zero_grads: zero gradients from rest leave the parameters
    where they are (τ = 0), and parameters without a gradient are skipped (no state)."""
    m = model()
    before = flat(m)
    opt = _cold(name, m)
    for _ in range(3):
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        opt.step(loss=torch.tensor(0.5)) if name in NEEDS_LOSS else opt.step()
    assert torch.equal(flat(m), before)
    m2 = model()
    opt2 = _cold(name, m2)
    opt2.zero_grad(set_to_none=True)
    opt2.step(loss=torch.tensor(0.5)) if name in NEEDS_LOSS else opt2.step()
    assert torch.equal(flat(m2), before) and len(opt2.state) == 0


@pytest.mark.parametrize("name", list(FACTORIES))
def test_hooks_fire_in_order(name):
    """Step pre/post hooks (instance and global), state_dict and load_state_dict hooks: each
    fires once per call, in order, and can be removed."""
    m = model()
    opt = FACTORIES[name](m, seed=0)
    log = []
    handles = [
        opt.register_step_pre_hook(lambda o, a, k: log.append("pre")),
        opt.register_step_post_hook(lambda o, a, k: log.append("post")),
        register_optimizer_step_pre_hook(
            lambda o, a, k: log.append("global-pre")),
        register_optimizer_step_post_hook(
            lambda o, a, k: log.append("global-post")),
        opt.register_state_dict_pre_hook(lambda o: log.append("sd-pre")),
        opt.register_state_dict_post_hook(lambda o, sd: log.append("sd-post")),
        opt.register_load_state_dict_pre_hook(lambda o, sd: log.append("load-pre")),
        opt.register_load_state_dict_post_hook(lambda o: log.append("load-post")),
    ]
    try:
        train(m, opt, data(1), name)
        opt.load_state_dict(opt.state_dict())
    finally:
        for h in handles:
            h.remove()
    assert log == ["global-pre", "pre", "post", "global-post", "sd-pre", "sd-post", "load-pre",
                   "load-post"]
    train(m, opt, data(1), name)
    assert len(log) == 8


@pytest.mark.parametrize("name", PARAM_LIST)
def test_add_param_group(name):
    """A group added mid-run takes part from the next step (fresh state); a parameter in two
    groups is refused (torch's rule)."""
    m = model()
    opt = FACTORIES[name](m, seed=0)
    late = torch.nn.Linear(3, 2).double()
    train(m, opt, data(2), name)
    w = late.weight.detach().clone()
    extra = {"dynamics": "langevin"} if name == "Partitioned" else {}
    opt.add_param_group({"params": list(late.parameters()), **extra})
    assert len(opt.param_groups) == len(FACTORIES[name](model(), seed=0).param_groups) + 1
    x = data(1)[0][0]
    opt.zero_grad()
    loss = loss_fn(m, *data(1)[0]) + late(x).square().mean()
    loss.backward()
    opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()
    assert not torch.equal(late.weight, w)
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [late.bias]})


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_is_deterministic_and_loads_older_groups(name):
    """Save → load → save gives an equal state_dict (torch's test_state_dict_deterministic);
    a checkpoint from before the newer group keys (weight_decay, momentum, localization,
    nbeta) still loads and continues identically (__setstate__/neutral defaults)."""
    batches = data(6)
    m = model()
    opt = FACTORIES[name](m, seed=0)
    train(m, opt, batches[:3], name)
    sd = copy.deepcopy(opt.state_dict())  # state_dict() returns references, as torch's does
    m2 = copy_model(m)
    opt2 = FACTORIES[name](m2, seed=5)
    opt2.load_state_dict(sd)
    assert _equal_tree(opt2.state_dict(), sd)
    new_keys = () if name == "DDPNOpt" else ("momentum", "localization", "nbeta") + (
        () if name == "ECDSep" else ("weight_decay",))
    old = {**sd, "param_groups": [{k: v for k, v in g.items() if k not in new_keys}
                                  for g in sd["param_groups"]]}
    m3 = copy_model(m)
    opt3 = FACTORIES[name](m3, seed=5)
    opt3.load_state_dict(old)
    ref = train(m, opt, batches[3:], name)
    assert torch.equal(train(m3, opt3, batches[3:], name), ref)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_checkpoint_loads_after_a_scheduler_added_its_keys(name):
    """StepLR adds initial_lr, SWALR swa_lr to every group; a checkpoint taken before was refused
    ("lacks the hyperparameters ['initial_lr']"), which broke Lightning's lr_find (it restores
    its pre-search checkpoint with the search's scheduler attached). torch loads it; the keys
    keep their current values and the run continues as an uninterrupted one."""
    batches = data(6)
    m = model()
    opt = FACTORIES[name](m, seed=0)
    train(m, opt, batches[:3], name)
    sd = copy.deepcopy(opt.state_dict())
    m1 = copy_model(m)
    ref = train(m1, _loaded(name, m1, sd), batches[3:], name)
    m2 = copy_model(m)
    opt2 = FACTORIES[name](m2, seed=5)
    torch.optim.lr_scheduler.StepLR(opt2, step_size=100)
    torch.optim.swa_utils.SWALR(opt2, swa_lr=0.01, anneal_epochs=1)
    opt2.load_state_dict(sd)
    assert all(g["swa_lr"] == 0.01 and "initial_lr" in g for g in opt2.param_groups)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in sd["param_groups"]]
    assert torch.equal(train(m2, opt2, batches[3:], name), ref)


def _loaded(name, m, sd):
    opt = FACTORIES[name](m, seed=5)
    opt.load_state_dict(copy.deepcopy(sd))
    return opt


@pytest.mark.parametrize("name", list(FACTORIES))
def test_deepcopy_copies_all_public_attributes(name):
    m = model()
    opt = FACTORIES[name](m, seed=0)
    train(m, opt, data(2), name)
    _, opt2 = copy.deepcopy((m, opt))
    public = {k for k in vars(opt) if not k.startswith("_")}
    assert public == {k for k in vars(opt2) if not k.startswith("_")}
    assert opt2.seed == opt.seed and opt2.step_count == opt.step_count
    assert repr(opt2) == repr(opt) and repr(opt).startswith(type(opt).__name__)


@pytest.mark.parametrize("name", PARAM_LIST)
def test_mixed_dtypes_in_one_group_single_equals_foreach(name):
    """One group holding float64, float32 and bfloat16 tensors (and τ > 0 where there is
    noise): the single-tensor and foreach paths agree bit for bit (the fused path does not take
    bfloat16; its default falls back to foreach for that bucket)."""
    runs = []
    for foreach in (False, True):
        torch.manual_seed(0)
        a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(5, dtype=torch.float32, requires_grad=True)
        # (BBI/ECDSep couple every tensor through global norms: a bfloat16 rounding flip would
        # move the float64 tensors at bfloat16 resolution, so they mix float32/float64 only)
        c = torch.randn(6, dtype=torch.float32 if name in GLOBAL_NORMS else torch.bfloat16,
                        requires_grad=True)
        opt = FACTORIES[name](_Seq([a, b, c]), seed=2, foreach=foreach) if name in (
            "AdLaLa", "LOL", "Partitioned") else type(FACTORIES[name](model(), seed=2))(
            [a, b, c], seed=2, foreach=foreach, **_EXTRA.get(name, {}))
        for k in range(4):
            opt.zero_grad()
            loss = (a.sin().sum() + (b * b).sum() + c.float().cos().sum()) * (1 + 0.1 * k)
            loss.backward()
            opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()
        runs.append([t.detach().clone() for t in (a, b, c)])
    for x, y in zip(*runs, strict=True):
        if name in GLOBAL_NORMS:  # the float32 tensors' share of the global norms is rounded
            # differently on the two paths and reaches every tensor: float32-level agreement
            tol = {torch.float64: 1e-8, torch.float32: 1e-6}[x.dtype]
            assert torch.allclose(x.double(), y.double(), rtol=tol, atol=tol)
        else:
            assert torch.equal(x, y)


_EXTRA = {"Langevin": {"temperature": 1e-3}, "OverdampedLangevin": {"temperature": 1e-3},
          "AdaptiveLangevin": {"temperature": 1e-3}, "NoseHoover": {"temperature": 1e-3},
          "NoseHooverChain": {"temperature": 1e-3, "chain_length": 3},
          "ECDSep": {"nu": 1e-2}, "BBI": {"t0": 2}}


class _Seq(list):
    """A stand-in 'model' for the group-building factories: [tensor] per 'layer'."""

    def __getitem__(self, i):
        t = list.__getitem__(self, {0: 0, 2: slice(1, None)}.get(i, i))

        class _Layer:
            def parameters(self_inner):
                return t if isinstance(t, list) else [t]
        return _Layer()


def copy_model(m):
    return copy.deepcopy(m)


def _equal_tree(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal_tree(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal_tree(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", list(FACTORIES))
def test_bad_lr_and_complex_parameters_are_refused(name):
    with pytest.raises(ValueError, match="lr"):
        FACTORIES[name](model(), lr=-0.1)
    if name in PARAM_LIST and name not in ("AdLaLa", "LOL", "Partitioned"):
        cls = type(FACTORIES[name](model(), seed=0))
        with pytest.raises(ValueError, match="complex"):
            cls([torch.zeros(2, dtype=torch.complex64, requires_grad=True)])


@pytest.mark.parametrize("name", ["Langevin", "HeavyBall"])
def test_state_dict_hooks_see_dynopts_whole_checkpoint(name):
    """torch's hook contract with dynopt's own entry: a state-dict post-hook sees (and may
    replace) the finished dict, "dynopt" included; a load pre-hook sees the whole checkpoint
    before it is validated and may migrate it; what it returns is validated like the rest; a
    load post-hook sees the restored seed and step counter."""
    m = model()
    opt = FACTORIES[name](m, seed=3)
    train(m, opt, data(3), name)
    seen = {}

    def tag(o, sd):
        seen["post"] = "dynopt" in sd
        sd = dict(sd)
        sd["dynopt"] = {**sd["dynopt"], "seed": 3}  # a hook's result is what state_dict returns
        return sd

    h = opt.register_state_dict_post_hook(tag)
    sd = opt.state_dict()
    h.remove()
    assert seen["post"] and sd["dynopt"]["seed"] == 3

    other = FACTORIES[name](m, seed=5)
    key = {"Langevin": "momentum_buffer", "HeavyBall": "momentum"}[name]
    good = sd["state"][0][key]
    broken = copy.deepcopy(sd)
    broken["state"][0][key] = torch.zeros(2, 2)

    def migrate(o, ck):  # sees "dynopt" before validation; repairs the broken entry
        seen["pre"] = ck["dynopt"]["seed"]
        ck = copy.deepcopy(ck)
        ck["state"][0][key] = good.clone()
        return ck

    def after(o):
        seen["load-post"] = (o.seed, o.step_count)

    hp = other.register_load_state_dict_pre_hook(migrate)
    hq = other.register_load_state_dict_post_hook(after)
    other.load_state_dict(broken)
    assert seen["pre"] == 3 and seen["load-post"] == (3, 3)
    hp.remove()
    hq.remove()

    def corrupt(o, ck):
        return broken

    hp = other.register_load_state_dict_pre_hook(corrupt)
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(ValueError, match=key):
        other.load_state_dict(sd)
    hp.remove()
    after_sd = other.state_dict()
    assert torch.equal(after_sd["state"][0][key], before["state"][0][key])


@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_load_pre_hook_that_rebinds_entries_leaves_the_callers_checkpoint(name):
    """torch shallow-copies the checkpoint before its load pre-hooks run; dynopt passed the
    caller's dict, so a migrating hook that rebinds "param_groups" (or an entry of "dynopt")
    changed the checkpoint the caller still holds (loading it again then migrated twice)."""
    m = model()
    opt = FACTORIES[name](m, seed=3)
    train(m, opt, data(2), name)
    sd = opt.state_dict()
    lr = sd["param_groups"][0]["lr"]

    def migrate(o, ck):
        ck["param_groups"] = [{**g, "lr": 0.5 * g["lr"]} for g in ck["param_groups"]]
        ck["dynopt"]["seed"] = 7

    other = FACTORIES[name](model(), seed=5)
    other.register_load_state_dict_pre_hook(migrate)
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == 0.5 * lr and other.seed == 7
    assert sd["param_groups"][0]["lr"] == lr and sd["dynopt"]["seed"] == 3
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == 0.5 * lr


@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_step_without_gradients_or_loss_is_a_no_op(name):
    """Lightning steps the optimizer for a batch whose training_step returned None (no
    gradients, the closure returns None). torch's optimizers and dynopt's others do nothing;
    BBI, ECDSep, HeavyBall with events and DDPNOpt demanded a loss (pointing to FeedLoss, which
    was attached) or a forward pass. Now every optimizer counts the step and changes nothing,
    and the next real step runs."""
    m = model()
    opt = FACTORIES[name](m, seed=3)
    train(m, opt, data(2), name)
    before = copy.deepcopy(opt.state_dict())
    theta = flat(m)
    opt.zero_grad()
    assert opt.step(lambda: None) is None
    assert torch.equal(flat(m), theta)
    now = opt.state_dict()
    assert now["dynopt"]["global"]["step"] == before["dynopt"]["global"]["step"] + 1
    for pid, entry in before["state"].items():
        for k, v in entry.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(now["state"][pid][k], v), k
    train(m, opt, data(3)[2:], name)
    assert not torch.equal(flat(m), theta)
