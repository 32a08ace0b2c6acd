"""Wrapping a user's own potential for both backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch

from .base import AbstractPotential, Array


class Custom(AbstractPotential):
    r"""A potential given by user functions.

    The torch backend and the diagnostics use the *array-form* callables, the numba backend uses
    the *numba* callables. Supply whichever backends you need:

    * ``value(q)`` / ``grad(q)``: take ``q`` of shape ``(..., dim)`` (a torch tensor on the torch
      backend, a numpy array in diagnostics) and return ``(...)`` / ``(..., dim)``. If ``grad`` is
      omitted it is computed by torch autograd from ``value``.
    * ``numba_value(q) -> float`` and ``numba_grad(q, out) -> None`` act on one configuration
      ``q`` of shape ``(dim,)`` and must be numba-compilable (plain Python functions are jitted
      with ``numba.njit``). The fused kernel calls them through a function pointer, so the kernel
      itself stays compiled and cached; only these two small functions compile per session.

    Example:
        >>> import numpy as np, dynopt
        >>> def U(q):            # works for numpy arrays and torch tensors, q: (..., 2)
        ...     return (q**4).sum(-1) - q[..., 0] * q[..., 1]
        >>> def nU(q):           # one configuration, numba-compilable
        ...     return q[0]**4 + q[1]**4 - q[0] * q[1]
        >>> def ngU(q, out):
        ...     out[0] = 4 * q[0]**3 - q[1]
        ...     out[1] = 4 * q[1]**3 - q[0]
        >>> pot = dynopt.potentials.Custom(2, value=U, numba_value=nU, numba_grad=ngU)

    Args:
        dim: Number of coordinates.
        value: Array-form U (numpy/torch), optional.
        grad: Array-form ∇U, optional (autograd on ``value`` if omitted).
        numba_value: Numba-compilable U of one configuration, optional.
        numba_grad: Numba-compilable ∇U writing into ``out``, optional.
        laplacian: Array-form ΔU, optional (autograd if omitted).
        name: Label used in reports.
    """

    numba_kind = 0

    def __init__(
        self,
        dim: int,
        *,
        value: Callable[[Array], Array] | None = None,
        grad: Callable[[Array], Array] | None = None,
        numba_value: Callable[..., float] | None = None,
        numba_grad: Callable[..., None] | None = None,
        laplacian: Callable[[Array], Array] | None = None,
        name: str = "custom",
    ) -> None:
        super().__init__(dim)
        if value is None and numba_value is None:
            raise ValueError("Custom potential needs at least one of value= or numba_value=")
        if (numba_value is None) != (numba_grad is None):
            raise ValueError("numba_value and numba_grad must be given together")
        for label, fn in [("value", value), ("grad", grad), ("numba_value", numba_value),
                          ("numba_grad", numba_grad), ("laplacian", laplacian)]:
            if fn is not None and not callable(fn):
                raise TypeError(f"{label} must be callable, got {fn!r}")
        self._value = value
        self._grad = grad
        self._laplacian = laplacian
        self._numba_value = numba_value
        self._numba_grad = numba_grad
        self._compiled: tuple[Any, Any] | None = None
        self.label = name

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label

    def _need_array_form(self) -> Callable[[Array], Array]:
        if self._value is None:
            raise ValueError(
                f"potential {self.label!r} has no array-form value=; the torch backend and "
                "diagnostics need one (a function of q with shape (..., dim))"
            )
        return self._value

    def value(self, q: Array) -> Array:
        return self._need_array_form()(q)

    def grad(self, q: Array) -> Array:
        if self._grad is not None:
            return self._grad(q)
        if isinstance(q, torch.Tensor):
            return self.grad_autograd(q).detach()
        x = torch.as_tensor(np.asarray(q, dtype=np.float64))
        return self.grad_autograd(x).detach().numpy()

    def laplacian(self, q: Array) -> Array:
        if self._laplacian is not None:
            return self._laplacian(q)
        return super().laplacian(q)

    def numba_functions(self) -> tuple[Any, Any] | None:
        if self._numba_value is None:
            return None
        if self._compiled is None:
            uv = _jit(self._numba_value)
            ug = _jit(self._numba_grad)

            @numba.njit
            def value_fn(q: np.ndarray, par: np.ndarray) -> float:
                return uv(q)

            @numba.njit
            def grad_fn(q: np.ndarray, par: np.ndarray, out: np.ndarray) -> None:
                ug(q, out)

            self._compiled = (value_fn, grad_fn)
        return self._compiled

    def __repr__(self) -> str:
        return f"Custom({self.label!r}, dim={self.dim})"


def _jit(fn: Any) -> Any:
    if isinstance(fn, numba.core.dispatcher.Dispatcher):
        return fn
    return numba.njit(fn)
