"""Integrators: discretizations of a system into steps.

Splitting schemes are data (a letter string); Euler–Maruyama and Leimkuhler–Matthews are the
overdamped schemes. Every integrator lowers to the same primitive ops, executed by either backend.
"""

from .base import NAMED as NAMED
from .base import AbstractIntegrator as AbstractIntegrator
from .base import named as named
from .overdamped import EulerMaruyama as EulerMaruyama
from .overdamped import LeimkuhlerMatthews as LeimkuhlerMatthews
from .splitting import ABOBA as ABOBA
from .splitting import ALPHABET as ALPHABET
from .splitting import BAOAB as BAOAB
from .splitting import OBABO as OBABO
from .splitting import Leapfrog as Leapfrog
from .splitting import Splitting as Splitting
from .splitting import VelocityVerlet as VelocityVerlet

__all__ = ["ABOBA", "ALPHABET", "BAOAB", "NAMED", "OBABO", "AbstractIntegrator", "EulerMaruyama",
           "Leapfrog", "LeimkuhlerMatthews", "Splitting", "VelocityVerlet", "named", "resolve"]


def resolve(spec: "str | AbstractIntegrator") -> AbstractIntegrator:
    """An integrator from an instance, a name (``"BAOAB"``, ``"leapfrog"``, ``"euler-maruyama"``,
    ``"lm"``) or a splitting string."""
    if isinstance(spec, AbstractIntegrator):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"integrator must be an integrator or a string, got {spec!r}")
    key = spec.strip().lower().replace("_", "-")
    if key in NAMED:  # each scheme registers its own names (integrators.base.named)
        return NAMED[key]()
    letters = spec.strip()
    if letters != letters.upper():  # splitting letters are capitals: meant as a name
        hint = (f" (the splitting {letters.upper()!r}? its letters are capitals)"
                if set(letters.upper()) <= set(ALPHABET) else "")
        raise ValueError(f"unknown integrator {spec!r}{hint}; names: {', '.join(sorted(NAMED))}; "
                         f"or a splitting string over the letters {''.join(ALPHABET)}")
    return Splitting(letters)
