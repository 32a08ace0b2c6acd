"""Shared plumbing of every dynopt optimizer: the one path chooser, loss arguments, buckets.

:func:`choose_path` is the only place a path is picked: the executor-based optimizers
(:class:`~dynopt.optim.Partitioned` and its subclasses) and the hand-written ones
(:class:`~dynopt.optim.HeavyBall`, :class:`~dynopt.optim.BBI`, :class:`~dynopt.optim.ECDSep`)
all call it, so the same flags select the same path everywhere.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.graph import increment_version

__all__ = ["bucket", "choose_path", "device_of", "mark_written", "numba_jit_enabled", "numpy_view",
           "resolve_loss", "same_device"]

FUSED_DTYPES = (torch.float32, torch.float64)


def resolve_loss(closure_loss: Any, given: Any, owner: str, required: bool) -> Any:
    """The step's loss: the closure's, else ``step(loss=...)``'s; ValueError if required."""
    if closure_loss is not None and given is not None:
        raise ValueError(f"{owner}.step got both a closure and loss=; pass one of them")
    loss = closure_loss if closure_loss is not None else given
    if loss is None and required:
        raise ValueError(
            f"{owner} needs the loss value at the current parameters: call "
            f"step(closure) with a closure that returns the loss, or step(loss=loss) after "
            "loss.backward(), or observe_loss(loss) before step(); in a training framework use "
            "dynopt.integrations.huggingface.DynoptTrainer (Hugging Face Trainer) or the "
            "callback dynopt.integrations.lightning.FeedLoss (Lightning)")
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(f"loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
        if loss.dtype == torch.bool or loss.is_complex():
            raise TypeError(f"loss must be a real number, got a {loss.dtype} tensor")
    elif loss is not None:
        loss = _real_loss(loss)
    return loss


def _real_loss(loss: Any) -> float:
    """A non-tensor loss as a float (NaN/inf kept for the non-finite policy); bools, text and
    complex values are refused (``"0.5"`` and ``True`` were read as numbers)."""
    if isinstance(loss, np.ndarray) and loss.size == 1 and loss.dtype.kind in "iuf":
        return float(loss.reshape(()))
    if isinstance(loss, bool | np.bool_) or not isinstance(loss, numbers.Real):
        raise TypeError(f"loss must be a real number or a 1-element tensor, got {loss!r} of "
                        f"type {type(loss).__name__}")
    return float(loss)


_CPU = torch.device("cpu")


def device_of(t: Tensor) -> torch.device:
    """``t.device``, without creating a device object for CPU tensors (``t.device`` builds a
    new one per call, several times the cost of the other metadata reads in the per-step
    loops)."""
    return _CPU if t.is_cpu else t.device


def same_device(a: Tensor, b: Tensor) -> bool:
    """``a.device == b.device``, without device objects when both are on the CPU."""
    if a.is_cpu or b.is_cpu:
        return a.is_cpu and b.is_cpu
    return a.device == b.device


def numba_jit_enabled() -> bool:
    """False under ``NUMBA_DISABLE_JIT=1`` (a numba debugging setting), where dynopt's CPU
    kernels cannot run: they use numba intrinsics on raw memory, which have no pure-Python
    form. The optimizers then take their torch paths (the finite scan and the snapshot copy
    give the same results; the default path is foreach instead of fused), and ``fused=True``
    is refused by :func:`choose_path`."""
    from ..backends import numba_jit_disabled  # the one reading of the setting

    return not numba_jit_disabled()


def _fusable(tensors: Sequence[Tensor]) -> bool:
    # t.is_cpu, not t.device.type: a device object per tensor costs more than the rest
    return all(t.is_cpu and t.dtype in FUSED_DTYPES and t.is_contiguous() for t in tensors)


def choose_path(group: dict[str, Any], tensors: Sequence[Tensor], owner: str) -> str:
    """``"fused"`` (numba, CPU), ``"foreach"`` or ``"single"`` for a group's tensors.

    Default (``fused=None, foreach=None``): fused on CPU when every tensor is a contiguous
    float32/float64 CPU tensor, foreach otherwise (CUDA, bfloat16, non-contiguous);
    ``differentiable=True`` and ``foreach=False`` select the single-tensor reference path;
    ``fused=False`` selects foreach on CUDA and the single-tensor path on the CPU (torch's own
    CPU default), unless ``foreach=True``. Under ``NUMBA_DISABLE_JIT=1`` the default is foreach
    (its noise comes from torch's generator, as on CUDA) and ``fused=True`` is refused
    (:func:`numba_jit_enabled`). Under
    ``torch.compile`` the numba kernel runs eagerly (``torch.compiler.disable``), so the default
    path stays the fastest one on the CPU; ``foreach=True`` is what inductor can fuse.
    """
    fused, foreach = group.get("fused"), group.get("foreach")
    for flag, value in (("fused", fused), ("foreach", foreach)):
        if value is not None and type(value) is not bool:  # also when set after construction
            raise TypeError(f"{flag} must be None or a bool, got {value!r}")
    for flag in ("differentiable", "maximize"):
        if type(group.get(flag, False)) is not bool:
            raise TypeError(f"{flag} must be a bool, got {group[flag]!r}")
    if group.get("differentiable"):
        return "single"
    if fused:
        if not _fusable(tensors):
            raise ValueError(f"{owner}(fused=True) needs contiguous float32/float64 CPU tensors")
        if not numba_jit_enabled():
            raise RuntimeError(f"{owner}(fused=True) cannot run with NUMBA_DISABLE_JIT=1 (the "
                               "fused kernel uses numba intrinsics on raw memory, which have no "
                               "pure-Python form): unset NUMBA_DISABLE_JIT, or leave fused "
                               "unset (the foreach path runs instead)")
        return "fused"
    if fused is None and foreach is None and tensors and _fusable(tensors):
        return "fused" if numba_jit_enabled() else "foreach"
    if foreach or (foreach is None and tensors and tensors[0].device.type != "cpu"):
        return "foreach"
    return "single" if foreach is False or fused is False else "foreach"


def bucket(*lists: Sequence[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[list[Tensor]]]:
    """Group parallel lists of tensors by the (device, dtype) of the first list."""
    out: dict[tuple[torch.device, torch.dtype], list[list[Tensor]]] = {}
    for items in zip(*lists, strict=True):
        key = (items[0].device, items[0].dtype)
        slot = out.setdefault(key, [[] for _ in lists])
        for j, t in enumerate(items):
            slot[j].append(t)
    return out


def numpy_view(t: Tensor) -> np.ndarray:
    """A zero-copy 1-D numpy view of a contiguous CPU tensor."""
    return t.detach().view(-1).numpy()


def mark_written(tensors: Sequence[Tensor]) -> None:
    """Count a write through raw memory (numba) in each tensor's version counter, as an in-place
    torch op would: autograd then refuses a backward through a value the step changed, and
    :mod:`dynopt.optim.bound` sees the step's writes (inference tensors keep no counter)."""
    increment_version([t for t in tensors if not t.is_inference()])
