"""dynopt's optimizers with the tools people train with (torch LR schedulers, GradScaler,
torch.distributed.checkpoint, the Hugging Face Trainer, Lightning), in corners the contract tests
do not reach: what works resumes bit for bit, what cannot work is refused naming the tool."""

from __future__ import annotations

import copy
import inspect
import io
import os
import pickle
import warnings

import pytest
import torch
from optim_zoo import FACTORIES, NEEDS_LOSS, data, flat, loss_fn, model, train

from dynopt.optim import BBI, DDPNOpt, Langevin, Partitioned

S = torch.optim.lr_scheduler


def _schedule(step: int) -> float:
    """A module-level lr schedule (picklable)."""
    return 0.1 / (1.0 + 0.5 * step)


def _with_schedule(name: str, m: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "Langevin":
        return Langevin(m.parameters(), lr=_schedule, temperature=1e-3, seed=0)
    if name == "BBI":
        return BBI(m.parameters(), lr=_schedule, seed=0)
    if name == "Partitioned":
        return Partitioned([{"params": m[0].parameters(), "dynamics": "nose-hoover"},
                            {"params": m[2].parameters(), "dynamics": "langevin"}],
                           lr=_schedule, temperature=1e-3, seed=0)
    return DDPNOpt(m, lr=_schedule, terminal_hessian="identity", seed=0)


def _state_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(_state_equal(a[k], b[k]) for k in a))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# --- a torch LR scheduler on an lr that is a dynopt schedule ---------------------------------
ARITHMETIC = {
    "LambdaLR": lambda o: S.LambdaLR(o, lambda s: 1.0),
    "LinearLR": lambda o: S.LinearLR(o, start_factor=0.5),
    "SWALR": lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=0.01),
}


@pytest.mark.parametrize("sched", list(ARITHMETIC))
@pytest.mark.parametrize("name", ["Langevin", "BBI", "Partitioned", "DDPNOpt"])
def test_torch_scheduler_on_a_dynopt_lr_schedule_is_refused_clearly(name, sched):
    """The scheduler multiplies the group's lr: it failed inside torch with "unsupported operand
    type(s) for *: 'function' and 'float'"; now the TypeError says what lr is and the way out."""
    opt = _with_schedule(name, model())
    with pytest.raises(TypeError, match=r"lr is a dynopt schedule \(<function _schedule.*"
                                        r"give the optimizer a number as lr"):
        ARITHMETIC[sched](opt)


@pytest.mark.parametrize("sched", [lambda o: S.StepLR(o, step_size=1),
                                   lambda o: S.CosineAnnealingLR(o, T_max=4)],
                         ids=["StepLR", "CosineAnnealingLR"])
def test_schedulers_are_refused_where_they_compute(sched):
    """StepLR and CosineAnnealingLR compute at their first step: the same clear TypeError
    there."""
    m = model()
    opt = _with_schedule("Langevin", m)
    scheduler = sched(opt)
    train(m, opt, data(1), "Langevin")
    with pytest.raises(TypeError, match="lr is a dynopt schedule"):
        scheduler.step()


def test_reduce_lr_on_plateau_is_refused_at_its_first_reduction():
    """ReduceLROnPlateau takes float(lr) when it reduces (float() of a function was a bare
    "float() argument must be a string or a real number, not 'function'")."""
    opt = _with_schedule("Langevin", model())
    plateau = S.ReduceLROnPlateau(opt, patience=0)
    plateau.step(1.0)
    with pytest.raises(TypeError, match="lr is a dynopt schedule"):
        plateau.step(2.0)


