"""Built-in potentials inside the fused numba kernel, on a block of lanes.

A block holds ``Q[d, l]``: coordinate ``d`` of lane (chain) ``l``. Built-ins are selected by
``kind`` (the potential's ``numba_kind``) and inlined, so their lane loops vectorize. Any other
potential (``kind == 0``) is called through first-class function pointers ``value_fn(q, par)``
and ``grad_fn(q, par, out)`` on one configuration at a time, which keeps the kernel cacheable.

The formulas mirror the array-form methods in :mod:`dynopt.potentials`; ``tests/test_potentials.py``
checks the two against each other.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np
from numba import types
from numba.core.types.function_type import WrapperAddressProtocol
from numba.experimental.function_type import _get_wrapper_address

from .cache import CACHE

__all__ = ["GRAD_FN", "VALUE_FN", "Unused", "dummy_grad", "dummy_value", "grad_block", "unused",
           "value_lane"]

_F1 = types.float64[::1]
VALUE_SIG = types.float64(_F1, _F1)
GRAD_SIG = types.void(_F1, _F1, _F1)
VALUE_FN = types.FunctionType(VALUE_SIG)
GRAD_FN = types.FunctionType(GRAD_SIG)

HARMONIC, DOUBLE_WELL, ACKLEY, RASTRIGIN, ROSENBROCK = 1, 2, 3, 4, 5
ZAKHAROV, MULTI_BASIN = 6, 7
_TWO_PI = 2.0 * math.pi


class Unused(WrapperAddressProtocol):
    """A first-class function argument the kernel never calls (a placeholder), passed by its
    address.

    numba resolves the address of a dispatcher passed as a function argument on every call of
    the kernel (two compile-result lookups each, about 0.1 ms): measurable where the kernel is
    called once per step, as ``integrate()`` with events does. An object of the wrapper-address
    protocol is resolved by one method call; calls through it would go through the C wrapper
    (errors could not propagate), so it is used only for placeholders that are never called.
    """

    def __init__(self, dispatcher: Any, sig: Any) -> None:
        self._dispatcher = dispatcher  # keeps the compiled code alive
        self._sig = sig
        self._address = _get_wrapper_address(dispatcher, sig)

    def __wrapper_address__(self) -> int:
        return int(self._address)

    def signature(self) -> Any:
        return self._sig


_UNUSED: dict[int, Unused] = {}


def unused(dispatcher: Any, sig: Any) -> Unused:
    """The :class:`Unused` pointer of placeholder ``dispatcher`` (made once)."""
    ptr = _UNUSED.get(id(dispatcher))
    if ptr is None:
        ptr = _UNUSED[id(dispatcher)] = Unused(dispatcher, sig)
    return ptr


@nb.njit(VALUE_SIG, cache=CACHE)
def dummy_value(q: np.ndarray, par: np.ndarray) -> float:  # pragma: no cover - placeholder
    return 0.0


@nb.njit(GRAD_SIG, cache=CACHE)
def dummy_grad(q: np.ndarray, par: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    return None


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def _ackley_sums(Q, lane, c):  # type: ignore[no-untyped-def]
    """(Σ q², Σ cos(c q)) of one lane."""
    r2 = 0.0
    cs = 0.0
    for d in range(Q.shape[0]):
        x = Q[d, lane]
        r2 += x * x
        cs += math.cos(c * x)
    return r2, cs


@nb.njit(cache=CACHE, error_model="numpy")
def grad_block(kind, par, Q, G, n_lanes, grad_fn, tq, tg):  # type: ignore[no-untyped-def]
    """G[:, :n_lanes] = ∇U(Q[:, :n_lanes])."""
    D = Q.shape[0]
    if kind == HARMONIC:
        for d in range(D):
            w2 = par[d]
            for lane in range(n_lanes):
                G[d, lane] = w2 * Q[d, lane]
    elif kind == DOUBLE_WELL:
        for d in range(D):
            for lane in range(n_lanes):
                x = Q[d, lane]
                G[d, lane] = 4.0 * x * (x * x - 1.0)
    elif kind == RASTRIGIN:
        amp = par[0]
        for d in range(D):
            for lane in range(n_lanes):
                x = Q[d, lane]
                G[d, lane] = 2.0 * x + _TWO_PI * amp * math.sin(_TWO_PI * x)
    elif kind == ACKLEY:
        a, b, c = par[0], par[1], par[2]
        for lane in range(n_lanes):
            r2, cs = _ackley_sums(Q, lane, c)
            r = math.sqrt(r2 / D)
            radial = a * b * math.exp(-b * r) / (D * r) if r > 0.0 else 0.0
            osc = math.exp(cs / D) * c / D
            for d in range(D):
                x = Q[d, lane]
                G[d, lane] = radial * x + osc * math.sin(c * x)
    elif kind == ROSENBROCK:
        a, b = par[0], par[1]
        for lane in range(n_lanes):
            for d in range(D):
                G[d, lane] = 0.0
            for d in range(D - 1):
                x = Q[d, lane]
                inner = Q[d + 1, lane] - x * x
                G[d, lane] += -4.0 * b * x * inner - 2.0 * (a - x)
                G[d + 1, lane] += 2.0 * b * inner
    elif kind == ZAKHAROV:
        for lane in range(n_lanes):
            sw = 0.0
            for d in range(D):
                sw += (d + 1.0) * Q[d, lane]
            sw *= 0.5
            fac = sw + 2.0 * sw * sw * sw
            for d in range(D):
                G[d, lane] = 2.0 * Q[d, lane] + (d + 1.0) * fac
    elif kind == MULTI_BASIN:
        a1, a2, w1, w2, k = par[0], par[1], par[2], par[3], par[4]
        for lane in range(n_lanes):
            r1 = 0.0
            r2 = 0.0
            for d in range(D):
                x = Q[d, lane]
                r1 += (x - par[6 + d]) ** 2
                r2 += (x - par[6 + D + d]) ** 2
            g1 = 2.0 * a1 * w1 * math.exp(-a1 * r1) + 2.0 * k * r2
            g2 = 2.0 * a2 * w2 * math.exp(-a2 * r2) + 2.0 * k * r1
            for d in range(D):
                x = Q[d, lane]
                G[d, lane] = g1 * (x - par[6 + d]) + g2 * (x - par[6 + D + d])
    else:
        for lane in range(n_lanes):
            for d in range(D):
                tq[d] = Q[d, lane]
            grad_fn(tq, par, tg)
            for d in range(D):
                G[d, lane] = tg[d]


@nb.njit(cache=CACHE, error_model="numpy")
def value_lane(kind, par, Q, lane, value_fn, tq):  # type: ignore[no-untyped-def]
    """U at lane ``lane`` of the block."""
    D = Q.shape[0]
    u = 0.0
    if kind == HARMONIC:
        for d in range(D):
            u += 0.5 * par[d] * Q[d, lane] ** 2
    elif kind == DOUBLE_WELL:
        for d in range(D):
            u += (Q[d, lane] ** 2 - 1.0) ** 2
    elif kind == RASTRIGIN:
        u = par[0] * D
        for d in range(D):
            x = Q[d, lane]
            u += x * x - par[0] * math.cos(_TWO_PI * x)
    elif kind == ACKLEY:
        a, b, c = par[0], par[1], par[2]
        r2, cs = _ackley_sums(Q, lane, c)
        u = -a * math.exp(-b * math.sqrt(r2 / D)) - math.exp(cs / D) + a + math.e
    elif kind == ROSENBROCK:
        a, b = par[0], par[1]
        for d in range(D - 1):
            x = Q[d, lane]
            u += b * (Q[d + 1, lane] - x * x) ** 2 + (a - x) ** 2
    elif kind == ZAKHAROV:
        sw = 0.0
        for d in range(D):
            x = Q[d, lane]
            u += x * x
            sw += (d + 1.0) * x
        sw *= 0.5
        u += sw * sw + sw**4
    elif kind == MULTI_BASIN:
        r1 = 0.0
        r2 = 0.0
        for d in range(D):
            x = Q[d, lane]
            r1 += (x - par[6 + d]) ** 2
            r2 += (x - par[6 + D + d]) ** 2
        u = (-par[2] * math.exp(-par[0] * r1) - par[3] * math.exp(-par[1] * r2)
             + par[4] * r1 * r2 + par[5])
    else:
        for d in range(D):
            tq[d] = Q[d, lane]
        u = value_fn(tq, par)
    return u
