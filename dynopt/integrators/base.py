"""The integrator interface: a discretization of a system into steps."""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..program import Op, Program

if TYPE_CHECKING:
    from ..stepping import State
    from ..systems.base import AbstractSystem

__all__ = ["NAMED", "AbstractIntegrator", "LetterSequence", "named", "warn_if_noise_dropped"]

#: Lower-case name → integrator class; filled by :func:`named` where each scheme is defined.
NAMED: dict[str, type[AbstractIntegrator]] = {}


def named(*names: str) -> Callable[[type[AbstractIntegrator]], type[AbstractIntegrator]]:
    """Class decorator: register a scheme under ``names`` for :func:`dynopt.integrators.resolve`
    (names are matched lower-case, ``_`` read as ``-``)."""

    def deco(cls: type[AbstractIntegrator]) -> type[AbstractIntegrator]:
        for n in names:
            key = n.strip().lower().replace("_", "-")
            if NAMED.get(key, cls) is not cls:
                raise ValueError(f"scheme name {n!r} is already taken by {NAMED[key].__name__}")
            NAMED[key] = cls
        return cls

    return deco

#: A scheme as data: (letter, fraction of h) pairs.
LetterSequence = list[tuple[str, float]]


class AbstractIntegrator(abc.ABC):
    """A scheme that advances a system by a step h.

    Subclasses describe one step as a sequence of (letter, fraction-of-h) pairs; the system lowers
    letters to primitive ops and a backend executes them. That is the only place a scheme is
    defined, for ``integrate()``, for the single-step API and for the torch optimizers alike.

    Class attributes:
        weak_order: Weak order of accuracy (for smooth test functions, generic h).
        is_symplectic: Whether the deterministic part preserves the symplectic form.
    """

    weak_order: ClassVar[int] = 1
    is_symplectic: ClassVar[bool] = False
    name: str = "integrator"

    @abc.abstractmethod
    def letters(self) -> LetterSequence:
        """One step as (letter, fraction of h) pairs."""

    def check(self, system: AbstractSystem) -> None:
        """Raise ValueError unless ``system`` offers every letter this scheme uses, and uses
        each of the system's ``whole_step_letters`` (maps applied once per step, whose op
        ignores the fraction of h) at most once, with fraction 1."""
        seq = self.letters()
        missing = sorted({letter for letter, _ in seq if not system.offers(letter)})
        if missing:
            raise ValueError(
                f"integrator {self.name!r} uses letter(s) {missing} that {type(system).__name__} "
                f"does not offer; it offers {sorted(system.letters)} "
                f"({'; '.join(f'{k}: {v}' for k, v in system.letters.items())})"
            )
        for letter in sorted(system.whole_step_letters):
            fracs = [frac for name, frac in seq if name == letter]
            if len(fracs) > 1 or any(abs(frac - 1.0) > 1e-12 for frac in fracs):
                raise ValueError(
                    f"integrator {self.name!r} (letters {''.join(n for n, _ in seq)!r}) gives "
                    f"letter {letter!r} of {type(system).__name__} the fractions {fracs} of h, "
                    f"but {letter!r} ({system.letters[letter]}) is a whole-step map that ignores "
                    "the fraction: use it once per step with fraction 1 (e.g. the default "
                    f"scheme {system.default_scheme!r})"
                )

    def program(self, system: AbstractSystem, h: float) -> Program:
        """Lower one step of size ``h`` for ``system`` into primitive ops."""
        self.check(system)
        ops = tuple(system.lower(letter, frac * h) for letter, frac in self.letters())
        n_extras = sum(system.extras_layout(system.dim).values()) if system.potential else 0
        return Program(ops, n_extras)

    def lower_sequence(self, system: AbstractSystem, seq: LetterSequence, h: float) -> list[Op]:
        """Lower an arbitrary letter sequence (e.g. from :meth:`optimizer_form`)."""
        return [system.lower(letter, frac * h) for letter, frac in seq]

    def optimizer_form(self, system: AbstractSystem) -> tuple[LetterSequence, LetterSequence]:
        """The scheme rotated for a one-gradient-per-call optimizer (first-same-as-last).

        An optimizer's ``step()`` is called when a fresh gradient at the current parameters is
        available. Starting from that point, a call runs ops until the next op that needs the
        gradient at *moved* parameters. This returns ``(first, steady)``: the ops of the first call
        (from the start of the textbook step) and of every later call (one full period, rotated,
        with adjacent deterministic drifts and kicks merged). For BAOAB this gives the executed
        form ``first = B½ A½ O A½`` and ``steady = B A½ O A½``: the parameter sequence is
        exactly BAOAB's.

        Raises:
            ValueError: If one period needs gradients at more than one point.
        """
        from ..program import GRADIENT_OPS, POSITION_OPS

        self.check(system)
        seq = self.letters()
        k = len(seq)
        kinds = [system.lower(letter, frac) .code for letter, frac in seq]
        reads = [c in GRADIENT_OPS for c in kinds]
        moves = [c in POSITION_OPS for c in kinds]

        def window_end(start: int) -> int:
            moved = False
            for pos in range(start, start + 2 * k + 1):
                j = pos % k
                if reads[j] and moved:
                    return pos
                moved = moved or moves[j]
            return start + k  # no gradient at all: one period per call

        first_end = window_end(0)
        second_end = window_end(first_end)
        if any(reads) and second_end - first_end != k:
            n_points = "more than one point"
            raise ValueError(
                f"integrator {self.name!r} needs gradients at {n_points} per step, so it cannot "
                "run as a one-gradient-per-call optimizer"
            )
        first = [seq[pos % k] for pos in range(0, first_end)]
        steady = [seq[pos % k] for pos in range(first_end, first_end + k)]
        return _merge(first, system), _merge(steady, system)

    # --- single-step API --------------------------------------------------------------------
    def init(self, system: AbstractSystem, q0: Any, **kwargs: Any) -> State:
        """Initial :class:`~dynopt.stepping.State` (see :func:`dynopt.stepping.init`)."""
        from ..stepping import init

        return init(system, self, q0, **kwargs)

    def step(self, system: AbstractSystem, state: State, h: float | None = None) -> State:
        """Advance ``state`` by one step (see :func:`dynopt.stepping.step`)."""
        from ..stepping import step

        return step(system, self, state, h=h)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _merge(seq: LetterSequence, system: AbstractSystem) -> LetterSequence:
    """Merge adjacent equal letters whose flows compose exactly and draw no noise."""
    from ..program import MERGEABLE_OPS

    out: LetterSequence = []
    for letter, frac in seq:
        if out and out[-1][0] == letter and system.lower(letter, 1.0).code in MERGEABLE_OPS:
            out[-1] = (letter, out[-1][1] + frac)
        else:
            out.append((letter, frac))
    return out


def warn_if_noise_dropped(system: AbstractSystem, name: str, ops: Sequence[Op]) -> None:
    """A UserWarning when a scheme whose ops draw no noise drives a system at a positive
    temperature: the thermostat is silently gone (e.g. ``"BAB"`` on Langevin is Hamiltonian
    dynamics). Shared by ``integrate()`` and the optimizers; temperature 0 stays silent."""
    temperature = getattr(system, "temperature", None)
    if (system.is_stochastic and temperature is not None
            and bool(np.all(np.asarray(temperature) > 0))
            and not any(op.draws_noise for op in ops)):
        warnings.warn(
            f"integrator {name!r} draws no noise, so it drops {type(system).__name__}'s "
            "thermostat (its stationary distribution is not the system's); use a scheme with "
            "an O step (e.g. BAOAB) or a deterministic system (e.g. systems.Hamiltonian)",
            UserWarning, stacklevel=3)
