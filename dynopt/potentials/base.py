"""The potential interface: U(q), ∇U(q) and ΔU(q) for numpy, torch and numba.

A potential is evaluated in three places:

* numpy arrays (diagnostics such as the configurational temperature),
* torch tensors (the torch backend, on CPU or GPU),
* inside the fused numba kernel (the numba backend).

Built-in potentials write their formulas once in "array form" (operations that numpy and torch
share, see :func:`namespace`) and once as a scalar numba loop in
:mod:`dynopt.backends.numba.potentials`; ``tests/test_potentials.py`` checks that the two agree
and that the gradient matches autograd. All array-form methods take ``q`` with shape
``(..., dim)`` and return shape ``(...)`` (value, laplacian) or ``(..., dim)`` (grad).
"""

from __future__ import annotations

import abc
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch

from .._validation import check_int

__all__ = ["AbstractPotential", "namespace"]

Array = Any  # np.ndarray or torch.Tensor


def namespace(q: Array) -> ModuleType:
    """Return ``torch`` for tensors and ``numpy`` otherwise (the array-API namespace of ``q``)."""
    return torch if isinstance(q, torch.Tensor) else np


class AbstractPotential(abc.ABC):
    """A potential energy U: R^dim -> R, batched over leading axes.

    Attributes:
        dim: Number of coordinates.
        numba_kind: Integer id of the built-in numba implementation (0 for user potentials,
            which supply their own compiled functions instead; see :class:`Custom`).
        backends: The backends that can integrate it; the first is the default of
            ``integrate()`` (a :class:`NetworkLoss` is torch-only).
        stochastic: Whether ``grad`` is a minibatch estimate; the backends then call
            ``grad(q, batch=k)`` / ``value(q, batch=k)`` with the gradient-evaluation counter k
            (:mod:`dynopt.potentials.minibatch`).
    """

    numba_kind: ClassVar[int] = 0
    name: ClassVar[str] = "potential"
    backends: ClassVar[tuple[str, ...]] = ("numba", "torch")
    stochastic: bool = False

    def __init__(self, dim: int) -> None:
        self.dim = check_int("dim", dim, minimum=1)

    # --- array form -------------------------------------------------------------------------
    @abc.abstractmethod
    def value(self, q: Array) -> Array:
        """U(q), shape ``q.shape[:-1]``."""

    @abc.abstractmethod
    def grad(self, q: Array) -> Array:
        """∇U(q), shape ``q.shape``."""

    def laplacian(self, q: Array) -> Array:
        """ΔU(q) = tr ∇²U(q); the default uses torch autograd (exact, one pass per coordinate)."""
        is_numpy = not isinstance(q, torch.Tensor)
        x = torch.as_tensor(np.asarray(q) if is_numpy else q).detach()
        x = x.to(torch.float64).requires_grad_(True)
        g = self.grad_autograd(x, create_graph=True)
        lap = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for i in range(self.dim):
            (hii,) = torch.autograd.grad(g[..., i].sum(), x, retain_graph=True)
            lap = lap + hii[..., i]
        out = lap.detach()
        return out.numpy() if is_numpy else out.to(q.dtype)

    def grad_autograd(self, x: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        """∇U by autograd on :meth:`value` (``create_graph=True`` to differentiate it again, as
        the default laplacian does)."""
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.value(x).sum(), x, create_graph=create_graph)
        return g

    # --- numba form ---------------------------------------------------------------------------
    def numba_params(self) -> np.ndarray:
        """Float64 parameter vector read by the built-in numba implementation."""
        return np.zeros(1)

    def numba_functions(self) -> tuple[Any, Any] | None:
        """``(value, grad)`` first-class numba functions for user potentials, else ``None``."""
        return None

    def check_dim(self, dim: int, name: str = "q0") -> None:
        """Raise ValueError if ``dim`` coordinates per chain do not fit (``name``: the argument
        that holds them, for the message)."""
        if dim != self.dim:
            raise ValueError(
                f"{name} has {dim} coordinate(s) per chain but the potential {self!r} has "
                f"dim={self.dim}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"
