"""dynopt optimizers in the real Hugging Face Trainer and PyTorch Lightning (tiny models built in
code, CPU, no downloads, no logging): the loss the dynamics sees equals a manual loop's, and
checkpoints resume bit for bit."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from optim_zoo import FACTORIES, flat

#: The loss-reading optimizers (their energy needs the mean loss of the accumulated batch).
NAMES = ("BBI", "ECDSep", "HeavyBall")


def _tiny(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(),
                               torch.nn.Linear(5, 1)).double()


def _dataset(n: int = 16):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1, keepdim=True))


def _manual(name: str, steps: int, micro: int, accum: int) -> torch.Tensor:
    """The reference: a plain loop over consecutive micro-batches, loss/accum back-propagated
    and observed, one step per window."""
    x, y = _dataset()
    m = _tiny()
    opt = FACTORIES[name](m, seed=4)
    i = 0
    for _ in range(steps):
        opt.zero_grad()
        for _ in range(accum):
            xb, yb = x[i:i + micro], y[i:i + micro]
            i = (i + micro) % len(x)
            loss = torch.nn.functional.mse_loss(m(xb), yb) / accum
            loss.backward()
            opt.observe_loss(loss)
        opt.step()
    return flat(m)


# --- Hugging Face Trainer ---------------------------------------------------------------------
class _HFModel(torch.nn.Module):
    """A tiny model with the Trainer's interface: forward(**batch) -> {"loss": ...}."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _tiny()

    def forward(self, x, y):
        return {"loss": torch.nn.functional.mse_loss(self.net(x), y)}


def _hf_run(name, tmp_path, *, max_steps, accum, resume=None, save_steps=None):
    transformers = pytest.importorskip("transformers")
    from dynopt.integrations.huggingface import DynoptTrainer

    class SequentialTrainer(DynoptTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    x, y = _dataset()
    ds = [{"x": x[i], "y": y[i]} for i in range(len(x))]
    model = _HFModel()
    opt = FACTORIES[name](model.net, seed=4)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2,
        gradient_accumulation_steps=accum, max_steps=max_steps, max_grad_norm=0.0,
        lr_scheduler_type="constant", report_to="none", disable_tqdm=True,
        logging_strategy="no", save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500, use_cpu=True, seed=0, dataloader_num_workers=0)
    trainer = SequentialTrainer(model=model, args=args, train_dataset=ds,
                                optimizers=(opt, None))
    trainer.remove_callback(transformers.PrinterCallback)  # quiet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(resume_from_checkpoint=resume)
    return flat(model.net)


@pytest.mark.parametrize("name", NAMES)
def test_hf_trainer_with_gradient_accumulation_equals_the_manual_loop(name, tmp_path):
    got = _hf_run(name, tmp_path, max_steps=4, accum=2)
    assert torch.equal(got, _manual(name, steps=4, micro=2, accum=2))


def test_hf_trainer_checkpoint_resume_is_bit_exact(tmp_path):
    ref = _hf_run("BBI", tmp_path / "a", max_steps=6, accum=2, save_steps=3)
    ckpt = tmp_path / "a" / "checkpoint-3"
    assert ckpt.is_dir()
    got = _hf_run("BBI", tmp_path / "b", max_steps=6, accum=2, resume=str(ckpt))
    assert torch.equal(got, ref)


