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
        if numba_value is None:  # only torch can evaluate it: the default backend is torch
            self.backends = ("torch",)

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
        return self._checked("value", self._need_array_form()(q), tuple(q.shape[:-1]))

    def grad(self, q: Array) -> Array:
        if self._grad is not None:
            return self._checked("grad", self._grad(q), tuple(q.shape))
        if isinstance(q, torch.Tensor):
            return self.grad_autograd(q).detach()
        x = torch.as_tensor(np.asarray(q, dtype=np.float64))
        return self.grad_autograd(x).detach().numpy()

    def laplacian(self, q: Array) -> Array:
        if self._laplacian is not None:
            return self._checked("laplacian", self._laplacian(q), tuple(q.shape[:-1]))
        return super().laplacian(q)

    def _checked(self, label: str, out: Any, shape: tuple[int, ...]) -> Any:
        """``out`` if it has ``shape``; a wrongly shaped result would be broadcast silently."""
        got = tuple(getattr(out, "shape", np.shape(out)))
        if got != shape:
            raise ValueError(
                f"{label}= of potential {self.label!r} (dim={self.dim}) returned shape {got}, "
                f"expected {shape} (value and laplacian: q.shape[:-1], grad: q.shape)")
        return out

    def numba_functions(self) -> tuple[Any, Any] | None:
        if self._numba_value is None:
            return None
        if self._compiled is None:
            uv = _jit(self._numba_value)
            ug = _jit(self._numba_grad)

            # numba cannot pass an exception out of a function called through a pointer, so
            # the wrappers catch it, set the flag par[0] (1: value, 2: grad) and return NaN;
            # the backend stops at that step and raises (see raise_if_failed).
            @numba.njit
            def value_fn(q: np.ndarray, par: np.ndarray) -> float:
                try:
                    return uv(q)
                except Exception:  # re-raised by the backend
                    par[0] = 1.0
                return np.nan

            @numba.njit
            def grad_fn(q: np.ndarray, par: np.ndarray, out: np.ndarray) -> None:
                try:
                    ug(q, out)
                except Exception:  # re-raised by the backend
                    par[0] = 2.0
                    for i in range(out.shape[0]):
                        out[i] = np.nan

            self._compiled = (value_fn, grad_fn)
        return self._compiled

    def raise_if_failed(self, par: np.ndarray, q: np.ndarray, where: str) -> None:
        """Raise if a numba function set the failure flag ``par[0]`` during a kernel call.

        The function is then called from Python on ``q`` (the state the run started from) so
        that, if it fails there too, its own exception is chained as the cause.
        """
        if par[0] == 0.0:
            return
        label = "numba_value" if par[0] == 1.0 else "numba_grad"
        msg = (f"{label}= of potential {self.label!r} raised an exception {where}; numba "
               "cannot report it from inside the kernel (call the function from Python on "
               "that state to see it)")
        cause: BaseException | None = None
        try:
            fn = _jit(self._numba_value if par[0] == 1.0 else self._numba_grad)
            for row in np.asarray(q, dtype=np.float64).reshape(-1, self.dim)[:64]:
                row = np.ascontiguousarray(row)
                fn(row) if par[0] == 1.0 else fn(row, np.empty(self.dim))
        except Exception as err:  # chained below
            cause = err
        raise RuntimeError(msg) from cause

    def __repr__(self) -> str:
        return f"Custom({self.label!r}, dim={self.dim})"


def _jit(fn: Any) -> Any:
    if isinstance(fn, numba.core.dispatcher.Dispatcher):
        return fn
    return numba.njit(fn)
