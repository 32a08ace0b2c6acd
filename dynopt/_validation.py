"""Parameter validation shared by systems, integrators, integrate() and the optimizers.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong type) with a message that names the
parameter and shows the offending value, e.g. ``"gamma must be >= 0, got -1.0"``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "as_finite_array",
    "check_choice",
    "check_int",
    "check_nonnegative",
    "check_positive",
    "check_probability",
    "check_real",
]


def check_real(name: str, value: Any) -> float:
    """Return ``value`` as a finite Python float, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # Accept 0-d numpy arrays and 1-element tensors as well.
        try:
            if hasattr(value, "numel") and value.numel() == 1:  # torch.Tensor
                if value.dtype.is_complex or not (value.dtype.is_floating_point
                                                  or _tensor_is_integer(value)):
                    raise TypeError
                value = float(value.item())
            elif isinstance(value, np.ndarray) and value.size == 1:
                if value.dtype.kind not in "iuf":  # bool, complex, strings, objects
                    raise TypeError
                value = float(value.reshape(()))
            else:
                raise TypeError
        except TypeError:
            raise TypeError(
                f"{name} must be a real number, got {value!r} of type {type(value).__name__}"
            ) from None
    try:
        value = float(value)
    except OverflowError:  # e.g. 10**400: float() raised it without naming the parameter
        raise ValueError(f"{name} must be finite, got a {type(value).__name__} value beyond the "
                         "float range") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _tensor_is_integer(t: Any) -> bool:
    import torch

    return t.dtype != torch.bool and not t.dtype.is_floating_point and not t.dtype.is_complex


def check_positive(name: str, value: Any) -> float:
    """A finite real number > 0."""
    v = check_real(name, value)
    if v <= 0.0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def check_nonnegative(name: str, value: Any) -> float:
    """A finite real number >= 0."""
    v = check_real(name, value)
    if v < 0.0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def check_probability(name: str, value: Any, *, open_right: bool = False) -> float:
    """A real number in [0, 1] (or [0, 1) with ``open_right``)."""
    v = check_real(name, value)
    if v < 0.0 or v > 1.0 or (open_right and v == 1.0):
        bracket = ")" if open_right else "]"
        raise ValueError(f"{name} must be in [0, 1{bracket}, got {v}")
    return v


def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """An integer (bools rejected), optionally ``>= minimum`` and ``<= maximum``. As
    :func:`check_real` does for reals, a 1-element integer numpy array or tensor stands for
    its value."""
    if hasattr(value, "numel") and not isinstance(value, np.ndarray) and value.numel() == 1 \
            and _tensor_is_integer(value):  # torch.Tensor
        value = int(value.item())
    elif isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu":
        value = int(value.reshape(()))
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """One of ``choices`` (returned as the choice itself). An integer choice takes integers
    only: ``True`` or ``3.0`` do not stand for 1 or 3."""
    for choice in choices:
        if _same_kind(value, choice):
            try:
                equal = bool(value == choice)
            except (TypeError, ValueError):  # arrays, odd types
                equal = False
            if equal:
                return choice
    raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _same_kind(value: Any, choice: Any) -> bool:
    if isinstance(value, bool) or isinstance(choice, bool):
        return isinstance(value, bool) and isinstance(choice, bool)
    if isinstance(choice, numbers.Integral):
        return isinstance(value, numbers.Integral)
    return True


def as_finite_array(
    name: str,
    value: Any,
    *,
    ndim: int | tuple[int, ...] | None = None,
    positive: bool = False,
) -> np.ndarray:
    """Convert to a float64 numpy array, rejecting NaN/inf (and non-positive entries if asked)."""
    if hasattr(value, "detach"):  # torch.Tensor (bfloat16 has no numpy dtype: widen floats)
        t = value.detach().cpu()
        value = t.double().numpy() if t.is_floating_point() else t.numpy()
    try:
        raw = np.asarray(value)
        if raw.dtype.kind not in "iuf":  # bools, strings, complex numbers, None, objects
            raise TypeError
        arr = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be array-like of real numbers, got {value!r}") from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                f"got shape {arr.shape}"
            )
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} must be finite, got {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        )
    if positive and np.any(arr <= 0):
        bad = np.argwhere(arr <= 0)[0]
        raise ValueError(
            f"{name} must be > 0 everywhere, got {arr[tuple(bad)]} at index "
            f"{tuple(int(i) for i in bad)}"
        )
    return arr
