"""Validation of a :class:`~dynopt.potentials.NetworkLoss`: what cannot work, said up front."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["check_data", "check_model", "probe"]


def check_model(model: Any) -> list[tuple[str, torch.Tensor]]:
    """The model's named parameters, after checking they can form a flat θ.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or a parameter is not floating point.
        ValueError: The model has no parameters, or a module would make U random or stateful
            (Dropout / BatchNorm in training mode).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {model!r}")
    named = list(model.named_parameters())
    if not named:
        raise ValueError(f"model has no parameters: {type(model).__name__}")
    _refuse_reused_modules(model)
    for name, p in named:
        if not p.is_floating_point() or p.is_complex():
            raise TypeError(f"model parameter {name!r} has dtype {p.dtype}; NetworkLoss needs "
                            "floating-point parameters (θ is a real vector)")
    for mname, mod in model.named_modules():
        if not mod.training:
            continue
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
            raise ValueError(
                f"model module {mname or type(mod).__name__!r} ({type(mod).__name__}) is in "
                "training mode: its forward updates running statistics, so U(θ) would change "
                "with every call; call model.eval() first (or use track_running_stats=False)")
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0:
            raise ValueError(
                f"model module {mname or type(mod).__name__!r} ({type(mod).__name__}, "
                f"p={mod.p}) is in training mode: it makes U(θ) random; call model.eval() first")
    return named


def _refuse_reused_modules(model: nn.Module) -> None:
    """A module object at two places of the model (``Sequential(l, act, l)``): torch.func's
    functional_call then leaves a batched tensor in the module after a vmapped call, and the
    fast MLP path would see it once. Weights tied between two distinct modules are fine."""
    seen: dict[int, str] = {}
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        prefix, mod = stack.pop()
        for name, child in mod._modules.items():
            if child is None:
                continue
            full = f"{prefix}{name}"
            if id(child) in seen:
                raise ValueError(
                    f"model module {full!r} is the same object as {seen[id(child)]!r}; "
                    "NetworkLoss needs each position to be its own module (to share weights, "
                    "tie the parameters of two modules instead)")
            if any(True for _ in child.parameters(recurse=False)):
                seen[id(child)] = full
            stack.append((full + ".", child))


def check_data(name: str, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` as an ``(inputs, targets)`` pair of tensors with the same number of examples."""
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (inputs, targets) of tensors, got "
                        f"{type(data).__name__}")
    x, y = data
    for part, t in (("inputs", x), ("targets", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} {part} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim == 0:
            raise ValueError(f"{name} {part} must have an example axis, got a 0-d tensor")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name} has {x.shape[0]} inputs but {y.shape[0]} targets")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no examples")
    for part, t in (("inputs", x), ("targets", y)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} {part} contain NaN or inf")
    return x, y


def probe(model: nn.Module, loss_fn: Callable[..., Any], name: str,
          data: tuple[torch.Tensor, torch.Tensor], *, batch_size: int | None = None) -> None:
    """Run the model and the loss on two examples: shapes must fit, buffers must not change and
    the loss must be a finite scalar; with minibatches (``batch_size``) it must be a batch
    *mean*, not a sum.

    Raises:
        ValueError: On a shape mismatch (the original error is chained), changed buffers, a
            non-scalar loss or, with ``batch_size``, a loss that sums over the batch.
    """
    ref = next(model.parameters())

    def like(t: torch.Tensor) -> torch.Tensor:  # the model evaluates in θ's dtype, so may we
        t = t[:2].to(ref.device)
        # a copy: the probe must not touch the user's data, whatever the model does to its input
        return (t.to(ref.dtype) if t.is_floating_point() else t).clone()

    x, y = like(data[0]), like(data[1])
    x_in = x.clone()
    before = {k: b.detach().clone() for k, b in model.named_buffers()}
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"{name} inputs of shape {tuple(data[0].shape)} do not fit the model: "
                         f"{err}") from err
    if not torch.equal(x, x_in):  # every evaluation would overwrite the stored data
        raise ValueError("the model changes its input in place (e.g. nn.ReLU(inplace=True) as "
                         "its first layer); NetworkLoss evaluates it on the stored data, which "
                         "it would overwrite: use inplace=False for the layers that see the input")
    for k, b in model.named_buffers():
        if k in before and not torch.equal(before[k], b.detach()):
            b.data.copy_(before[k])
            raise ValueError(f"model buffer {k!r} changed during a forward pass; NetworkLoss "
                             "needs a pure forward (call model.eval() first)")
    try:  # a broadcasting warning (e.g. targets (n,) against outputs (n, 1)) is an error here
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            val = loss_fn(out, y)
    except (RuntimeError, ValueError, TypeError, IndexError, UserWarning) as err:
        raise ValueError(f"loss_fn cannot compare the model output of shape {tuple(out.shape)} "
                         f"with {name} targets of shape {tuple(data[1].shape)}: {err}") from err
    if not isinstance(val, torch.Tensor) or val.numel() != 1 or val.ndim != 0:
        raise ValueError(f"loss_fn must return a scalar tensor (the mean loss of a batch), got "
                         f"{val!r}")
    if batch_size is not None and _sums(loss_fn, out, y, val):
        raise ValueError(
            f"loss_fn sums over the batch (the loss of two examples is a + b, not (a + b)/2: "
            f"reduction='sum'?); with batch_size={batch_size} a minibatch loss would then be "
            "an estimate of b/n times U, and its gradient biased by that factor. NetworkLoss "
            "needs the batch mean (reduction='mean'); the Gibbs density exp(-U/τ) of the mean "
            "loss is the posterior of the summed loss at temperature τ·n")


def _sums(loss_fn: Callable[..., Any], out: torch.Tensor, y: torch.Tensor,
          both: torch.Tensor) -> bool:
    """Whether ``loss_fn`` adds the losses of the examples instead of averaging them: its
    value on two examples is a + b (within rounding) and clearly not (a + b)/2, with a and b
    its values on each example alone (slices of the same output: no second forward)."""
    if out.ndim == 0 or out.shape[0] < 2 or y.ndim == 0 or y.shape[0] < 2:
        return False
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = float(loss_fn(out[:1], y[:1]))
            b = float(loss_fn(out[1:2], y[1:2]))
    except (RuntimeError, ValueError, TypeError, IndexError):
        return False  # a loss that needs more than one example: not decidable here
    ab, scale = float(both), abs(a) + abs(b)
    if not (scale > 0 and all(map(math.isfinite, (a, b, ab)))):
        return False
    return abs(ab - (a + b)) <= 1e-4 * scale and abs(ab - 0.5 * (a + b)) > 1e-2 * scale