def test_hugging_face_trainer_with_a_dynopt_lr_schedule_is_refused_clearly(tmp_path):
    """The Trainer always attaches a scheduler (constant: LambdaLR(lambda _: 1)), which
    multiplies the lr."""
    transformers = pytest.importorskip("transformers")
    net = model()

    class HFModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, y):
            return {"loss": loss_fn(self.net, x, y)}

    x, y = data(1, batch=4)[0]
    ds = [{"x": x[i], "y": y[i]} for i in range(4)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1,
        lr_scheduler_type="constant", report_to="none", disable_tqdm=True,
        logging_strategy="no", save_strategy="no", use_cpu=True)
    opt = _with_schedule("Langevin", net)
    trainer = transformers.Trainer(model=HFModel(), args=args, train_dataset=ds,
                                   optimizers=(opt, None))
    with warnings.catch_warnings(), pytest.raises(TypeError, match="lr is a dynopt schedule"):
        warnings.simplefilter("ignore")
        trainer.train()


@pytest.mark.parametrize("name", ["Langevin", "Partitioned"])
def test_an_lr_schedule_still_drives_the_step_and_copies(name):
    """The schedule, as the group holds it, is the given function (inspect.unwrap finds it),
    is evaluated at the step counter, and a pickled or deep-copied optimizer continues it bit
    for bit; the run equals one whose lr is set to the same values by hand."""
    batches = data(6)
    m1, m2 = model(), model()
    o1 = _with_schedule(name, m1)
    o2 = _with_schedule(name, m2)
    for g in o2.param_groups:
        g["lr"] = _schedule(0)
    assert inspect.unwrap(o1.param_groups[0]["lr"]) is _schedule
    for i, batch in enumerate(batches[:3]):
        for g in o2.param_groups:
            g["lr"] = _schedule(i)
        train(m1, o1, [batch], name)
        train(m2, o2, [batch], name)
    assert torch.equal(flat(m1), flat(m2))
    m3, o3 = pickle.loads(pickle.dumps((m1, o1)))
    m4, o4 = copy.deepcopy((m1, o1))
    for i, batch in enumerate(batches[3:], start=3):
        for g in o2.param_groups:
            g["lr"] = _schedule(i)
        for m, o in ((m1, o1), (m2, o2), (m3, o3), (m4, o4)):
            train(m, o, [batch], name)
    assert torch.equal(flat(m1), flat(m2))
    assert torch.equal(flat(m3), flat(m1)) and torch.equal(flat(m4), flat(m1))


# --- torch.distributed.checkpoint's state-dict helpers ----------------------------------------
@pytest.mark.parametrize("name", ["Langevin", "ECDSep"])
def test_distributed_checkpoint_state_dict_is_refused_naming_it(name):
    """get_optimizer_state_dict keeps only 'state' and 'param_groups' (keyed by parameter
    name), so dynopt's entry (noise generators, step counter, thermostats) is lost: loading it
    is refused naming torch.distributed.checkpoint and the way out, and changes nothing."""
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    m = model()
    opt = FACTORIES[name](m, seed=1)
    train(m, opt, data(2), name)
    dcp_sd = get_optimizer_state_dict(m, opt)
    assert "dynopt" not in dcp_sd
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"no 'dynopt' entry: its param groups list parameters "
                                         r"by name, as torch\.distributed\.checkpoint's .*"
                                         rf"Checkpoint {type(opt).__name__}\.state_dict\(\) "
                                         r"itself"):
        set_optimizer_state_dict(m, opt, dcp_sd)
    assert _state_equal(opt.state_dict(), before)


# --- what works: schedulers and optimizers resume together, bit for bit ----------------------
RESUMABLE = {
    # CyclicLR drives Langevin's friction through momentum, as OneCycleLR does
    "cyclic-momentum": ("Langevin", lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1,
                                                         step_size_up=2,
                                                         cycle_momentum=True), {}),
    "plateau": ("NoseHoover", lambda o: S.ReduceLROnPlateau(o, patience=0, factor=0.5), {}),
    "sequential": ("BBI", lambda o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.1, total_iters=2), S.ExponentialLR(o, 0.9)],
        milestones=[2]), {}),
    "chained": ("AdLaLa", lambda o: S.ChainedScheduler(
        [S.ConstantLR(o, factor=0.5, total_iters=5), S.ExponentialLR(o, 0.9)]), {}),
    # the scheduler writes into the tensor in place (fill_)
    "tensor-lr": ("ECDSep", lambda o: S.LambdaLR(o, lambda s: 1 / (1 + s)),
                  {"lr": lambda: torch.tensor(0.05)}),
}


