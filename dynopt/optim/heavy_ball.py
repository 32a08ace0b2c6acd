"""The port-Hamiltonian heavy ball, with event-triggered braking."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .._validation import check_nonnegative, check_positive, check_real
from ..events.actions import Action, SetFriction, Stop
from ..events.triggers import Trigger
from ..integrators.splitting import Splitting
from ..program import OpCode
from ..systems.port_hamiltonian import PortHamiltonian, friction_factor
from ._events import as_scalar
from ._paths import bucket, choose_path
from .base import Hyper
from .bound import _PENDING, heavy_ball_bounded
from .eventful import EventfulOptimizer, Participants
from .fused import kick_drift
from .registry import register

__all__ = ["HeavyBall"]

#: The heavy ball's scheme (the optimizer's letters come from the system's program).
SCHEME = Splitting("FBA")


class HeavyBall(EventfulOptimizer):
    r"""Heavy ball with friction, the port-Hamiltonian system ẋ = (J − R(t))∇H.

    :class:`~dynopt.systems.PortHamiltonian` with H = L(θ) + |p|²/2, R = diag(0, γ(t)),
    discretised by its scheme ``"FBA"`` (semi-implicit Euler) with step h:

    .. math:: p_{k+1} = (1 - \gamma_k h)\,p_k - h\,\nabla L(\theta_k), \qquad
              \theta_{k+1} = \theta_k + h\,p_{k+1},

    which is exactly ``torch.optim.SGD(lr=h², momentum=1 − γh)`` with SGD's buffer b = −p/h.
    One step is conformally symplectic: det ∂(θ', p')/∂(θ, p) = (1 − γh)^d.

    With ``events=[LossBelow(f, then=SetFriction(γ_after))]`` it is the goal-oriented braking
    scheme of Burghoff, Heinrich Monells & Gottschalk ("Who Breaks Early, Looses", ICANN 2023):
    explore with friction ``gamma`` until the loss first drops to f·L₀, then brake with
    γ_after; the update of the firing step already uses γ_after. Events need the loss:
    call ``step(closure)`` or ``step(loss=loss)``.

    | symbol | code | ``torch.optim.SGD`` |
    |---|---|---|
    | h | ``lr`` | ``lr = h²`` |
    | γ | ``gamma`` (float or schedule ``callable(step)``) | ``momentum = 1 − γh`` |
    | p | ``state[θ]["momentum"]`` | ``−h · momentum_buffer`` |
    | γ after an event | ``global_state["gamma_override"]`` | – |

    Paths: ``fused`` (numba, CPU float32/float64: one pass over θ, p, ∇L), ``foreach`` (the
    default on CUDA) and the single-tensor reference (``foreach=False, fused=False``).

    Args:
        params: Parameters or param groups.
        lr: Step size h > 0 (default 0.1; LR schedulers change h).
        gamma: Friction γ ≥ 0, a float or a schedule ``callable(step) -> float``.
        momentum: Or the friction as SGD's momentum c = 1 − γh ∈ [0, 1] (None: use ``gamma``);
            when set it overrides ``gamma``, so ``OneCycleLR(cycle_momentum=True)`` cycles it.
        weight_decay: λ ≥ 0, the Gaussian prior λ|θ|²/2 added to the potential (the loss the
            events observe includes it); = SGD's ``weight_decay``.
        events: Triggers (:mod:`dynopt.events`) with ``SetFriction`` / ``Stop`` actions,
            observing ``loss``, ``energy`` (= L + |p|²/2) or ``step``.
        foreach: Use the foreach path (default: on CUDA).
        fused: Use the fused numba CPU path (default: on CPU).
        maximize: Maximize the objective (the dynamics descends U = −loss: an ``"energy"`` event
            sees H = −loss + ½|p|²; loss events see the loss as given).
        differentiable: Run the single-tensor path under autograd (gradients through the
            step, as torch's ``differentiable=True``).
        seed: Seed of the optimizer's generator (unused by the update; kept for the contract).
        nonfinite: ``"raise"``, ``"skip"`` or ``"ignore"`` for NaN/inf gradients.
    """

    schedulable = ("lr", "gamma")
    supported_actions = (SetFriction, Stop)
    supports_differentiable = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: Hyper = 0.1,
        gamma: Hyper = 0.0,
        *,
        momentum: float | None = None,
        weight_decay: float = 0.0,
        events: Iterable[Trigger] | Trigger | None = None,
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        seed: int | None = None,
        nonfinite: str = "raise",
    ) -> None:
        defaults = {"lr": lr, "gamma": gamma, "momentum": momentum,
                    "weight_decay": weight_decay, "foreach": foreach, "fused": fused,
                    "maximize": maximize, "differentiable": differentiable}
        super().__init__(params, defaults, events=events, seed=seed, nonfinite=nonfinite)
        #: The continuous system (its friction is the optimizer's ``gamma`` / event override).
        self.system = PortHamiltonian(None, gamma=0.0)

    def _validate_group(self, group: dict[str, Any], index: int) -> None:
        super()._validate_group(group, index)
        self._check_hyper(group, index, "gamma", check_nonnegative)
        if group.get("momentum") is not None:
            self._check_hyper(group, index, "momentum", _check_momentum)

    def friction(self, group: dict[str, Any]) -> float:
        """The γ used for ``group`` at the current step (an event's override if one fired)."""
        override = self.global_state.get("gamma_override")
        if override is not None:
            return float(override)
        if group.get("momentum") is not None:  # c = 1 − γh
            c = self.hyper(group, "momentum", _check_momentum)
            # γ = (1 − c)/h: defined for a stepping group only (a paused one, lr = 0, has none)
            return (1.0 - c) / self.hyper(group, "lr", check_positive)
        return self.hyper(group, "gamma", check_nonnegative)

    def _apply_action(self, action: Action) -> None:
        if isinstance(action, SetFriction):
            self.global_state["gamma_override"] = action.gamma

    _result_bounded = heavy_ball_bounded  # the snapshot-free result check

    def _potential_sign(self) -> float:
        """+1, or −1 when every group maximizes (the dynamics descends U = −loss); the energy
        of a model whose groups disagree is undefined (refused)."""
        flags = {bool(g.get("maximize")) for g in self.param_groups}
        if len(flags) > 1:
            raise ValueError("HeavyBall: an 'energy' event needs one objective, but some param "
                             "groups maximize and others minimize")
        return -1.0 if flags == {True} else 1.0

    def _step(self, loss: Any, parts: Participants) -> None:
        if len(self._events):
            device = self.device_of(parts)
            values = {} if loss is None else {"loss": as_scalar(loss, device)}
            if self._events.needs("energy"):  # H = U + ½|p|², U = −loss under maximize
                moms = [self.momentum(p) for _, ps, _ in parts for p in ps]
                kinetic = self.norm2_tensor(moms, device)
                held = self.held_momenta(moms)  # paused groups', tensors without a gradient
                if held:
                    kinetic = kinetic + self.norm2_tensor(held, device)
                values["energy"] = self._potential_sign() * values["loss"] + 0.5 * kinetic
            if self.run_events(values, device):
                self.__dict__.pop(_PENDING, None)  # nothing written: no bound to carry
                return
        steps = []  # every group's coefficients first: a refused one leaves all unwritten
        for group, params, grads in parts:
            if params:
                h = self.hyper(group, "lr")
                gamma = self.friction(group)
                steps.append((group, params, grads, self._momenta(params), h, gamma,
                              _friction_factor(gamma, h)))
        for group, params, grads, moms, h, gamma, c in steps:
            path = choose_path(group, params + grads + moms, "HeavyBall")
            if path == "fused":
                kick_drift(params, grads, moms, c, h, h)
            elif path == "foreach":
                for ps, gs, ms in bucket(params, grads, moms).values():
                    torch._foreach_mul_(ms, c)
                    torch._foreach_add_(ms, gs, alpha=-h)
                    torch._foreach_add_(ps, ms, alpha=h)
            else:
                self._reference_step(params, grads, moms, h, gamma)

    def _reference_step(self, params: list[Tensor], grads: list[Tensor], moms: list[Tensor],
                        h: float, gamma: float) -> None:
        """The single-tensor path: the system's program ``F B A`` op by op."""
        from ..backends.torch import energy_ops, ops

        program = SCHEME.lower_sequence(self.system, SCHEME.letters(), h)
        for p, g, m in zip(params, grads, moms, strict=True):
            for op in program:
                if op.code == OpCode.LIN_FRIC:
                    energy_ops.linear_friction_(m, gamma, op.f[0])
                elif op.code == OpCode.KICK:
                    ops.kick_(m, g, op.f[0])
                else:
                    ops.drift_(p, m, op.f[0], 1.0)


def _check_momentum(name: str, value: object) -> float:
    c = check_real(name, value)
    if not 0.0 <= c <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (it is 1 - gamma*lr), got {value!r}")
    return c



def _friction_factor(gamma: float, h: float) -> float:
    """c = 1 − γh of the friction step p ← c p; γh > 2 makes |c| > 1, a friction that
    amplifies the momentum every step (refused, naming both: the system's own check)."""
    return friction_factor(gamma, h, step="lr")


@register("heavyball")
def _make(model_or_params: Any, **kwargs: Any) -> HeavyBall:
    params = model_or_params.parameters() if isinstance(model_or_params, torch.nn.Module) else (
        model_or_params)
    return HeavyBall(params, **kwargs)
