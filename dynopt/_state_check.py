"""Checking a :class:`~dynopt.stepping.State` against the system it is to continue.

A state carries raw buffers that the kernels index by the system's layout (coordinates,
momenta, extras); one from another system, dimension, backend or dtype would make them read or
write past their buffers. :func:`check_state` refuses such a state with a message naming the
offending field, before any kernel runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import check_choice, check_int, check_positive, check_real

if TYPE_CHECKING:
    from .systems.base import AbstractSystem

__all__ = ["check_state"]


def check_state(system: AbstractSystem, state: Any) -> None:
    """Raise ValueError/TypeError unless ``state`` fits ``system`` exactly.

    A state continues a run (``integrate(state=...)``, :func:`run`); one from another system,
    dimension, backend or dtype would make the kernels read or write past their buffers, so
    every shape, dtype and layout the backends rely on is checked here, before any kernel runs.
    A state that records its extras (``state.layout``, set by ``init``) continues only under a
    system with the same extras, names and sizes: equal widths alone would let another
    system's variables be read as this one's.
    """
    from .stepping import BACKENDS, MAX_SEED, NOISES, State

    if not isinstance(state, State):
        raise TypeError(f"state must be a dynopt State (e.g. traj.final_state), got "
                        f"{type(state).__name__}")
    check_choice("state.backend", state.backend, BACKENDS)
    check_choice("state.noise", state.noise, NOISES)
    check_int("state.step", state.step, minimum=0)
    check_int("state.seed", state.seed, minimum=0, maximum=MAX_SEED)
    check_real("state.time", state.time)  # finite
    if state.h is not None:
        check_positive("state.h", state.h)
    if state.noise_memory is not None and not isinstance(state.noise_memory, bool):
        raise TypeError(f"state.noise_memory must be None or a bool, got "
                        f"{state.noise_memory!r}")
    if system.potential is None:
        raise ValueError(f"{type(system).__name__} needs a potential to be integrated")
    from .backends import get_backend

    be = get_backend(state.backend)
    kind = be.array_kind
    for name in ("q", "p", "x"):
        a = getattr(state, name)
        if not be.is_array(a):
            raise TypeError(f"state.{name} must be {kind} for backend={state.backend!r}, got "
                            f"{type(a).__name__}")
        if a.ndim != 2:
            raise ValueError(f"state.{name} must be 2-D (chains, width), got shape "
                             f"{tuple(a.shape)}")
    n, dim = int(state.q.shape[0]), int(state.q.shape[1])
    if n < 1:
        raise ValueError(f"state.q has no chains (shape {tuple(state.q.shape)})")
    if dim != system.potential.dim:  # type: ignore[union-attr]
        raise ValueError(
            f"state has dim={dim} (state.q shape {tuple(state.q.shape)}) but the potential "
            f"{system.potential!r} of {type(system).__name__} has dim="
            f"{system.potential.dim}; the state belongs to another system")  # type: ignore[union-attr]
    want = {"p": dim if system.has_momentum else 0,
            "x": sum(system.extras_layout(dim).values())}
    for name, width in want.items():
        shape = tuple(getattr(state, name).shape)
        if shape != (n, width):
            raise ValueError(
                f"state.{name} has shape {shape} but {type(system).__name__} with dim={dim} "
                f"needs ({n}, {width}) (extras {system.extras_layout(dim)}); the state belongs "
                "to another system")
    # the same widths can hold other variables (adaptive Langevin's ξ, the port-Hamiltonian γ)
    if state.layout is not None:
        from .stepping import extras_layout

        try:
            held = tuple((k, v) for k, v in state.layout)
        except (TypeError, ValueError):
            raise TypeError(f"state.layout must be None or ((name, size), ...), got "
                            f"{state.layout!r}") from None
        layout = extras_layout(system, dim)
        if held != layout:
            raise ValueError(
                f"state.layout: the state holds the extras {dict(held)} but "
                f"{type(system).__name__} with dim={dim} has the extras {dict(layout)}; the "
                "state belongs to another system (set state.layout = None to continue it with "
                "its extras reinterpreted, if that is meant)")
    be.check_storage(state)
    for name in ("q", "p", "x"):
        a = getattr(state, name)
        # extras may hold +inf as a "not yet" marker (Born–Infeld's min_V); never NaN
        xp = np if isinstance(a, np.ndarray) else _torch()
        bad = xp.isnan(a) if name == "x" else ~xp.isfinite(a)
        if bool(bad.any()):
            raise ValueError(f"state.{name} holds non-finite values; a diverged state cannot be "
                             "continued")


def _torch() -> Any:
    import torch

    return torch
