"""Non-splitting schemes for overdamped Langevin dynamics."""

from __future__ import annotations

from typing import ClassVar

from ..systems.base import AbstractSystem
from .base import AbstractIntegrator, LetterSequence, named

__all__ = ["EulerMaruyama", "LeimkuhlerMatthews"]


class _OverdampedScheme(AbstractIntegrator):
    def check(self, system: AbstractSystem) -> None:
        from ..systems.overdamped import OverdampedLangevin

        if not isinstance(system, OverdampedLangevin):
            raise ValueError(
                f"integrator {self.name} integrates OverdampedLangevin only, got "
                f"{type(system).__name__}; "
                "for underdamped dynamics use a splitting such as BAOAB"
            )
        super().check(system)


@named("euler-maruyama", "eulermaruyama", "em", "sgld")
class EulerMaruyama(_OverdampedScheme):
    r"""Euler–Maruyama for overdamped Langevin (= SGLD with a minibatch gradient).

    .. math:: q_{n+1} = q_n - \tfrac{h}{\gamma}\nabla U(q_n) + \sqrt{2\tau h/\gamma}\,R_n .

    | symbol | code |
    |---|---|
    | h | ``h`` of :func:`~dynopt.integrate` (``lr`` of the optimizers) |
    | γ | the system's ``gamma`` (time scale) |
    | τ | the system's ``temperature`` |
    | Rₙ | standard normals (``noise=``) |

    Weak order 1; on U = ω²q²/2 (γ = 1) its invariant variance is τ/(ω²(1 − hω²/2)).

    Reference: P. E. Kloeden, E. Platen, *Numerical Solution of Stochastic Differential
    Equations*, Springer 1992 (the scheme); M. Welling, Y. W. Teh, "Bayesian learning via
    stochastic gradient Langevin dynamics", ICML 2011 (SGLD).
    """

    weak_order: ClassVar[int] = 1
    name = "EulerMaruyama"

    def letters(self) -> LetterSequence:
        return [("G", 1.0), ("W", 1.0)]


@named("leimkuhler-matthews", "leimkuhlermatthews", "lm")
class LeimkuhlerMatthews(_OverdampedScheme):
    r"""Leimkuhler–Matthews scheme (the high-friction limit of BAOAB).

    .. math:: q_{n+1} = q_n - \tfrac{h}{\gamma}\nabla U(q_n)
              + \sqrt{\tfrac{\tau h}{2\gamma}}\,(R_n + R_{n+1}) .

    | symbol | code |
    |---|---|
    | h | ``h`` of :func:`~dynopt.integrate` (``lr`` of the optimizers) |
    | γ | the system's ``gamma`` (time scale) |
    | τ | the system's ``temperature`` |
    | Rₙ | standard normals (``noise=``) |

    Rₙ₊₁ is kept as the system's extra state ``noise_prev`` for the next step. Same cost as
    Euler–Maruyama, but second order for invariant-measure averages and exact for the variance
    on a harmonic potential.

    Reference: B. Leimkuhler, C. Matthews, M. V. Tretyakov, "On the long-time integration of
    stochastic gradient systems", Proc. R. Soc. A 470 (2014).
    """

    weak_order: ClassVar[int] = 1
    name = "LeimkuhlerMatthews"

    def letters(self) -> LetterSequence:
        return [("G", 1.0), ("L", 1.0)]
