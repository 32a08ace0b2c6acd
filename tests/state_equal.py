"""Bit-for-bit equality of optimizer state dicts and other nested checkpoint trees."""

from __future__ import annotations

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
