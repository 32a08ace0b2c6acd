r"""Nosé–Hoover thermostat (single or chain) as a ``torch.optim.Optimizer``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor

from .. import systems
from .._validation import check_positive, check_real
from ._common import as_params
from .dynamics import (
    LR,
    MASS,
    SCOPE,
    Hyper,
    OptimizerDynamics,
    Value,
    int_at_least,
    one_of,
    register_dynamics,
)
from .partitioned import Partitioned
from .registry import register

__all__ = ["NOSE_HOOVER", "NoseHoover"]


def _system(group: Mapping[str, Any], value: Value) -> systems.AbstractSystem:
    """A single thermostat (``chain_length == 1``) or a chain; the period τ_NH from ``tau``,
    else from ``thermostat_mass`` (τ = √(Q/τ)), else 100·lr."""
    tau_t = value("temperature")
    period = value("tau") if group.get("tau") is not None else None
    q = value("thermostat_mass") if group.get("thermostat_mass") is not None else None
    if period is None:
        period = math.sqrt(q / tau_t) if q is not None else 100.0 * value("lr")
    if int(group["chain_length"]) == 1:
        xi0 = 0.0 if group.get("xi0") is None else value("xi0")
        return systems.NoseHoover(None, temperature=tau_t, tau=period, thermostat_mass=q,
                                  xi0=xi0, mass=value("mass"))
    if group.get("xi0") is not None and value("xi0") != 0.0:
        raise ValueError(f"xi0 is the initial ξ of a single thermostat (chain_length=1); a chain "
                         f"(chain_length={int(group['chain_length'])}) starts at ξ = 0, got "
                         f"xi0={group['xi0']!r}")
    return systems.NoseHooverChain(None, temperature=tau_t,
                                   chain_length=int(group["chain_length"]), tau=period,
                                   n_substeps=int(group["n_substeps"]),
                                   sy_order=int(group["sy_order"]), mass=value("mass"))


#: Nosé–Hoover (single thermostat or chain) as an optimizer dynamics.
NOSE_HOOVER = register_dynamics(OptimizerDynamics(
    name="nose-hoover",
    hypers={"lr": LR, "temperature": Hyper(1e-4, check_positive, schedulable=True),
            "mass": MASS, "xi0": Hyper(None, check_real, optional=True),
            "tau": Hyper(None, check_positive, optional=True),
            "thermostat_mass": Hyper(None, check_positive, optional=True), "scope": SCOPE,
            "chain_length": Hyper(1, int_at_least(1), numeric=False),
            "n_substeps": Hyper(1, int_at_least(1), numeric=False),
            "sy_order": Hyper(3, one_of((1, 3, 5, 7)), numeric=False)},
    system=_system,
    scheme=lambda group: "ECBABCE" if int(group["chain_length"]) == 1 else "TBABT"))


class NoseHoover(Partitioned):
    r"""Deterministic Nosé–Hoover dynamics (``chain_length=1``) or a Nosé–Hoover chain.

    .. math:: \dot\theta = M^{-1}p,\quad \dot p = -\nabla L - \xi p,\quad
              \dot\xi = \frac{p^\top M^{-1}p - N k_BT}{Q},\quad \dot\eta = \xi,

    conserving H_ext = L + pᵀM⁻¹p/2 + Qξ²/2 + N k_BT η (exactly for the flow; the symmetric
    splitting keeps its error bounded for a full-batch loss). With ``chain_length = M > 1`` the
    thermostat is a Martyna–Klein–Tuckerman chain (:class:`~dynopt.systems.NoseHooverChain`:
    Q₁ = N k_BT τ_NH², Q_j = k_BT τ_NH², Suzuki–Yoshida substeps). A single thermostat is not
    ergodic for small or stiff systems (the 1-D harmonic oscillator); a chain of length ≥ 3 is.

    Default schemes: ``"ECBABCE"`` (single; run as E½C½B½A, then B½C½E½E½C½B½A) and
    ``"TBABT"`` (chain; T½B½A, then B½T½T½B½A).

    | symbol | code |
    |---|---|
    | h | ``lr`` |
    | k_BT | ``temperature`` (> 0) |
    | τ_NH | ``tau`` (thermostat period; default 100·lr, as jax-md, from the current lr: under |
    |  | an lr schedule the period stays 100 steps, so Q = N k_BT τ_NH² follows lr²; pass ``tau`` |
    |  | or ``thermostat_mass`` for a fixed Q) |
    | Q/N | ``thermostat_mass`` (single thermostat; overrides ``tau``: Q = N·thermostat_mass) |
    | M | ``chain_length`` |
    | ξ₀ | ``xi0`` (single thermostat) |
    | N | elements in the ``scope`` of ξ (``"tensor"``, ``"group"``, ``"model"``) |

    Reference: S. Nosé, J. Chem. Phys. 81, 511 (1984); W. G. Hoover, Phys. Rev. A 31, 1695
    (1985); G. J. Martyna, M. L. Klein, M. Tuckerman, J. Chem. Phys. 97, 2635 (1992) (chains).

    Args:
        params: Parameters or param groups.
        lr: Step size h > 0 (default 0.1; groups may set their own).
        temperature: k_BT > 0.
        tau: Thermostat period (> 0).
        thermostat_mass: Q per degree of freedom (> 0).
        chain_length: M ≥ 1.
        xi0: Initial ξ (single thermostat).
        scope: ``"tensor"``, ``"group"`` or ``"model"``.
        scheme: Splitting string or integrator (None: the default above).
        n_substeps, sy_order: Chain substeps and Suzuki–Yoshida order (1, 3, 5, 7).
        mass: Scalar mass.
        weight_decay: λ ≥ 0, the Gaussian prior λ|θ|²/2 (:mod:`dynopt.optim.prior`).
        seed, foreach, fused, maximize, differentiable, nonfinite: See
            :class:`~dynopt.optim.Partitioned`.
    """

    only_dynamics = "nose-hoover"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor | Callable[[int], float] = 0.1,
        temperature: float | Callable[[int], float] = 1e-4,
        tau: float | None = None,
        thermostat_mass: float | None = None,
        chain_length: int = 1,
        *,
        xi0: float = 0.0,
        scope: str = "tensor",
        scheme: Any = None,
        n_substeps: int = 1,
        sy_order: int = 3,
        mass: float = 1.0,
        weight_decay: float = 0.0,
        seed: int | None = None,
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        super().__init__(params, lr, dynamics="nose-hoover", temperature=temperature, tau=tau,
                         thermostat_mass=thermostat_mass, chain_length=chain_length, xi0=xi0,
                         scope=scope, scheme=scheme, n_substeps=n_substeps, sy_order=sy_order,
                         mass=mass, weight_decay=weight_decay, seed=seed, foreach=foreach,
                         fused=fused, maximize=maximize,
                         differentiable=differentiable, nonfinite=nonfinite)


@register("nose-hoover")
def _make(model_or_params: Any, **kw: Any) -> NoseHoover:
    """Nosé–Hoover with h = 0.1 and τ = 1e-4 unless given."""
    return NoseHoover(as_params(model_or_params), **kw)