def test_hf_trainer_weight_decay_groups_are_honoured(tmp_path):
    """The Trainer's own optimizer factory path: its param groups set weight_decay, which a
    dynopt optimizer now honours (a run with weight decay differs from one without)."""
    transformers = pytest.importorskip("transformers")
    from dynopt.integrations.huggingface import DynoptTrainer
    from dynopt.optim import HeavyBall

    x, y = _dataset()
    ds = [{"x": x[i], "y": y[i]} for i in range(len(x))]
    out = []
    for wd in (0.0, 0.5):
        model = _HFModel()
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3,
            weight_decay=wd, learning_rate=0.1, lr_scheduler_type="constant",
            report_to="none", disable_tqdm=True, logging_strategy="no", save_strategy="no",
            use_cpu=True, max_grad_norm=0.0)
        trainer = DynoptTrainer(model=model, args=args, train_dataset=ds,
                                optimizer_cls_and_kwargs=(HeavyBall, {"gamma": 0.5,
                                                                      "seed": 0}))
        trainer.remove_callback(transformers.PrinterCallback)
        trainer.train()
        groups = trainer.optimizer.optimizer.param_groups if hasattr(
            trainer.optimizer, "optimizer") else trainer.optimizer.param_groups
        assert len(groups) == 2 and {g["weight_decay"] for g in groups} == {0.0, wd}
        out.append(flat(model.net))
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("name", ["AdLaLa", "LOL"])
def test_hf_trainer_refuses_to_build_a_layer_partitioned_optimizer_from_its_groups(name,
                                                                                 tmp_path):
    """AdLaLa/LOL take group 0 as the first layer; built by the Trainer from its weight-decay
    groups they ran adaptive Langevin on every weight and Langevin on every bias, silently."""
    transformers = pytest.importorskip("transformers")
    import dynopt.optim as O
    from dynopt.integrations.huggingface import DynoptTrainer

    x, y = _dataset()
    ds = [{"x": x[i], "y": y[i]} for i in range(len(x))]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1,
        learning_rate=0.1, report_to="none", disable_tqdm=True, logging_strategy="no",
        save_strategy="no", use_cpu=True)
    trainer = DynoptTrainer(model=_HFModel(), args=args, train_dataset=ds,
                            optimizer_cls_and_kwargs=(getattr(O, name), {"seed": 0}))
    with pytest.raises(ValueError, match=rf"{name} partitions the network by layer .* "
                                         rf"dynopt.optim.make\('{name.lower()}', model\)"):
        trainer.train()


# --- Lightning --------------------------------------------------------------------------------
def _lightning_run(name, *, epochs, accum, ckpt_in=None, ckpt_out=None):
    pl = pytest.importorskip("pytorch_lightning")
    from dynopt.integrations.lightning import FeedLoss

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _tiny()

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return torch.nn.functional.mse_loss(self.net(xb), yb)

        def configure_optimizers(self):
            return FACTORIES[name](self.net, seed=4)

    x, y = _dataset()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2,
                                         shuffle=False)
    module = Module()
    trainer = pl.Trainer(max_epochs=epochs, accumulate_grad_batches=accum, accelerator="cpu",
                         devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[FeedLoss()], num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.environ.setdefault("PL_DISABLE_FORK", "1")
        trainer.fit(module, loader, ckpt_path=ckpt_in)
    if ckpt_out is not None:
        trainer.save_checkpoint(ckpt_out)
    return flat(module.net)


@pytest.mark.parametrize("name", NAMES)
def test_lightning_accumulate_grad_batches_equals_the_manual_loop(name):
    """accumulate_grad_batches=4: 16 examples / batch 2 = 8 micro-batches = 2 steps per epoch;
    the loss the dynamics sees is the mean over the 4 micro-batches (not the last one / 4)."""
    got = _lightning_run(name, epochs=2, accum=4)
    assert torch.equal(got, _manual(name, steps=4, micro=2, accum=4))


def test_lightning_checkpoint_resume_is_bit_exact(tmp_path):
    ref = _lightning_run("ECDSep", epochs=4, accum=2)
    path = str(tmp_path / "mid.ckpt")
    _lightning_run("ECDSep", epochs=2, accum=2, ckpt_out=path)
    got = _lightning_run("ECDSep", epochs=4, accum=2, ckpt_in=path)
    assert torch.equal(got, ref)


# --- seeding through the frameworks (seed=None) ------------------------------------------------
def test_hf_trainer_seed_makes_seed_none_reproducible(tmp_path):
    """The Trainer builds the optimizer after transformers.set_seed(args.seed): with seed=None
    the noise follows args.seed (same seed: identical runs; another seed: different)."""
    transformers = pytest.importorskip("transformers")
    from dynopt.integrations.huggingface import DynoptTrainer
    from dynopt.optim import Langevin

    x, y = _dataset()
    ds = [{"x": x[i], "y": y[i]} for i in range(len(x))]
    out = []
    for seed in (1, 1, 2):
        model = _HFModel()
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3, seed=seed,
            learning_rate=0.1, lr_scheduler_type="constant", report_to="none",
            disable_tqdm=True, logging_strategy="no", save_strategy="no", use_cpu=True,
            max_grad_norm=0.0, data_seed=0)
        trainer = DynoptTrainer(model=model, args=args, train_dataset=ds,
                                optimizer_cls_and_kwargs=(Langevin, {"temperature": 0.1}))
        trainer.remove_callback(transformers.PrinterCallback)
        trainer.train()
        out.append(flat(model.net))
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


