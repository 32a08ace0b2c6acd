"""lr = 0: a group whose step size is 0 sits the step out, as torch's optimizers accept lr = 0.

Warm-up schedules start at 0 (``LambdaLR(lambda s: s / w)``, ``transformers``'
``get_linear_schedule_with_warmup``, ``Trainer(warmup_steps > 0)``) and cosine or polynomial
schedules end there; every dynopt optimizer used to refuse the value and the run crashed at its
first step. With step size 0 no time passes: the group's parameters and state are left exactly
as they are while the others step and the step counter advances.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from optim_zoo import FACTORIES, NEEDS_LOSS, PARAM_LIST, data, flat, loss_fn, model, train

from dynopt.optim import DDPNOpt, Langevin


def _step(m, opt, name, batch):
    x, y = batch
    opt.zero_grad()
    loss = loss_fn(m, x, y)
    loss.backward()
    return opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()


@pytest.mark.parametrize("name", PARAM_LIST)
def test_a_zero_lr_step_changes_nothing_and_counts(name):
    m = model()
    opt = FACTORIES[name](m, seed=0)
    train(m, opt, data(2), name)
    theta, sd = flat(m).clone(), copy.deepcopy(opt.state_dict())
    for group in opt.param_groups:
        group["lr"] = 0.0
    _step(m, opt, name, data(1, seed=7)[0])
    assert torch.equal(flat(m), theta)
    now = opt.state_dict()
    assert now["dynopt"]["global"]["step"] == sd["dynopt"]["global"]["step"] + 1
    for pid, entry in sd["state"].items():
        for k, v in entry.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(now["state"][pid][k], v), (pid, k)
    for group in opt.param_groups:
        group["lr"] = 0.05
    _step(m, opt, name, data(1, seed=8)[0])  # and the run goes on
    assert not torch.equal(flat(m), theta)


@pytest.mark.parametrize("name", PARAM_LIST)
def test_construction_and_checkpoints_accept_lr_zero(name):
    m = model()
    opt = FACTORIES[name](m, seed=0, lr=0.0)
    _step(m, opt, name, data(1)[0])
    assert torch.equal(flat(m), flat(model()))
    other = FACTORIES[name](model(), seed=0)
    other.load_state_dict(opt.state_dict())  # a checkpoint taken during warm-up loads
    for bad, err in [(-0.1, "lr must be >= 0"), (math.nan, "lr must be finite")]:
        with pytest.raises(ValueError, match=err):
            FACTORIES[name](model(), seed=0, lr=bad)


@pytest.mark.parametrize("foreach", [None, True])
def test_a_paused_group_leaves_the_other_groups_path_unchanged(foreach):
    """Langevin groups are independent given their gradients: with fixed gradients, the group
    that keeps stepping follows exactly (fused path: bit for bit, its noise is its own stream)
    the path it follows when the other group steps too, and the paused one stays put."""
    def run(pause):
        g = torch.Generator().manual_seed(0)
        a, b = torch.zeros(50), torch.zeros(30)
        a.grad, b.grad = torch.randn(50, generator=g), torch.randn(30, generator=g)
        opt = Langevin([{"params": [a]}, {"params": [b]}], lr=0.1, temperature=1.0, seed=2,
                       foreach=foreach)
        held = []
        for k in range(6):
            opt.param_groups[0]["lr"] = 0.0 if pause and k % 2 == 0 else 0.1
            before = a.clone()
            opt.step()
            held.append(torch.equal(a, before))
        return a, b, held

    a_p, b_p, held = run(pause=True)
    a_f, b_f, _ = run(pause=False)
    assert held == [True, False] * 3
    assert not torch.equal(a_p, a_f)
    if foreach is None:  # fused: per-tensor streams; foreach draws one buffer per bucket
        assert torch.equal(b_p, b_f)


@pytest.mark.parametrize("name", ["Langevin", "HeavyBall", "NoseHoover", "BBI"])
def test_linear_warmup_from_zero_trains(name):
    """LambdaLR warm-up from 0: the first step is a pause, the next ones train."""
    m = model()
    opt = FACTORIES[name](m, seed=0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / 3))
    start = flat(m).clone()
    batches = data(6)
    _step(m, opt, name, batches[0])
    sched.step()
    assert torch.equal(flat(m), start)
    for batch in batches[1:]:
        _step(m, opt, name, batch)
        sched.step()
    assert not torch.equal(flat(m), start)
    assert opt.step_count == 6


_TORCH_BASE = {
    "sgd": (dict(momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "adam": ({}, lambda p: torch.optim.Adam(p, lr=0.05)),
    "rmsprop": (dict(momentum=0.5), lambda p: torch.optim.RMSprop(p, lr=0.05, momentum=0.5)),
}


@pytest.mark.parametrize("base", sorted(_TORCH_BASE))
def test_ddpnopt_steps_a_zero_lr_as_torch_does(base):
    """DDPNOpt refused lr = 0 (a layer's control cannot sit a step out), so a warm-up from 0
    crashed it. At lr = 0 it now steps as torch does: parameters unchanged, buffers advanced
    (SGD's momentum, Adam's moments and step count), so without feedback a linear warm-up from
    0 equals the torch optimizer bit for bit; with feedback the lr = 0 steps move nothing."""
    kw, ref_factory = _TORCH_BASE[base]
    runs = {}
    for kind in ("ddp", "ddp-feedback", "torch"):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(),
                                torch.nn.Linear(5, 1)).double()
        opt = (ref_factory(m.parameters()) if kind == "torch" else
               DDPNOpt(m, lr=0.05, base=base, feedback=kind == "ddp-feedback",
                       terminal_hessian="identity", **kw))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(s / 3, 1.0))
        thetas = []
        for k in range(6):
            g = torch.Generator().manual_seed(k)
            x = torch.randn(8, 3, generator=g, dtype=torch.float64)
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), x.sum(1, keepdim=True).sin()).backward()
            opt.step()
            sched.step()
            thetas.append(flat(m).clone())
        runs[kind] = (thetas, opt)
    for kind in runs:
        thetas = runs[kind][0]
        assert torch.equal(thetas[0], _initial()), kind  # lr 0: nothing moved
        assert not torch.equal(thetas[-1], thetas[0]) and torch.isfinite(thetas[-1]).all()
    for a, b in zip(runs["ddp"][0], runs["torch"][0], strict=True):
        assert torch.equal(a, b)
    state = runs["ddp"][1].state
    assert state and all(st for st in state.values())  # the lr-0 step made the buffers


def _initial():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    return flat(m)


@pytest.mark.parametrize("optimizer", ["langevin", "ddpnopt"])
def test_hugging_face_trainer_with_warmup_trains(tmp_path, optimizer):
    """``Trainer(warmup_steps > 0)`` crashed at its first step (lr 0): every optimizer, and
    DDPNOpt until it stepped lr = 0 as torch does."""
    transformers = pytest.importorskip("transformers")
    import warnings

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))

    class HFModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, y):
            return {"loss": torch.nn.functional.mse_loss(self.net(x), y)}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g)
    ds = [{"x": x[i], "y": torch.sin(x[i].sum(0, keepdim=True))} for i in range(16)]
    model_ = HFModel()
    opt = (Langevin(model_.parameters(), lr=0.05, temperature=1e-4, seed=0)
           if optimizer == "langevin" else
           DDPNOpt(net, lr=0.05, base="sgd", terminal_hessian="identity"))
    start = torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=5, warmup_steps=2,
        lr_scheduler_type="linear", report_to="none", disable_tqdm=True, logging_strategy="no",
        save_strategy="no", use_cpu=True, seed=0, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model_, args=args, train_dataset=ds,
                                   optimizers=(opt, None))
    trainer.remove_callback(transformers.PrinterCallback)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert opt.step_count == 5
    assert not torch.equal(torch.nn.utils.parameters_to_vector(net.parameters()), start)
