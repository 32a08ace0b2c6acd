"""Bit-for-bit equality of optimizer state dicts and other nested checkpoint trees."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch


def same(a: Any, b: Any) -> bool:
    """Deep equality of state dicts / trees (tensors bit for bit, NaN == NaN)."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def snapshot(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[list, list, dict]:
    """Clones of the parameters, of every per-parameter optimizer state entry (empty: {}) and of
    the optimizer-level state (``global_state``, where the optimizer has one)."""
    params = [p.detach().clone() for p in model.parameters()]
    state = [copy.deepcopy(dict(opt.state.get(p, {}))) for p in model.parameters()]
    return params, state, copy.deepcopy(getattr(opt, "global_state", {}))


def assert_unchanged(model: torch.nn.Module, opt: torch.optim.Optimizer, before: tuple, *,
                     global_state: bool = True) -> None:
    """The parameters and the optimizer state are bit for bit those of :func:`snapshot`
    (``global_state=False``: apart from the optimizer-level state, e.g. after a skipped step,
    which counts itself there)."""
    params, state, glob = before
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    for p, saved in zip(model.parameters(), state, strict=True):
        assert same(dict(opt.state.get(p, {})), saved)
    if global_state:
        assert same(copy.deepcopy(getattr(opt, "global_state", {})), glob)
