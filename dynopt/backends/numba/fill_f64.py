"""The ensemble kernel's noise fill with the float64 Box–Muller transform (``"gaussian-f64"``).

Its own module so that it is compiled only when a run asks for that kind: the kernel calls its
fill through a function pointer (:func:`.philox.fill_for`), and the default fill
(:func:`.philox.fill_lanes`) has only the float32 transform.
"""

from __future__ import annotations

import numba as nb

from .cache import CACHE
from .philox import FILL_SIG, box_muller, fill_with

__all__ = ["fill_lanes_f64"]


@nb.njit(FILL_SIG, cache=CACHE, error_model="numpy")
def fill_lanes_f64(Z, U, chain0, n_lanes, call_first, n_calls, stream, k0, k1, kind):  # type: ignore[no-untyped-def]
    """:func:`.philox.fill_with` the float64 transform (kinds GAUSSIAN_F64 and DISCRETE)."""
    fill_with(Z, U, chain0, n_lanes, call_first, n_calls, stream, k0, k1, kind, box_muller)
