"""Parameter validation shared by systems, integrators, integrate() and the optimizers.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong type) with a message that names the
parameter and shows the offending value, e.g. ``"gamma must be >= 0, got -1.0"``.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "as_finite_array",
    "check_bool",
    "check_choice",
    "check_int",
    "check_nonnegative",
    "check_positive",
    "check_probability",
    "check_real",
    "short_repr",
]

#: Items of a sequence, and elements of an array, shown in full by :func:`short_repr`.
SHORT_ITEMS = 6

_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = SHORT_ITEMS
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = 80


def short_repr(value: Any) -> str:
    """``repr(value)`` for error messages, never longer than a line or so.

    A small value is shown as ``repr`` shows it (``'x'``, ``True``, ``[1.0, nan]``); an array or
    tensor of more than :data:`SHORT_ITEMS` elements by its type, shape and dtype; a long list or
    tuple by its first items and its length; anything else cut to about 80 characters.
    """
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        try:
            size = math.prod(int(n) for n in shape)
        except TypeError:
            size = None
        if size is None or size > SHORT_ITEMS:
            shape_text = tuple(int(n) for n in shape) if size is not None else shape
            return f"{type(value).__name__} of shape {shape_text} and dtype {value.dtype}"
    if isinstance(value, list | tuple) and len(value) > SHORT_ITEMS:
        return f"{_REPR.repr(value)} ({type(value).__name__} of {len(value)} items)"
    return _REPR.repr(value)


def _with_type(value: Any) -> str:
    """:func:`short_repr` followed by the type, unless the summary already names it."""
    text = short_repr(value)
    kind = type(value).__name__
    return text if text.startswith(f"{kind} of shape") else f"{text} of type {kind}"


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
                f"{name} must be a real number, got {_with_type(value)}"
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
        raise TypeError(f"{name} must be an integer, got {_with_type(value)}")
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
    raise ValueError(f"{name} must be one of {list(choices)}, got {short_repr(value)}")


def _same_kind(value: Any, choice: Any) -> bool:
    if isinstance(value, bool) or isinstance(choice, bool):
        return isinstance(value, bool) and isinstance(choice, bool)
    if isinstance(choice, numbers.Integral):
        return isinstance(value, numbers.Integral)
    return True


def check_bool(name: str, value: Any) -> bool:
    """A ``bool`` (or numpy bool): ``1``, ``"no"`` or ``None`` do not stand for a truth value."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {_with_type(value)}")


def _why_not_real(given: Any, raw: np.ndarray | None) -> str:
    """What a non-real array holds: its dtype, and for an object array (a list holding a None,
    a string...) the first offending element and its index."""
    if raw is None or raw.ndim == 0:
        return ""
    text = f" (dtype {raw.dtype})" if "dtype" not in short_repr(given) else ""
    if raw.dtype.kind == "b":
        return text + "; booleans are not numbers here: convert them with .astype(float)"
    if raw.dtype.kind == "O":
        for k, item in enumerate(raw.reshape(-1)):
            if isinstance(item, bool | np.bool_) or not isinstance(item, numbers.Real):
                index = tuple(int(i) for i in np.unravel_index(k, raw.shape))
                return f"{text}: {short_repr(item)} at index {index}"
    return text


def as_finite_array(
    name: str,
    value: Any,
    *,
    ndim: int | tuple[int, ...] | None = None,
    positive: bool = False,
    allow_bool: bool = False,
) -> np.ndarray:
    """Convert to a float64 numpy array, rejecting NaN/inf (and non-positive entries if asked).

    Args:
        name: The parameter's name, for the error messages.
        value: Array-like of real numbers (numpy array, tensor, nested sequence, scalar).
        ndim: The allowed number(s) of dimensions.
        positive: Refuse entries <= 0.
        allow_bool: Take booleans as 0/1 (samples of an indicator, as ArviZ does); otherwise a
            bool value is refused as not a real number.

    Raises:
        TypeError: A value that is not array-like of real numbers.
        ValueError: A wrong number of dimensions, NaN/inf or (``positive``) an entry <= 0. The
            messages name the parameter and show a short summary of the value (its shape and
            the first offending index and entry), never the whole array.
    """
    given = value
    if hasattr(value, "detach"):  # torch.Tensor (bfloat16 has no numpy dtype: widen floats)
        t = value.detach().cpu()
        value = t.double().numpy() if t.is_floating_point() else t.numpy()
    kinds = "biuf" if allow_bool else "iuf"
    raw: np.ndarray | None = None
    try:
        raw = np.asarray(value)
        if raw.dtype.kind not in kinds:  # bools, strings, complex numbers, None, objects
            raise TypeError
        arr = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be array-like of real numbers, got {short_repr(given)}"
                        f"{_why_not_real(given, raw)}") from None
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
            f"{_of_shape(arr)}"
        )
    if positive and np.any(arr <= 0):
        bad = np.argwhere(arr <= 0)[0]
        raise ValueError(
            f"{name} must be > 0 everywhere, got {arr[tuple(bad)]} at index "
            f"{tuple(int(i) for i in bad)}{_of_shape(arr)}"
        )
    return arr


def _of_shape(arr: np.ndarray) -> str:
    return f" (of an array of shape {arr.shape})" if arr.ndim > 0 else ""
