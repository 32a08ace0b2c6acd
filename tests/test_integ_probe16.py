"""dynopt optimizers in the tools people train with (session 16): an ``lr`` given as a dynopt
schedule reads as its current value in the real Lightning ``LearningRateMonitor``, the Hugging
Face Trainer's logs and checkpoints, and a logging line, while code that computes with it (torch
LR schedulers) is still refused; tiny models built in code, CPU, files only under tmp_path."""

from __future__ import annotations

import copy
import json
import math
import pickle
import warnings

import numpy as np
import pytest
import torch

from dynopt.optim import Langevin
from dynopt.optim.base import LRSchedule


def _schedule(step: int) -> float:
    return 0.05 / (1.0 + step)


def _stepped(opt: torch.optim.Optimizer, model: torch.nn.Module, n: int) -> None:
    for _ in range(n):
        opt.zero_grad()
        model(torch.ones(1, 3)).sum().backward()
        opt.step()


def test_a_schedule_lr_reads_as_the_value_the_next_step_uses():
    """The group held the schedule as an object that neither formatted (f"{lr:.3g}" raised
    "unsupported format string"), nor converted (float(), torch.tensor, numpy, JSON). It now
    reads as fn(step_count): the lr the next step uses, as a torch scheduler leaves a number
    lr; after a load, at the loaded step; copies keep both the schedule and the value."""
    model = torch.nn.Linear(3, 1)
    opt = Langevin(model.parameters(), lr=_schedule, seed=0)
    lr = opt.param_groups[0]["lr"]
    assert f"{lr:.3g}" == "0.05" and str(lr) == "0.05" and float(lr) == 0.05
    _stepped(opt, model, 3)
    lr = opt.param_groups[0]["lr"]
    want = _schedule(3)
    assert isinstance(lr, LRSchedule) and lr.fn is _schedule
    assert f"{lr:.4f}" == "0.0125" and float(lr) == want and repr(lr) == repr(want)
    assert torch.tensor(lr, dtype=torch.float64).item() == want and float(np.asarray(lr)) == want
    assert json.loads(json.dumps({"lr": lr})) == {"lr": want}
    assert lr < 0.02 and round(lr, 4) == 0.0125
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        g = other.param_groups[0]["lr"]
        assert isinstance(g, LRSchedule) and g.fn is _schedule and float(g) == want
    fresh = Langevin(torch.nn.Linear(3, 1).parameters(), lr=_schedule, seed=0)
    assert float(fresh.param_groups[0]["lr"]) == _schedule(0)
    fresh.load_state_dict(opt.state_dict())
    assert float(fresh.param_groups[0]["lr"]) == want


def test_a_schedule_lr_still_refuses_to_be_computed_with():
    """Reading is not computing: a torch scheduler's arithmetic, and float() inside torch's
    lr_scheduler (ReduceLROnPlateau reads float(lr), then multiplies), still refuse with the
    message that names the schedule, instead of silently replacing it by a number."""
    model = torch.nn.Linear(3, 1)
    opt = Langevin(model.parameters(), lr=_schedule, seed=0)
    lr = opt.param_groups[0]["lr"]
    for compute in (lambda: lr * 0.5, lambda: 0.5 * lr, lambda: lr - 1e-3, lambda: lr ** 2,
                    lambda: -lr, lambda: abs(lr), lambda: lr // 1, lambda: lr % 1.0,
                    lambda: lr / 2, lambda: 1e-3 + lr):
        with pytest.raises(TypeError, match=r"lr is a dynopt schedule \(<function _schedule"):
            compute()
    with pytest.raises(TypeError, match="lr is a dynopt schedule"):
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    plateau.step(1.0)
    with pytest.raises(TypeError, match="lr is a dynopt schedule"):
        plateau.step(2.0)  # no improvement: it reduces
    assert isinstance(opt.param_groups[0]["lr"], LRSchedule)
    transformers_optimization = pytest.importorskip("transformers.optimization")
    greedy = transformers_optimization.GreedyLR(opt, patience=0, min_lr=0.0)
    with pytest.raises(TypeError, match="lr is a dynopt schedule"):
        greedy.step(1.0)  # an improvement: it raises lr, float(lr) / factor
    assert isinstance(opt.param_groups[0]["lr"], LRSchedule)


