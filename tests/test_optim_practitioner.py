"""Less common but real training-loop usage of the optimizers, each checked against what torch's
own optimizers do or against an equivalent run.

* A tensor appended to ``group["params"]`` by hand after some steps (torch's optimizers take it:
  their state is created lazily) steps exactly as if it had been in the group from the start
  without a gradient until then, noise streams included.
* A param group that sets a constructor-only setting (``seed``, ``noise``, ``nonfinite``,
  ``events``, BBI's and ECDSep's system hyperparameters) or a Langevin-family key that the
  optimizer does not read (``temperature`` on HeavyBall) is refused, naming the key; these
  were silently ignored (the group ran with the optimizer's values). A group that repeats the
  constructor's own value is accepted, as torch's ``ZeroRedundancyOptimizer`` needs (it passes
  its keyword arguments to the optimizer and into every group; the refusal broke it).
* Under ``differentiable=True`` a hyperparameter tensor that requires grad (the hypergradient
  pattern: ``torch.optim.SGD`` passes a gradient to its ``lr``) is refused, since dynopt reads
  hyperparameters as numbers; it was silently left without a gradient.
* The ``GradScaler`` recipe for the loss-reading optimizers (``observe_loss`` of the unscaled
  loss, ``scaler.step``) equals the plain float32 loop bit for bit, a skipped step included.
* DDPNOpt under activation checkpointing (``torch.utils.checkpoint``, non-reentrant) equals the
  plain loop bit for bit; the recomputation inside ``backward()`` started a new record, and
  ``step()`` raised "the recorded forward pass is incomplete". The reentrant variant, whose
  checkpointed layers run without gradients, is refused with a message that says so.
* A Partitioned group whose ``dynamics`` is changed after construction without the new
  dynamics' keys is refused naming them and the values construction would use (it raised a
  bare ``KeyError: 'chain_length'`` or "sigma_a must be a real number, got None"); with them
  set, as the message says, it steps.
* ``model.double()`` after the first steps: the step's error about the buffer's dtype says
  how to convert the state (``opt.load_state_dict(opt.state_dict())``), and that round trip
  continues exactly as a new optimizer loading the checkpoint after the conversion.
* ``CSVLogger(append=True)`` re-registered on a resumed run continues its log (it truncated it, losing the
  history, and two loggers on one file wrote NUL bytes): the log of a run resumed from a
  checkpoint equals the uninterrupted run's, byte for byte.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from optim_zoo import FACTORIES, data, model
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

from dynopt.events import AtStep, SetFriction
from dynopt.optim import (
    BBI,
    DDPNOpt,
    ECDSep,
    HeavyBall,
    Langevin,
    NoseHoover,
    OverdampedLangevin,
    Partitioned,
)
from dynopt.optim.hooks import CSVLogger

# Partitioned's family numbers its noise streams over the groups' tensors (cached); the others
# are the reference behaviour (torch's lazily created state).
APPEND_NAMES = ("Langevin", "OverdampedLangevin", "AdaptiveLangevin", "NoseHooverChain",
                "AdLaLa", "LOL", "HeavyBall", "ECDSep")


def _step(m, opt, extra, x, y):
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x + extra), y)
        loss.backward()
        return loss

    opt.step(closure)


@pytest.mark.parametrize("name", APPEND_NAMES)
@pytest.mark.parametrize("how", ["append", "replace", "append, first group paused"])
def test_tensor_put_into_group_by_hand(name, how):
    """Run A holds ``extra`` in its last group from the start (no gradient for two steps); run
    B puts it there by hand after two steps (appended, or replacing a placeholder tensor at the
    same position; in the third case both runs pause the first group at lr = 0 in the step
    after). The two runs agree bit for bit; before the fix run B raised a bare ``KeyError``
    (the cached stream numbering did not know the tensor)."""
    batches = data(6)
    runs = []
    for late in (False, True):
        m = model(0)
        extra = torch.nn.Parameter(torch.full((3,), 0.1, dtype=torch.float64))
        placeholder = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        opt = FACTORIES[name](m, seed=2)
        group = opt.param_groups[-1]
        if not late:
            group["params"].append(extra)
        elif how == "replace":
            group["params"].append(placeholder)  # never gets a gradient
        for x, y in batches[:2]:
            _step(m, opt, extra.detach(), x, y)
        if late and how == "replace":
            group["params"][-1] = extra
        elif late:
            group["params"].append(extra)
        for k, (x, y) in enumerate(batches[2:]):
            if how.endswith("paused") and len(opt.param_groups) > 1:
                opt.param_groups[0]["lr"] = 0.0 if k == 0 else 0.1
            _step(m, opt, extra, x, y)
        runs.append(torch.cat([p.detach().flatten() for p in [*m.parameters(), extra]]))
    assert not torch.equal(runs[0][-3:], torch.full((3,), 0.1, dtype=torch.float64))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("cls, key, value, message", [
    (Langevin, "seed", 3, "'seed' is a setting of the whole Langevin, not of a param group"),
    (OverdampedLangevin, "noise", "discrete", "'noise' is a setting of the whole"),
    (NoseHoover, "nonfinite", "skip", "'nonfinite' is a setting of the whole"),
    (HeavyBall, "events", [], "'events' is a setting of the whole HeavyBall"),
    (BBI, "v0", 2.0, "'v0' is a setting of the whole BBI"),
    (ECDSep, "nu", 0.1, "'nu' is a setting of the whole ECDSep"),
    (HeavyBall, "temperature", 1e-3, "HeavyBall does not use 'temperature'"),
    (NoseHoover, "noise", "discrete", "NoseHoover does not use 'noise'"),
    (Langevin, "events", [], "Langevin does not use 'events'"),
    (BBI, "gamma", 0.5, "BBI does not use 'gamma'"),
    (ECDSep, "scheme", "BAOAB", "ECDSep does not use 'scheme'"),
])
def test_group_key_that_would_be_ignored_is_refused(cls, key, value, message):
    """The key is refused at construction and by ``add_param_group`` (which then keeps
    nothing); the same key given to the constructor, where the optimizer reads it, is fine."""
    m = model(0)
    kw = {"temperature": 1e-3} if cls is NoseHoover else {}
    with pytest.raises(ValueError, match=message):
        cls([{"params": m[0].parameters(), key: value}, {"params": m[2].parameters()}],
            lr=0.1, **kw)
    opt = cls(m[0].parameters(), lr=0.1, **kw)
    with pytest.raises(ValueError, match=re.escape(f"param group 1 sets it to {value!r}")):
        opt.add_param_group({"params": m[2].parameters(), key: value})
    assert len(opt.param_groups) == 1


def test_sgd_passes_a_gradient_to_its_lr():
    """The torch behaviour the refusal below stands for: two SGD steps on the (detached)
    gradient g = a⊙θ give d(Σθ₂)/d(lr) = Σ −a(2 − lr a)θ₀ (= 0.0125 here)."""
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    a = torch.tensor([0.5, 0.25], dtype=torch.float64)
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    p = w.clone()
    opt = torch.optim.SGD([p], lr=lr, differentiable=True)
    for _ in range(2):
        p.grad = a * p.detach()
        opt.step()
    p.sum().backward()
    expected = (-a * (2 - 0.1 * a) * torch.tensor([1.0, -2.0], dtype=torch.float64)).sum()
    assert torch.allclose(lr.grad, expected, rtol=1e-12)


REFUSED_HYPERGRADIENTS = [(Langevin, "lr"), (Langevin, "temperature"), (OverdampedLangevin, "lr"),
                          (NoseHoover, "temperature"), (HeavyBall, "lr")]


def _hyper_case(cls):
    kw = {"temperature": 1e-3} if cls is NoseHoover else {}
    hyper = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True).clone()
    return kw, hyper, p


@pytest.mark.parametrize("cls, key", [*REFUSED_HYPERGRADIENTS, (Langevin, "weight_decay")])
def test_hyperparameter_requiring_grad_refused_at_construction(cls, key):
    kw, hyper, p = _hyper_case(cls)
    with pytest.raises(ValueError, match=f"{key} is a tensor that requires grad under "
                                         "differentiable=True"):
        cls([{"params": [p], key: hyper}], lr=0.1, differentiable=True, **kw)
    leaf = torch.nn.Parameter(p.detach().clone())
    cls([{"params": [leaf], key: hyper}], lr=0.1, **kw)  # not differentiable: as torch


@pytest.mark.parametrize("cls, key", [*REFUSED_HYPERGRADIENTS, (Langevin, "weight_decay"),
                                      (Langevin, "nbeta")])  # (the prior's keys: prior._get;
# HeavyBall, which does not read nbeta, refuses the key itself when it is set later)
def test_hyperparameter_requiring_grad_refused_when_set_later(cls, key):
    kw, hyper, p = _hyper_case(cls)
    opt = cls([p], lr=0.1, differentiable=True, **kw)
    p.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    before = p.detach().clone()
    opt.param_groups[0][key] = hyper
    with pytest.raises(ValueError, match=f"{key} is a tensor that requires grad under "
                                         "differentiable=True"):
        opt.step()
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("name", ["BBI", "HeavyBall"])
def test_grad_scaler_with_observed_loss_equals_the_plain_loop(name):
    """Scales are powers of two, so unscaled gradients are exact: with the loss observed
    before scaling, the run equals the unscaled loop that leaves out the batch whose gradient
    was made infinite (the scaler skips that step and halves the scale)."""
    m, m2 = model(0, dtype=torch.float32), model(0, dtype=torch.float32)
    opt, ref = FACTORIES[name](m, seed=0), FACTORIES[name](m2, seed=0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2)
    for i, (x, y) in enumerate(data(8, dtype=torch.float32)):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x), y)
        scaler.scale(loss).backward()
        opt.observe_loss(loss)
        if i == 4:
            m[0].weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        if i != 4:
            ref.zero_grad()
            loss = torch.nn.functional.mse_loss(m2(x), y)
            loss.backward()
            ref.step(loss=loss)
    assert scaler.get_scale() == 2.0**14  # x2 after batches 1, 3, 6; /2 at batch 4
    assert opt.step_count == ref.step_count == 7
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def _ddpnopt_run(forward, base):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                            torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    opt = DDPNOpt(m, lr=0.1, base=base)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(12, 8, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (12,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(forward(m, x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize("base", ["sgd", "ekfac"])
@pytest.mark.parametrize("how", ["sequential", "first layers"])
def test_ddpnopt_under_activation_checkpointing(base, how):
    if how == "sequential":
        def forward(m, x):
            return checkpoint_sequential(m, 2, x, use_reentrant=False)
    else:
        def forward(m, x):
            return m[3:](checkpoint(m[:3], x, use_reentrant=False))
    plain = _ddpnopt_run(lambda m, x: m(x), base)
    assert torch.equal(_ddpnopt_run(forward, base), plain)


def test_ddpnopt_reentrant_checkpointing_refused_clearly():
    def forward(m, x):
        return checkpoint_sequential(m, 2, x.requires_grad_(), use_reentrant=True)
    with pytest.raises(RuntimeError, match="use_reentrant=True runs the checkpointed layers "
                                           "without gradients"):
        _ddpnopt_run(forward, "sgd")


@pytest.mark.parametrize("new, missing", [
    ("nose-hoover", "['chain_length', 'n_substeps', 'scope', 'sy_order']"),
    ("adaptive-langevin", "['eps', 'scope', 'sigma_a']")])
def test_dynamics_switched_after_construction_names_its_missing_keys(new, missing):
    m = model(0)
    opt = Partitioned([{"params": m[0].parameters(), "dynamics": "langevin"},
                       {"params": m[2].parameters(), "dynamics": "langevin"}],
                      lr=0.1, temperature=1e-3, seed=0)
    batches = data(3)

    def step(x, y):
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()

    step(*batches[0])
    group = opt.param_groups[0]
    group["dynamics"] = new
    del group["gamma"]
    before = torch.cat([p.detach().flatten() for p in m.parameters()])
    with pytest.raises(ValueError, match=re.escape(
            f"param group 0 runs dynamics={new!r} but has no {missing}")):
        step(*batches[1])
    assert torch.equal(torch.cat([p.detach().flatten() for p in m.parameters()]), before)
    group.update({"scope": "tensor"} if new == "adaptive-langevin" else
                 {"scope": "tensor", "chain_length": 1, "n_substeps": 1, "sy_order": 3})
    if new == "adaptive-langevin":
        group.update(sigma_a=0.01, eps=0.05)
    step(*batches[1])
    assert opt.state[m[0].weight]["extras"].dtype == torch.float64  # its new thermostat
    assert not torch.equal(torch.cat([p.detach().flatten() for p in m.parameters()]), before)


@pytest.mark.parametrize("name", ["Langevin", "OverdampedLangevin", "HeavyBall"])
def test_model_converted_after_first_steps(name):
    batches = data(5, dtype=torch.float32)

    def step(m, opt, x, y):
        dtype = next(m.parameters()).dtype

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x.to(dtype)), y.to(dtype))
            loss.backward()
            return loss

        opt.step(closure)

    def two_float32_steps():
        m = model(0, dtype=torch.float32)
        opt = FACTORIES[name](m, seed=0)
        for x, y in batches[:2]:
            step(m, opt, x, y)
        return m, opt

    m, opt = two_float32_steps()
    m.double()
    with pytest.raises(ValueError, match=re.escape(
            "was the parameter converted after its first step (model.double(), model.to(...))?"
            " opt.load_state_dict(opt.state_dict()) converts the optimizer's state to it")):
        step(m, opt, *batches[2])
    opt.load_state_dict(opt.state_dict())
    m2, opt2 = two_float32_steps()
    checkpoint = copy.deepcopy(opt2.state_dict())
    m2.double()
    opt2 = FACTORIES[name](m2, seed=0)
    opt2.load_state_dict(checkpoint)
    for x, y in batches[2:]:
        step(m, opt, x, y)
        step(m2, opt2, x, y)
    assert next(m.parameters()).dtype == torch.float64
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_csv_logger_of_a_resumed_run_continues_its_log(tmp_path):
    batches = data(7)

    def run(path, stop, start=0, checkpoint=None, every=1):
        m = model(0)
        opt = Langevin(m.parameters(), lr=0.1, temperature=1e-3, seed=0)
        if checkpoint is not None:  # (a copy: as torch's, the loaded state aliases the dict)
            m.load_state_dict(checkpoint[0])
            opt.load_state_dict(copy.deepcopy(checkpoint[1]))
        logger = CSVLogger(path, every=every, append=checkpoint is not None)
        opt.register_step_post_hook(logger)
        for x, y in batches[start:stop]:
            _step(m, opt, 0.0, x, y)
        logger.close()
        return copy.deepcopy((m.state_dict(), opt.state_dict()))

    run(tmp_path / "whole.csv", 7)
    checkpoint = run(tmp_path / "resumed.csv", 4)
    run(tmp_path / "resumed.csv", 7, start=4, checkpoint=checkpoint)
    whole = (tmp_path / "whole.csv").read_bytes()
    assert whole.count(b"step,group") == 1 and len(whole.splitlines()) == 8
    assert (tmp_path / "resumed.csv").read_bytes() == whole
    # resumed from a checkpoint older than the log's last rows: those rows (the abandoned
    # continuation) are dropped, not repeated
    early = run(tmp_path / "again.csv", 2)
    run(tmp_path / "again.csv", 6, start=2, checkpoint=early)
    run(tmp_path / "again.csv", 7, start=4, checkpoint=checkpoint)
    assert (tmp_path / "again.csv").read_bytes() == whole
    # the same with every=2: the first row the resumed run logs is step 6
    run(tmp_path / "whole2.csv", 7, every=2)
    run(tmp_path / "again2.csv", 7, every=2)
    run(tmp_path / "again2.csv", 7, start=4, checkpoint=checkpoint, every=2)
    assert (tmp_path / "again2.csv").read_bytes() == (tmp_path / "whole2.csv").read_bytes()
    # without append (the default) a rerun replaces the log: one run, not two mixed
    run(tmp_path / "whole.csv", 7)
    assert (tmp_path / "whole.csv").read_bytes() == whole
    with pytest.raises(TypeError, match="append must be a bool"):
        CSVLogger(tmp_path / "x.csv", append="yes")
    (tmp_path / "other.csv").write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(ValueError, match="exists with the header"):
        CSVLogger(tmp_path / "other.csv")
    assert (tmp_path / "other.csv").read_text() == "epoch,loss\n1,0.5\n"


@pytest.mark.parametrize("name", ["Langevin", "OverdampedLangevin", "AdaptiveLangevin",
                                  "NoseHoover", "HeavyBall", "BBI"])  # (AdLaLa, LOL: own error)
def test_a_single_tensor_as_params_is_refused_as_torch_refuses_it(name):
    # the Langevin family wrapped it as [params] while torch.optim and HeavyBall/BBI refuse it
    import dynopt.optim

    t = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(TypeError) as ours:
        getattr(dynopt.optim, name)(t, lr=0.1)
    with pytest.raises(TypeError) as theirs:
        torch.optim.SGD(t, lr=0.1)
    assert str(ours.value) == str(theirs.value)


# (cls, constructor keywords): what a wrapper such as torch's ZeroRedundancyOptimizer, which
# passes its keyword arguments both to the optimizer and into every param group, produces
REPEATED_SETTINGS = [
    (Langevin, lambda: {"lr": 0.1, "temperature": 1e-3, "seed": 3, "nonfinite": "skip",
                        "noise": "discrete"}),
    (Langevin, lambda: {"lr": 0.1, "temperature": 1e-3, "seed": None}),
    (HeavyBall, lambda: {"lr": 0.1, "events": [AtStep(1, then=SetFriction(3.0))]}),
    (BBI, lambda: {"lr": 0.1, "seed": 5, "v0": 0.5, "t0": None, "consistent_energy": False}),
    (ECDSep, lambda: {"lr": 0.1, "seed": 5, "nu": 1e-3, "s": 0.5}),
]


@pytest.mark.parametrize("cls, settings", REPEATED_SETTINGS)
def test_group_repeating_the_constructors_own_setting_is_accepted(cls, settings):
    """A group key equal to the constructor's own setting changes nothing, so it is accepted
    (the refusal above is for a group value the optimizer would ignore); the run equals the
    one without the repeated keys bit for bit."""
    batches = data(4)
    runs = []
    for repeat in (True, False):
        m = model(0)
        kw = settings()
        torch.manual_seed(7)  # the seed=None draw
        opt = cls([{"params": list(m.parameters()), **kw}] if repeat else m.parameters(), **kw)
        for x, y in batches:
            _step(m, opt, 0.0, x, y)
        runs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_events_given_as_a_generator_still_pickle():
    """The constructor's events are kept to compare a group's with; a generator (consumed by
    the constructor) is not, as it cannot be pickled or deep-copied."""
    import pickle

    p = torch.nn.Parameter(torch.zeros(3))
    opt = HeavyBall([p], lr=0.1, events=(e for e in [AtStep(1, then=SetFriction(3.0))]))
    copy.deepcopy(opt)
    assert len(pickle.loads(pickle.dumps(opt))._events.set) == 1


def test_zero_redundancy_optimizer_wraps_langevin(tmp_path):
    """torch's ZeroRedundancyOptimizer (one rank) around Langevin equals Langevin alone bit for
    bit; it was refused ("'seed' is a setting of the whole Langevin, not of a param group")."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed, not yet initialized")
    kw = {"lr": 0.1, "temperature": 1e-3, "seed": 3, "nonfinite": "skip"}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        runs = []
        for wrap in (True, False):
            m = model(0)
            opt = (ZeroRedundancyOptimizer(m.parameters(), optimizer_class=Langevin, **kw)
                   if wrap else Langevin(m.parameters(), **kw))
            for x, y in data(3):
                opt.zero_grad()
                torch.nn.functional.mse_loss(m(x), y).backward()
                opt.step()
            runs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    finally:
        dist.destroy_process_group()
    assert torch.equal(runs[0], runs[1])
