"""Splitting integrators written as letter strings (the openmmtools pattern)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .._validation import check_real
from .base import AbstractIntegrator, LetterSequence, named

#: The documented alphabet. Each system offers a subset (``system.letters``).
ALPHABET: dict[str, str] = {
    "A": "drift: q += t M⁻¹p (BornInfeld, ECDSep: q += t ∂H/∂p with their rates)",
    "B": "kick: p −= t ∇U(q) (BornInfeld, ECDSep: p −= t ∂H/∂q with their rates)",
    "O": "Ornstein–Uhlenbeck: exact friction + noise on p",
    "C": "thermostat friction: p ∗= exp(−ξt)",
    "D": "additive noise: p += σ√t M^½ R",
    "E": "thermostat variable: ξ += t k (pᵀM⁻¹p − Nτ)",
    "T": "Nosé–Hoover chain propagation",
    "G": "explicit gradient step (overdamped)",
    "W": "Brownian increment (overdamped)",
    "L": "Leimkuhler–Matthews increment (overdamped)",
    "S": ("energy shell: projection onto the energy surface and bounces (BornInfeld, ECDSep; "
          "once per step, fraction 1)"),
    "R": "random rotation of p keeping |p| (ECDSep's generalised bounce; once per step)",
    "F": "explicit-Euler friction: p ∗= (1 − tγ) (PortHamiltonian heavy ball)",
}

#: Letters whose sub-flow is not self-adjoint (its reverse-time map is not its inverse), so a
#: palindrome containing them is not time-symmetric and keeps weak order 1: F (explicit-Euler
#: friction, (1 − tγ) ≠ 1/(1 + tγ)), G (explicit gradient step), L (Leimkuhler–Matthews increment,
#: second order for the invariant measure only), S (energy-shell projection and bounces), R
#: (random rotation).
NON_SYMMETRIC = frozenset("FGLSR")

#: Letters that cannot run backwards in time, so their fractions must be >= 0: noise (O, D, W,
#: L: a negative variance, or in O an anti-friction without noise) and explicit friction or
#: gradient steps (F, G). Negative fractions stay legal for the reversible sub-flows, e.g. A and
#: B in Forest–Ruth's fourth-order composition.
FORWARD_ONLY = frozenset("ODWLFG")

__all__ = ["ABOBA", "ALPHABET", "BAOAB", "FORWARD_ONLY", "NON_SYMMETRIC", "OBABO", "Leapfrog",
           "Splitting", "VelocityVerlet"]


class Splitting(AbstractIntegrator):
    r"""A splitting integrator given by a string over the letter alphabet.

    ``Splitting("BAOAB")`` is the composition B_{h/2} A_{h/2} O_h A_{h/2} B_{h/2} (applied left
    to right). By default each occurrence of a letter gets the fraction 1/(number of occurrences
    of that letter), which is the symmetric Strang choice for palindromes; pass ``fractions`` for
    anything else. Every letter's fractions must sum to 1 (consistency).

    Alphabet (:data:`ALPHABET`; which letters a system offers is ``system.letters``):

    | letter | sub-flow |
    |---|---|
    | A | drift q += t M⁻¹p |
    | B | kick p −= t∇U(q) |
    | O | Ornstein–Uhlenbeck (exact) |
    | C, D, E | adaptive-Langevin / Nosé–Hoover friction, noise, thermostat |
    | T | Nosé–Hoover chain |
    | G, W, L | overdamped gradient step, Brownian and Leimkuhler–Matthews increments |
    | S, R | energy shell (projection, bounces) and momentum rotation of BornInfeld / ECDSep |
    | F | explicit-Euler friction of the port-Hamiltonian heavy ball |

    A palindromic composition of exact (or symmetric) sub-flows is time-symmetric and therefore
    second order; ``weak_order`` reports 2 for palindromes of such letters and 1 otherwise (also
    for a palindrome with a letter of :data:`NON_SYMMETRIC`, e.g. ``"FBABF"``).

    Args:
        scheme: The letter string, e.g. ``"BAOAB"``. Spaces are ignored (``"B A O A B"``).
        fractions: Optional fraction of h for each letter of ``scheme``.
        name: Display name (defaults to the string).
    """

    def __init__(
        self, scheme: str, fractions: Sequence[float] | None = None, *, name: str | None = None
    ) -> None:
        if not isinstance(scheme, str):
            raise TypeError(f"scheme must be a string of letters, got {scheme!r}")
        letters = scheme.replace(" ", "")
        if not letters:
            raise ValueError("scheme must contain at least one letter, got an empty string")
        unknown = sorted({c for c in letters if c not in ALPHABET})
        if unknown:
            raise ValueError(
                f"scheme {scheme!r} contains unknown letter(s) {unknown}; the alphabet is "
                + ", ".join(f"{k} ({v})" for k, v in ALPHABET.items())
            )
        counts = Counter(letters)
        if fractions is None:
            fr = [1.0 / counts[c] for c in letters]
        else:
            fr = [check_real(f"fractions[{i}]", f) for i, f in enumerate(fractions)]
            if len(fr) != len(letters):
                raise ValueError(
                    f"fractions has {len(fr)} entries but scheme {scheme!r} has "
                    f"{len(letters)} letters"
                )
            for i, (c, f) in enumerate(zip(letters, fr, strict=True)):
                if f < 0 and c in FORWARD_ONLY:
                    raise ValueError(
                        f"fractions[{i}] = {f} for letter {c!r}: its sub-flow (noise, friction or "
                        "an explicit gradient step) cannot run backwards in time; only the "
                        f"letters {''.join(sorted(set(ALPHABET) - FORWARD_ONLY))} take negative "
                        "fractions")
            for c in counts:
                total = sum(f for l2, f in zip(letters, fr, strict=True) if l2 == c)
                if abs(total - 1.0) > 1e-12:
                    raise ValueError(
                        f"the fractions of letter {c!r} in scheme {scheme!r} sum to {total}, "
                        "not 1: the scheme would not be consistent"
                    )
        self.scheme = letters
        self.fractions = tuple(fr)
        self.name = name or letters
        self.weak_order = 2 if self._is_symmetric() and not NON_SYMMETRIC & set(letters) else 1
        self.is_symplectic = set(letters) <= {"A", "B"}

    def _is_symmetric(self) -> bool:
        seq = list(zip(self.scheme, self.fractions, strict=True))
        pairs = zip(seq, reversed(seq), strict=True)
        return len(seq) > 1 and all(a[0] == b[0] and abs(a[1] - b[1]) < 1e-15 for a, b in pairs)

    def letters(self) -> LetterSequence:
        return list(zip(self.scheme, self.fractions, strict=True))

    def __repr__(self) -> str:
        if type(self) is not Splitting:
            return f"{type(self).__name__}()"
        parts = [repr(self.scheme)]
        counts = Counter(self.scheme)
        if self.fractions != tuple(1.0 / counts[c] for c in self.scheme):
            parts.append(f"fractions={self.fractions!r}")
        if self.name != self.scheme:
            parts.append(f"name={self.name!r}")
        return f"Splitting({', '.join(parts)})"


@named("baoab")
class BAOAB(Splitting):
    r"""BAOAB, ``Splitting("BAOAB")``: B_{h/2} A_{h/2} O_h A_{h/2} B_{h/2} for Langevin dynamics.

    One step, with c = e^{−γh}:

    .. math::
        p' = p_n - \tfrac h2 \nabla U(q_n),\quad q' = q_n + \tfrac h2 M^{-1}p',\quad
        \tilde p = c\,p' + \sqrt{(1 - c^2)\tau}\,M^{1/2} R_n,\\
        q_{n+1} = q' + \tfrac h2 M^{-1}\tilde p,\quad
        p_{n+1} = \tilde p - \tfrac h2 \nabla U(q_{n+1}).

    | symbol | code |
    |---|---|
    | h | ``h`` of :func:`~dynopt.integrate` (``lr`` of the optimizers) |
    | γ, τ, M | the system's ``gamma``, ``temperature``, ``mass`` |
    | Rₙ | standard normals (``noise=``) |

    One gradient per step (the closing kick's gradient opens the next step). Weak order 2; on
    U = ω²q²/2 it samples ⟨q²⟩ = τ/ω² exactly for every stable h (hω < 2), while the
    integer-step ⟨p²⟩ = τ(1 − h²ω²/4) carries an O(h²) bias.

    Reference: B. Leimkuhler, C. Matthews, "Rational construction of stochastic numerical
    methods for molecular sampling", Appl. Math. Res. Express 2013(1), arXiv 1203.5428.
    """

    def __init__(self) -> None:
        super().__init__("BAOAB", name="BAOAB")


@named("aboba")
class ABOBA(Splitting):
    r"""ABOBA, ``Splitting("ABOBA")``: A_{h/2} B_{h/2} O_h B_{h/2} A_{h/2} for Langevin dynamics.

    One step, with c = e^{−γh}:

    .. math::
        q' = q_n + \tfrac h2 M^{-1}p_n,\quad p' = p_n - \tfrac h2 \nabla U(q'),\quad
        \tilde p = c\,p' + \sqrt{(1 - c^2)\tau}\,M^{1/2} R_n,\\
        p_{n+1} = \tilde p - \tfrac h2 \nabla U(q'),\quad
        q_{n+1} = q' + \tfrac h2 M^{-1}p_{n+1}.

    | symbol | code |
    |---|---|
    | h | ``h`` of :func:`~dynopt.integrate` (``lr`` of the optimizers) |
    | γ, τ, M | the system's ``gamma``, ``temperature``, ``mass`` |
    | Rₙ | standard normals (``noise=``) |

    One gradient per step, at the midpoint q'. A palindrome, so weak order 2; its linear
    stability limit is h²λ/M < 4 at any γ (:func:`dynopt.diagnostics.stability_limit`).

    Reference: B. Leimkuhler, C. Matthews, "Rational construction of stochastic numerical
    methods for molecular sampling", Appl. Math. Res. Express 2013(1), arXiv 1203.5428.
    """

    def __init__(self) -> None:
        super().__init__("ABOBA", name="ABOBA")


@named("obabo")
class OBABO(Splitting):
    r"""OBABO, ``Splitting("OBABO")``: O_{h/2} B_{h/2} A_h B_{h/2} O_{h/2}, velocity Verlet
    between two half Ornstein–Uhlenbeck steps.

    One step, with c = e^{−γh/2}:

    .. math::
        p' = c\,p_n + \sqrt{(1 - c^2)\tau}\,M^{1/2} R_n,\quad
        p'' = p' - \tfrac h2 \nabla U(q_n),\quad q_{n+1} = q_n + h M^{-1}p'',\\
        \tilde p = p'' - \tfrac h2 \nabla U(q_{n+1}),\quad
        p_{n+1} = c\,\tilde p + \sqrt{(1 - c^2)\tau}\,M^{1/2} R_n'.

    | symbol | code |
    |---|---|
    | h | ``h`` of :func:`~dynopt.integrate` (``lr`` of the optimizers) |
    | γ, τ, M | the system's ``gamma``, ``temperature``, ``mass`` |
    | Rₙ | standard normals (``noise=``) |

    One gradient and two sets of normals per step. A palindrome, so weak order 2; its linear
    stability limit is h²λ/M < 4 at any γ.

    Reference: G. Bussi, M. Parrinello, "Accurate sampling using Langevin dynamics",
    Phys. Rev. E 75, 056707 (2007); B. Leimkuhler, C. Matthews, Appl. Math. Res. Express
    2013(1) (compared with BAOAB and ABOBA).
    """

    def __init__(self) -> None:
        super().__init__("OBABO", name="OBABO")


@named("leapfrog", "velocity-verlet", "verlet")
class Leapfrog(Splitting):
    r"""Leapfrog (velocity Verlet, Störmer–Verlet), ``Splitting("BAB")``: B_{h/2} A_h B_{h/2}.

    .. math::
        p_{n+1/2} = p_n - \tfrac h2 \nabla U(q_n),\quad q_{n+1} = q_n + h M^{-1}p_{n+1/2},\quad
        p_{n+1} = p_{n+1/2} - \tfrac h2 \nabla U(q_{n+1}).

    | symbol | code |
    |---|---|
    | h | ``h`` of :func:`~dynopt.integrate` (``lr`` of the optimizers) |
    | M | the system's ``mass`` |

    Symplectic, time-reversible, second order, one gradient per step: it conserves a modified
    Hamiltonian H + O(h²), so the energy error stays bounded (no secular drift) for
    h²λ/M < 4 (docs/studies.md, part (a)). On a system at a positive temperature it draws no
    noise, so the thermostat is dropped (with a ``UserWarning``).

    Reference: L. Verlet, Phys. Rev. 159, 98 (1967); E. Hairer, C. Lubich, G. Wanner,
    "Geometric numerical integration illustrated by the Störmer–Verlet method", Acta Numerica
    12 (2003).
    """

    def __init__(self) -> None:
        super().__init__("BAB", name="Leapfrog")


VelocityVerlet = Leapfrog