def test_an_lr_function_assigned_after_construction_is_wrapped_at_the_step():
    """A function assigned to group["lr"] after construction stayed a bare function: it
    stepped, but a torch scheduler attached later failed inside torch ("unsupported operand
    type(s) for *: 'function' and 'float'") and loggers could not read it. The step now wraps
    it as construction does; the run equals one built with the schedule."""
    torch.manual_seed(0)
    ref_model = torch.nn.Linear(3, 1)
    model = copy.deepcopy(ref_model)
    ref = Langevin(ref_model.parameters(), lr=_schedule, seed=0)
    opt = Langevin(model.parameters(), lr=0.1, seed=0)
    opt.param_groups[0]["lr"] = _schedule
    _stepped(ref, ref_model, 2)
    _stepped(opt, model, 2)
    assert torch.equal(model.weight, ref_model.weight)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, LRSchedule) and lr.fn is _schedule and float(lr) == _schedule(2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    with warnings.catch_warnings(), pytest.raises(TypeError, match=r"lr is a dynopt schedule "
                                                                  r"\(<function _schedule"):
        warnings.simplefilter("ignore")  # (scheduler stepped before the optimizer)
        sched.step()


def test_a_schedule_that_fails_reads_as_nan_and_the_step_names_it():
    """Reading the value never raises (a logger must not crash a run); the step that would use
    an invalid value raises as before, naming the schedule value and the step."""
    model = torch.nn.Linear(3, 1)
    opt = Langevin(model.parameters(), lr=lambda s: -1.0 if s >= 1 else 0.1, seed=0)
    _stepped(opt, model, 1)
    assert float(opt.param_groups[0]["lr"]) == -1.0
    opt.param_groups[0]["lr"] = lambda s: 1 / 0
    assert callable(opt.param_groups[0]["lr"])
    with pytest.raises(ZeroDivisionError):
        _stepped(opt, model, 1)
    assert math.isnan(opt.param_groups[0]["lr"])  # wrapped after the failed step
    opt.param_groups[0]["lr"] = lambda s: -1.0
    with pytest.raises(ValueError, match=r"lr \(schedule value at step 1\) .*-1"):
        _stepped(opt, model, 1)


# --- the real frameworks -------------------------------------------------------------------
def test_lightning_learning_rate_monitor_logs_a_schedule_lr(tmp_path):
    """Lightning's LearningRateMonitor put group["lr"] into torch.tensor(): with a dynopt
    schedule, fit() died with "Could not infer dtype of LRSchedule". It now logs the schedule's
    value at each step."""
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return Langevin(self.parameters(), lr=_schedule, seed=0)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 3, generator=g),
                                          torch.randn(16, 1, generator=g))
    monitor = LearningRateMonitor(logging_interval="step")
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=CSVLogger(tmp_path),
                         callbacks=[monitor], log_every_n_steps=1, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
    assert [float(v) for v in monitor.lrs["lr-Langevin"]] == [_schedule(k) for k in range(3)]
    (csv,) = tmp_path.rglob("metrics.csv")
    rows = csv.read_text().split()
    assert rows[0] == "lr-Langevin,step"
    assert [float(r.split(",")[0]) for r in rows[1:]] == [_schedule(k) for k in range(3)]


def test_hf_trainer_logs_and_checkpoints_a_schedule_lr(tmp_path):
    """With a plateau scheduler (the one kind the Trainer does not compute with at every
    step) the Trainer logs param_groups[0]["lr"] as is: the log held the LRSchedule object and
    writing trainer_state.json at the checkpoint failed ("Object of type LRSchedule is not
    JSON serializable"). It now logs and saves the value (the lr after the step: dynopt's
    schedule advances inside optimizer.step)."""
    transformers = pytest.importorskip("transformers")
    from dynopt.integrations.huggingface import DynoptTrainer

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def forward(self, x, y):
            return {"loss": torch.nn.functional.mse_loss(self.net(x), y)}

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)
    ds = [{"x": x[i], "y": y[i]} for i in range(8)]
    model = Model()
    opt = Langevin(model.parameters(), lr=_schedule, seed=0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2,
        lr_scheduler_type="reduce_lr_on_plateau", lr_scheduler_kwargs={"patience": 100},
        eval_strategy="steps", eval_steps=2, label_names=["y"], logging_steps=1,
        save_strategy="steps", save_steps=2, report_to="none", disable_tqdm=True,
        use_cpu=True)
    trainer = DynoptTrainer(model=model, args=args, train_dataset=ds, eval_dataset=ds,
                            optimizers=(opt, None))
    trainer.remove_callback(transformers.PrinterCallback)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    saved = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [h["learning_rate"] for h in saved["log_history"] if "learning_rate" in h]
    assert logged == [_schedule(1), _schedule(2)]