def test_lightning_seed_everything_makes_seed_none_reproducible():
    pl = pytest.importorskip("pytorch_lightning")
    from dynopt.optim import Langevin

    start = _tiny().state_dict()  # (_tiny() seeds torch: done once, before the runs)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(),
                                           torch.nn.Linear(5, 1)).double()
            self.net.load_state_dict(start)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return Langevin(self.net.parameters(), lr=0.1, temperature=0.1)

    x, y = _dataset()
    out = []
    for seed in (5, 5, 6):
        pl.seed_everything(seed, verbose=False)
        module = Module()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                             batch_size=4)
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(module, loader)
        out.append(flat(module.net))
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


# --- skipped steps, several optimizers, step(loss=) through a framework's closure ------------
def test_zero_grad_drops_the_observed_loss_with_the_gradients():
    """A GradScaler that skips a step (non-finite fp16 gradients) calls neither step() nor
    anything else: the observed loss of the skipped window added to the next one's (the step
    after a skip saw twice the loss). It is cleared with the gradients now."""
    m = _tiny()
    opt = FACTORIES["BBI"](m, seed=4)
    opt.observe_loss(torch.tensor(0.75, dtype=torch.float64))   # the skipped window
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(m(_dataset()[0]), _dataset()[1])
    loss.backward()
    opt.observe_loss(loss)
    assert opt.step() == loss.detach()                          # its own loss, not + 0.75
    opt.observe_loss(1.0)
    opt.discard_observed_loss()
    assert opt._observed_loss is None


def test_hf_trainer_drops_the_loss_of_a_step_the_grad_scaler_skipped(tmp_path):
    transformers = pytest.importorskip("transformers")
    from dynopt.integrations import unwrap
    from dynopt.integrations.huggingface import DynoptTrainer

    seen = []

    class Skipping(DynoptTrainer):
        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            if self.state.global_step == 0:       # an fp16 overflow on the first step
                self.model.net[0].weight.grad[0, 0] = float("inf")
            return loss

    class Watch(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            seen.append(float(unwrap(optimizer)._observed_loss))

    x, y = _dataset()
    ds = [{"x": x[i], "y": y[i]} for i in range(len(x))]
    model = _HFModel()
    opt = FACTORIES["BBI"](model.net, seed=4)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=3,
        max_grad_norm=0.0, lr_scheduler_type="constant", report_to="none", disable_tqdm=True,
        logging_strategy="no", save_strategy="no", use_cpu=True, seed=0)
    trainer = Skipping(model=model, args=args, train_dataset=ds, optimizers=(opt, None),
                       callbacks=[Watch()])
    trainer.remove_callback(transformers.PrinterCallback)
    # what accelerate builds for fp16 on CUDA; on the CPU it builds none
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert opt.step_count == 2                  # the first step was skipped
    assert seen[1] == pytest.approx(seen[0], rel=1e-12)  # same parameters and batch: same loss
    assert seen[2] != seen[1]                   # (it was 2 × seen[0] before)