@pytest.mark.parametrize("case", list(RESUMABLE))
def test_scheduler_and_optimizer_resume_bit_exact_from_weights_only_checkpoint(case):
    name, make, kw = RESUMABLE[case]
    batches = data(8)

    def build(m, seed):
        opt = FACTORIES[name](m, seed=seed, **{k: v() for k, v in kw.items()})
        return opt, make(opt)

    def run(m, opt, sched, bs):
        for x, y in bs:
            opt.zero_grad()
            loss = loss_fn(m, x, y)
            loss.backward()
            opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()
            sched.step(loss.item()) if case == "plateau" else sched.step()

    m = model()
    opt, sched = build(m, 3)
    run(m, opt, sched, batches)
    ref = flat(m)
    m = model()
    opt, sched = build(m, 3)
    run(m, opt, sched, batches[:4])
    buf = io.BytesIO()
    torch.save({"m": m.state_dict(), "o": opt.state_dict(), "s": sched.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    m2 = model(5)
    opt2, sched2 = build(m2, 99)
    m2.load_state_dict(ck["m"])
    opt2.load_state_dict(ck["o"])
    sched2.load_state_dict(ck["s"])
    run(m2, opt2, sched2, batches[4:])
    assert torch.equal(flat(m2), ref)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_grad_scaler_skip_leaves_every_optimizer_untouched(name):
    """An inf gradient under a GradScaler (autocast fp16 on CPU): the scaler skips the step;
    parameters, state_dict (generators, counters, thermostats) and step count are unchanged."""
    m = model(dtype=torch.float32)
    opt = FACTORIES[name](m, seed=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for i, (x, y) in enumerate(data(3, dtype=torch.float32)):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_fn(m, x, y)
        scaler.scale(loss).backward()
        if name in NEEDS_LOSS:
            opt.observe_loss(loss)
        if i == 2:
            before, sd = flat(m), copy.deepcopy(opt.state_dict())
            m[0].weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
    assert torch.equal(flat(m), before) and _state_equal(opt.state_dict(), sd)
    assert opt.step_count == 2 and scaler.get_scale() == 2.0**9


# --- Lightning: an optimizer with a scheduler dict, seed from seed_everything ----------------
def _lightning(epochs, ckpt_in=None, ckpt_out=None):
    pl = pytest.importorskip("pytorch_lightning")

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model()

        def training_step(self, batch, batch_idx):
            return loss_fn(self.net, *batch)

        def configure_optimizers(self):
            opt = FACTORIES["Langevin"](self.net, seed=None)
            sched = S.OneCycleLR(opt, max_lr=0.1, total_steps=16)  # cycles the friction too
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    pl.seed_everything(0, verbose=False)
    x, y = (torch.cat(t) for t in zip(*data(2), strict=True))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    module = Module()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.environ.setdefault("PL_DISABLE_FORK", "1")
        trainer.fit(module, loader, ckpt_path=ckpt_in)
    if ckpt_out is not None:
        trainer.save_checkpoint(ckpt_out)
    return flat(module.net)


def test_lightning_scheduler_dict_resume_is_bit_exact(tmp_path):
    """configure_optimizers returning Langevin (seed=None: drawn under seed_everything) with a
    per-step OneCycleLR that cycles lr and friction; Trainer.fit(ckpt_path=...) continues bit for
    bit."""
    ref = _lightning(4)
    path = str(tmp_path / "mid.ckpt")
    _lightning(2, ckpt_out=path)
    assert torch.equal(_lightning(4, ckpt_in=path), ref)
