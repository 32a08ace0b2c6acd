"""Exceptions raised by dynopt."""

from __future__ import annotations

from typing import Any

__all__ = ["DivergenceError", "Interrupted"]


class DivergenceError(FloatingPointError):
    """A run produced a non-finite state.

    Attributes:
        step: The (1-based) step whose result was non-finite.
        chain: The first offending chain (or parameter tensor index in an optimizer).
        trajectory: For ``integrate()``, the trajectory up to the last record before the step,
            so nothing computed before the divergence is lost.
    """

    def __init__(self, message: str, *, step: int, chain: int = 0, trajectory: Any = None) -> None:
        super().__init__(message)
        self.step = step
        self.chain = chain
        self.trajectory = trajectory


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``integrate()``; the records completed before it are kept.

    A :class:`KeyboardInterrupt`, so code that does not know it stops as before.

    Attributes:
        trajectory: The trajectory of the records completed before the interrupt (its
            ``final_state`` is None: the state may be half-updated).
    """

    def __init__(self, message: str, *, trajectory: Any = None) -> None:
        super().__init__(message)
        self.trajectory = trajectory
