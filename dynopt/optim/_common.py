"""Helpers shared by the optimizer modules: parameters from a module, first-layer split."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

__all__ = ["as_params", "first_layer_groups"]


def as_params(model_or_params: Any) -> Iterable[Any]:
    """The parameters of a module, or ``model_or_params`` itself."""
    if isinstance(model_or_params, nn.Module):
        return model_or_params.parameters()
    return model_or_params


def first_layer_groups(model_or_params: Any) -> Any:
    """Two param groups for a module: the first submodule that owns parameters (e.g. the first
    ``Linear``: weight and bias) and everything else. Param groups pass through unchanged."""
    if not isinstance(model_or_params, nn.Module):
        return model_or_params
    first = next((m for m in model_or_params.modules()
                  if any(True for _ in m.parameters(recurse=False))), None)
    if first is None:
        raise ValueError("the module has no parameters")
    head = list(first.parameters(recurse=False))
    ids = {id(p) for p in head}
    rest = [p for p in model_or_params.parameters() if id(p) not in ids]
    if not rest:
        raise ValueError("the module has a single parameterized layer; a partitioned optimizer "
                         "needs at least two param groups")
    return [{"params": head}, {"params": rest}]