def _manual_lightning(step_with_loss: bool, n_optimizers: int, others: str = "BBI"):
    pl = pytest.importorskip("pytorch_lightning")
    from dynopt.integrations.lightning import FeedLoss

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.nets = torch.nn.ModuleList([_tiny(seed=k) for k in range(n_optimizers)])

        def training_step(self, batch, batch_idx):
            opts = self.optimizers()
            for opt, net in zip(opts if isinstance(opts, list) else [opts], self.nets,
                                strict=True):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(batch[0]), batch[1])
                self.manual_backward(loss)
                uses = getattr(getattr(opt, "optimizer", opt), "uses_loss", False)
                opt.step(loss=loss) if step_with_loss and uses else opt.step()

        def configure_optimizers(self):
            return [FACTORIES["BBI" if k == 0 else others](net, seed=4)
                    for k, net in enumerate(self.nets)]

    x, y = _dataset()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    module = Module()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[] if step_with_loss else [FeedLoss()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    return flat(module.nets[0])


def test_lightning_manual_optimization_takes_step_loss():
    """Lightning wraps every step in a closure of its own that returns None: step(loss=loss)
    was refused with "got both a closure and loss=". It equals the plain loop now."""
    assert torch.equal(_manual_lightning(True, 1), _manual("BBI", steps=2, micro=16, accum=1))


@pytest.mark.parametrize("others", ["BBI", "Langevin"])
def test_feed_loss_refuses_to_guess_between_two_optimizers(others):
    """It gave every optimizer every loss: optimizer b stepped on loss_a + loss_b. With one
    loss reader beside an optimizer that does not read it (a GAN's discriminator), the reader
    got its own loss plus the other's (BBI's energy on 5.54 instead of 0.26)."""
    with pytest.raises(ValueError, match=r"FeedLoss cannot tell which of the 2 optimizers "
                                         rf"\(BBI, {others}\).*BBI reads the loss"):
        _manual_lightning(False, 2, others)


@pytest.mark.parametrize("name", ["Langevin", "HeavyBall", "AdLaLa", "LOL", "Partitioned"])
def test_lightning_learning_rate_monitor_logs_momentum(name):
    """An unset momentum (None) sat in every param group (for OneCycleLR, which only needs it
    in the defaults); LearningRateMonitor(log_momentum=True) read it and failed with "Could not
    infer dtype of NoneType". Groups now leave it out: the monitor logs 0."""
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _tiny(seed=0)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return FACTORIES[name](self.net, seed=4)

    x, y = _dataset()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    module = Module()
    assert all("momentum" not in g for g in module.configure_optimizers().param_groups)
    monitor = LearningRateMonitor(logging_interval="step", log_momentum=True)
    import tempfile

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1,
                             logger=CSVLogger(d), callbacks=[monitor], log_every_n_steps=1,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(module, loader)
    momenta = [v for k, v in monitor.last_momentum_values.items() if v is not None]
    assert momenta and all(v == 0 for v in momenta)  # logged, as for an optimizer without one
    assert all(len(v) == 2 for v in monitor.lrs.values())


def test_onecycle_still_cycles_the_momentum_of_groups_without_one():
    from dynopt.optim import HeavyBall, Langevin

    for cls in (Langevin, HeavyBall):
        opt = cls(_tiny(seed=0).parameters(), lr=0.1)
        assert "momentum" not in opt.param_groups[0] and "momentum" in opt.defaults
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=10)
        assert opt.param_groups[0]["momentum"] == pytest.approx(0.95)


# --- feed_loss and FeedLoss by themselves (found by mutation testing) --------------------------------
class _Reader:
    """Duck-typed optimizer that reads the loss: records what observe_loss receives."""

    uses_loss = True

    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe_loss(self, loss) -> None:
        self.seen.append(float(loss))


def test_feed_loss_unwraps_framework_wrappers_and_feeds_only_loss_readers():
    """``feed_loss`` hands the loss to the innermost optimizer (through accelerate's
    ``.optimizer`` and Lightning's ``._optimizer``) if it reads the loss, and says so; an
    optimizer that does not read it (HeavyBall without loss events) gets nothing."""
    from types import SimpleNamespace

    from dynopt.integrations import feed_loss, unwrap
    from dynopt.optim import BBI, HeavyBall

    reader = _Reader()
    wrapped = SimpleNamespace(_optimizer=SimpleNamespace(optimizer=reader))
    assert unwrap(wrapped) is reader
    assert feed_loss(wrapped, torch.tensor(0.5)) is True and reader.seen == [0.5]
    w = torch.nn.Parameter(torch.ones(3))
    assert feed_loss(SimpleNamespace(_optimizer=HeavyBall([w], lr=0.1)), torch.tensor(1.0)) \
        is False
    assert feed_loss(BBI([w], lr=0.1, seed=0), torch.tensor(1.0)) is True


def test_lightning_feed_loss_divides_out_the_grad_scaler_scale():
    """Lightning back-propagates the scaled loss under a GradScaler: the callback hands the
    optimizer loss / scale (the loss the gradients are unscaled to)."""
    from types import SimpleNamespace

    from dynopt.integrations.lightning import FeedLoss

    reader = _Reader()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler),
                              optimizers=[reader])
    FeedLoss().on_before_backward(trainer, None, torch.tensor(512.0))
    assert reader.seen == [0.5]
    plain = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=None), optimizers=[reader])
    FeedLoss().on_before_backward(plain, None, torch.tensor(0.25))
    assert reader.seen == [0.5, 0.25]
