"""A small, explicit training loop shared by ``dynopt train`` and the reproductions."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._validation import check_int
from .data import Split, batches

__all__ = ["History", "accuracy", "evaluate", "fit", "train_from_cli"]

#: ``step(optimizer, closure, loss)``: how one optimizer step is taken. ``closure`` recomputes the
#: loss and gradients; ``loss`` is the minibatch loss whose gradients are already in ``.grad``.
StepFn = Callable[[torch.optim.Optimizer, Callable[[], torch.Tensor], torch.Tensor], Any]


def default_step(opt: torch.optim.Optimizer, closure: Callable[[], torch.Tensor],
                 loss: torch.Tensor) -> Any:
    return opt.step()


@dataclass
class History:
    """Per-evaluation metrics of a run.

    ``train_loss`` is the loss of the epoch's *last minibatch* (what the optimizer last saw;
    the reproductions report it as such), ``test_loss`` the full test set's; accuracies are on
    the full sets.
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "train_loss": self.train_loss, "test_loss": self.test_loss,
                "test_accuracy": self.test_accuracy, "train_accuracy": self.train_accuracy,
                "seconds": self.seconds}


def loss_function(split: Split) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """BCE on sigmoid outputs for binary tasks (as in the AdLaLa paper), cross-entropy otherwise."""
    if split.n_classes == 2 and split.y_train.dtype.is_floating_point:
        bce = nn.BCELoss()
        return lambda out, y: bce(out.reshape(-1), y)
    return nn.CrossEntropyLoss()


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction correct: rounding for a single sigmoid output, argmax otherwise."""
    if out.ndim == 1 or out.shape[-1] == 1:
        return float((out.reshape(-1).round() == y.reshape(-1)).float().mean())
    return float((out.argmax(-1) == y).float().mean())


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """(loss, accuracy) on a full set."""
    out = model(x)
    return float(loss_fn(out, y)), accuracy(out, y)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    eval_every: int = 1,
    step: StepFn = default_step,
    scheduler: Any = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    callback: Callable[[int, History], None] | None = None,
) -> History:
    """Train ``model`` with minibatches and record test metrics every ``eval_every`` epochs.

    The standard loop is ``zero_grad(); loss.backward(); step(optimizer, closure, loss)``; pass
    ``step`` to use an optimizer's own calling convention (e.g. ``opt.step(loss=loss)``).
    """
    epochs = check_int("epochs", epochs, minimum=0)
    eval_every = check_int("eval_every", eval_every, minimum=1)
    seed = check_int("seed", seed)  # (torch's manual_seed raised its own error for 1.5)
    loss_fn = loss_fn or loss_function(split)
    g = torch.Generator().manual_seed(seed)
    hist = History()
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        last = 0.0
        for xb, yb in batches(split.x_train, split.y_train, batch_size, g):

            def closure(xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
                optimizer.zero_grad()
                out = loss_fn(model(xb), yb)
                out.backward()
                return out

            loss = closure()
            step(optimizer, closure, loss)
            last = float(loss.detach())
        if scheduler is not None:
            scheduler.step()
        if epoch % eval_every == 0 or epoch == epochs:
            model.eval()
            te_loss, te_acc = evaluate(model, split.x_test, split.y_test, loss_fn)
            _, tr_acc = evaluate(model, split.x_train, split.y_train, loss_fn)
            hist.epoch.append(epoch)
            hist.train_loss.append(last)
            hist.test_loss.append(te_loss)
            hist.test_accuracy.append(te_acc)
            hist.train_accuracy.append(tr_acc)
            if callback is not None:
                callback(epoch, hist)
    hist.seconds = time.perf_counter() - t0
    return hist


def mlp(n_in: int, n_out: int, hidden: tuple[int, ...] = (100,), activation: type[nn.Module] =
        nn.ReLU, sigmoid_output: bool = False) -> nn.Sequential:
    """A plain MLP ``Linear-act-...-Linear`` (``-Sigmoid`` for binary BCE tasks)."""
    for name, n in (("n_in", n_in), ("n_out", n_out), *(("hidden", w) for w in hidden)):
        check_int(name, n, minimum=1)  # a zero-width layer was built without complaint
    layers: list[nn.Module] = []
    prev = n_in
    for width in hidden:
        layers += [nn.Linear(prev, width), activation()]
        prev = width
    layers.append(nn.Linear(prev, n_out))
    if sigmoid_output:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


#: Registry optimizers whose default step size is the spiral paper's h = 0.25.
_SPIRAL_TUNED = ("langevin", "adlala", "lol", "adaptive-langevin")


def train_from_cli(args: Any) -> int:
    """``dynopt train``: an MLP on the chosen data with a dynopt optimizer, printing metrics and
    the :class:`~dynopt.monitor.TrainingMonitor`'s records (see :func:`_run_monitored`).

    User errors (option values, optimizer name or hyperparameters, an unwritable ``--out``)
    are one line on stderr with exit status 2, before any training; a diverging run
    (:class:`~dynopt.errors.DivergenceError`) is one line with exit status 1; Ctrl-C writes the
    metrics of the epochs evaluated so far and returns 130. ``--optimizer`` takes any case
    (:func:`~dynopt.optim.registry.canonical_name`); outputs use the registered name.
    """
    import sys

    from . import data, optim
    from ._files import prepare_output_dir
    from ._validation import check_positive
    from .optim.registry import canonical_name

    def user_error(err: Exception) -> int:
        print(f"dynopt train: error: {err}", file=sys.stderr)
        return 2

    try:
        seed = check_int("--seed", args.seed, minimum=0, maximum=2**64 - 1)
        epochs = check_int("--epochs", args.epochs, minimum=1)
        every = check_int("--record-every", args.record_every, minimum=1)
        curv = getattr(args, "curvature_every", 0)
        curv = None if not curv else check_int("--curvature-every", curv, minimum=1)
        if args.lr is not None:
            check_positive("--lr", args.lr)
        name = canonical_name(args.optimizer)  # any case: "Langevin", "NoseHoover"
        out = prepare_output_dir(args.out, "--out", sub="train")
    except (ValueError, TypeError) as err:
        return user_error(err)
    args.optimizer = name  # the registered name in every output (file names, the JSON record)
    torch.manual_seed(seed)
    if args.data == "spirals":
        split = data.make_spirals(seed=seed)
        model = mlp(2, 1, (100,), sigmoid_output=True)
    elif args.data == "digits":
        split = data.load_digits_split(seed=seed)
        model = mlp(split.n_features, split.n_classes, (64,))
    else:
        split = data.load_wine_split(seed=seed)
        model = mlp(split.n_features, split.n_classes, (32,))
    kwargs: dict[str, Any] = {"seed": seed}
    if args.optimizer == "ddpnopt" and args.data == "spirals":
        # one sigmoid output under binary cross-entropy: the softmax cross-entropy Hessian
        # (DDPNOpt's default) does not apply; the outer-product factor fits any loss
        kwargs["terminal_hessian"] = "outer"
    if args.lr is not None:
        kwargs["lr"] = args.lr
    elif args.data != "spirals" and args.optimizer in _SPIRAL_TUNED:
        # the registry defaults are the spiral paper's h = 0.25; on the cross-entropy MLPs that
        # step is unstable, h = 0.1 is the value the adlala reproduction uses on digits
        kwargs["lr"] = 0.1
    try:
        opt = optim.make(args.optimizer, model, **kwargs)
    except (ValueError, TypeError) as err:
        return user_error(err)
    print(f"dynopt train: {type(opt).__name__} on {split.name}, "
          f"lr = {opt.param_groups[0]['lr']}, seed = {seed}")
    return _run_monitored(args, model, opt, split, out=out, seed=seed, epochs=epochs,
                          every=every, curvature_every=curv)


def _run_monitored(args: Any, model: nn.Module, opt: torch.optim.Optimizer, split: Split, *,
                   out: Any, seed: int, epochs: int, every: int,
                   curvature_every: int | None) -> int:
    """Train with a :class:`~dynopt.monitor.TrainingMonitor`; print, plot and save its records
    (atomically; on Ctrl-C the epochs evaluated so far are kept and 130 is returned)."""
    import sys

    from ._files import json_text, write_text_atomic  # standard JSON: NaN as null
    from .cli.train_report import final_table, format_window, make_plots, window_summary
    from .errors import DivergenceError
    from .monitor import TrainingMonitor

    loss_fn = loss_function(split)
    mon = TrainingMonitor(model, opt, loss_fn, (split.x_train, split.y_train), every=every,
                          curvature_every=curvature_every)
    tau = opt.param_groups[0].get("temperature")
    tau = tau if isinstance(tau, float | int) else None
    seen = [0]
    evaluated: list[History] = []
    name = f"{args.optimizer}-{args.data}"
    path = out / f"{name}.json"

    def step(o: torch.optim.Optimizer, closure: Callable[[], torch.Tensor], loss: torch.Tensor
             ) -> Any:
        # optimizers that read the loss (BBI, ECDSep) get the batch's, already back-propagated
        result = o.step(loss=loss.detach()) if getattr(o, "uses_loss", False) else o.step()
        mon.step()
        return result

    def report(e: int, h: History) -> None:
        evaluated[:] = [h]
        traj = mon.trajectory()
        s = window_summary(traj, seen[0])
        seen[0] = traj.n_draws
        print(f"epoch {e:5d}  last batch loss {h.train_loss[-1]:.4f}  "
              f"test loss {h.test_loss[-1]:.4f}  "
              f"test acc {100 * h.test_accuracy[-1]:.1f}%  {format_window(s)}")

    started = time.perf_counter()
    try:
        hist = fit(model, opt, split, epochs=epochs, batch_size=25, seed=seed,
                   eval_every=max(1, epochs // 10), step=step, loss_fn=loss_fn,
                   callback=report)
    except DivergenceError as err:  # a failed run: one line and status 1, as in dynopt study
        print(f"dynopt train: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if not evaluated:
            print("dynopt train: interrupted before the first evaluation; nothing to keep",
                  file=sys.stderr)
            return 130
        kept = {**evaluated[0].as_dict(), "seconds": time.perf_counter() - started,
                "interrupted": True, "monitor": _monitor_record(mon.trajectory())}
        write_text_atomic(path, json_text(kept, indent=None))
        _remove_stale_plot(out / name)
        print(f"dynopt train: interrupted after epoch {evaluated[0].epoch[-1]} of {epochs}; "
              f"kept the metrics evaluated so far in {path}", file=sys.stderr)
        return 130
    traj = mon.trajectory()
    print(final_table(traj, tau))
    record = hist.as_dict()
    record["monitor"] = _monitor_record(traj)
    if write_text_atomic(path, json_text(record, indent=None)):
        print(f"dynopt train: warning: replaced the existing {path}", file=sys.stderr)
    if not getattr(args, "no_plots", False):
        print(f"wrote {make_plots(traj, out / name, name, tau)}")
    else:
        _remove_stale_plot(out / name)
    print(f"wrote {path} ({hist.seconds:.1f} s)")
    return 0


def _remove_stale_plot(folder: Any) -> None:
    """Remove ``monitor.png`` of an earlier run (this one writes none: ``--no-plots`` or
    Ctrl-C), which would sit next to a JSON record that it does not show, and say so."""
    import sys

    from ._files import remove_stale

    for path in remove_stale(folder, ["monitor.png"]):
        print(f"dynopt train: warning: removed {path} of an earlier run (this run writes no "
              "plot)", file=sys.stderr)


def _monitor_record(traj: Any) -> dict[str, Any]:
    """The monitor's records as JSON lists (one chain): the step of each, every observable."""
    return {"step": traj.t.tolist(),
            **{k: v[0].tolist() for k, v in traj.extras.items() if v.ndim == 2}}
