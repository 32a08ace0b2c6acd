r"""DDPNOpt: training as optimal control (Liu, Chen & Theodorou, ICLR 2021).

Each affine layer's parameters u_t are updated by the locally optimal affine policy of
differential dynamic programming on the network's layer dynamics
(:class:`~dynopt.systems.DDPTrajectory`):

.. math::

    u_t \leftarrow u_t + k_t + K_t\,\delta x_t,\qquad
    k_t = \text{the base optimizer's step} \;(= -\eta M_t^{-1} Q_u \text{ without momentum}),
    \qquad K_t\,\delta x_t = -\eta\, M_t^{-1}\,
    \mathbb{E}_i\!\left[Q_{ux}^{(i)}\,\delta x_t^{(i)}\right],

with ``δx_t = x̂_t − x_t`` the change of the layer's input caused by the updates of the earlier
layers, measured by an extra forward pass, ``Q_uu ≈ M_t/η`` the base optimizer's curvature
(identity for SGD, the adaptive diagonal of RMSprop / Adam, Kronecker factors for EKFAC) and
``Q_ux`` from the Gauss–Newton outer-product factorization (never formed: the feedback is a
per-sample re-weighted gradient). ``Q_u`` comes from the backward Bellman pass: for the last
layer it is the ordinary gradient; for earlier layers the costate is the Bellman one
``V_x = Q_x − Q_uxᵀ Q_uu⁻¹ Q_u`` (``costate="bellman"``, the paper's Eq. 5) or the plain
back-propagated gradient (``costate="backprop"``).

**Exact equivalence.** With ``feedback=False`` (Q_ux := 0, the paper's Proposition 2) the update
is the base optimizer's, bit for bit: ``base="sgd"`` is ``torch.optim.SGD(lr, momentum,
dampening, weight_decay, nesterov)``, ``"rmsprop"`` is ``torch.optim.RMSprop(lr, alpha, eps,
weight_decay, momentum, centered)``, ``"adam"`` is ``torch.optim.Adam(lr, betas, eps,
weight_decay)``; ``"ekfac"`` is dynopt's EKFAC (:mod:`dynopt.optim.ddp_bases`).

**ε_Vxx.** ``eps_placement="vxx"`` (default) is the paper's Algorithm 3, line 12: after each
stage's Bellman update ``V_xx ← V_xx + ε I``, so the term propagates into Q_xx, Q_ux, the
costate and V_xx of every earlier layer, and the terminal Hessian is not regularized (the last
layer's gain has no ε). It makes the per-sample value Hessian dense (rank ≤ 2·dim x_t), so the
backward pass costs O(B·n³) per layer of width n. ``eps_placement="qux"`` is Tassa et al.'s
placement, ``Q_ux = f_uᵀ(V'_xx + εI)f_x`` in every layer's gain (the last one included), not
propagated (dynopt's placement before issue 12). Default ``vxx_reg=0``: no value we measured
removed the transient collapses at large learning rates in all seeds (DIGITS, SGD lr 1, 5 seeds:
ε = 0.03 reduced them, ε = 0.1 made one seed collapse for good, ε = 0.3 collapsed every run;
docs/reproductions.md).
With Q_uu replaced by the base optimizer's M/η, ε enlarges the feedback gain
−ηM⁻¹f_uᵀ(V_xx + εI)f_x without shrinking the open-loop step, so it is not a damping here. The
paper's own value of ε_Vxx (its appendix A.6) is unknown to us.

**Usage.** The optimizer takes the model (an ``nn.Sequential``) and registers forward hooks
that record the activations of every forward pass run with gradients enabled, and tensor hooks
that record ``∂J/∂x_t`` during ``loss.backward()``. The ordinary loop works unchanged::

    opt = dynopt.optim.DDPNOpt(model, lr=0.1, base="sgd")
    for xb, yb in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)     # the batch MEAN of per-sample losses
        loss.backward()
        opt.step()

``step()`` uses the last forward pass run with gradients enabled (evaluate under
``torch.no_grad()``; a later layer run on its own, ``model[2](h)``, is not recorded) and
raises ``RuntimeError`` if that pass got no backward or the parameters changed since.
``opt.step(closure)`` works as usual. ``opt.remove_hooks()`` detaches the optimizer from the
model (until ``opt.attach_hooks()``).

**Standard tooling.** ``GradScaler`` (either ``scaler.step(opt)`` or ``scaler.unscale_(opt)``
then clipping): the recorded activation gradients are brought to the units of the parameter
gradients at ``step()`` (the common factor fitted on the last trainable layer, snapped to a
power of two), so the loss scale never reaches them and a scaled run equals the unscaled one
bit for bit. ``torch.autocast`` (bf16/fp16): the record is kept in the parameters' dtype and
the nominal activations are recomputed in it. bf16/fp16 *parameters* raise ``TypeError`` (the
feedback needs float32/float64; ``feedback=False`` is the base optimizer and accepts them).
Parameters with ``requires_grad=False``, without a gradient or outside every param group are
not controls: they never move and their block of M⁻¹ is 0 (EKFAC needs a layer's weight and
bias both trainable or both frozen). Compiled models: the hooks run eagerly, and attaching them
resets torch.compile's caches. Activation checkpointing (``torch.utils.checkpoint``,
``use_reentrant=False``) works: the layers recomputed inside ``backward()`` are not recorded.
Gradient accumulation over several backward passes is refused
(``RuntimeError`` at ``step()``; the per-sample quantities come from one batch), as is any
change of the gradients between ``backward()`` and ``step()`` other than a common factor.

| symbol | code |
|---|---|
| η | ``lr`` (schedulable) |
| ε_Vxx (Tikhonov on V_xx) | ``vxx_reg`` |
| where ε_Vxx enters | ``eps_placement`` |
| l_t(u) = wd/2 ‖u‖² | ``weight_decay`` |
| M_t | ``base`` (+ ``momentum``, ``betas``, ``alpha``, ``eps``, ``damping``, ...) |
| terminal V_xx = Z Zᵀ | ``terminal_hessian`` |
| f_xx, f_ux terms | ``expansion="second-order"`` |

Reference: G.-H. Liu, T. Chen, E. A. Theodorou, "DDPNOpt: Differential Dynamic Programming
Neural Optimizer", ICLR 2021 (arXiv:2002.08809). See docs/ddpnopt-surfing.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._validation import (
    check_choice,
    check_int,
    check_nonnegative,
    check_positive,
    check_probability,
)
from ..ddp.layers import AffineLayer
from ..ddp.trajectory import DDPTrajectory, StageData, StagePolicy, TerminalHessian
from ..errors import DivergenceError
from .base import DynamicsOptimizer
from .checkpoint import Key
from .ddp_bases import (
    BASES,
    DIAGONAL_STATE,
    EKFAC_STATE,
    NONNEGATIVE_STATE,
    LayerStep,
    ParamStep,
    batch_second_moment,
    diagonal_layer_step,
    ekfac_layer_step,
    ekfac_state_shapes,
    param_step,
)
from .finite import all_finite
from .registry import register

__all__ = ["DDPNOpt"]

EXPANSIONS = ("gauss-newton", "second-order")
FEEDBACK_CURVATURES = ("base", "batch")
COSTATES = ("bellman", "backprop")
EPS_PLACEMENTS = ("vxx", "qux")
#: torch's default learning rate of each base (used when ``lr`` is None).
DEFAULT_LR = {"sgd": 1e-3, "rmsprop": 1e-2, "adam": 1e-3, "ekfac": 1e-2}
#: The hyperparameters each base reads, with their defaults. A group holds only its base's keys,
#: so a scheduler never changes a key that has no effect (``OneCycleLR(cycle_momentum=True)``
#: cycles ``momentum`` for sgd/rmsprop/ekfac and ``betas`` for adam), and a key given for a base
#: that does not read it is refused: at construction, and at ``step()`` when one was set since
#: (OneCycleLR with ``cycle_momentum=True`` writes the defaults' base's key into every group, so
#: with mixed bases it is refused; use ``cycle_momentum=False`` there).
BASE_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.0, "dampening": 0.0, "nesterov": False},
    "rmsprop": {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False},
    "adam": {"betas": (0.9, 0.999), "eps": 1e-8},
    "ekfac": {"momentum": 0.0, "damping": 1e-3, "ekfac_decay": 0.95, "update_freq": 10},
}
_BASE_KEYS = frozenset(k for keys in BASE_HYPERPARAMETERS.values() for k in keys)


class DDPNOpt(DynamicsOptimizer):
    """Differential Dynamic Programming Neural Optimizer (see the module docstring).

    Args:
        model: The network, an ``nn.Sequential`` of Linear / Conv2d / elementwise activations /
            Flatten (:class:`~dynopt.systems.DDPTrajectory`).
        lr: Learning rate η (default: torch's default of the base).
        base: ``"sgd"``, ``"rmsprop"``, ``"adam"`` or ``"ekfac"``.
        feedback: Use the feedback K δx (False: exactly the base optimizer).
        weight_decay: L2 running cost ℓ(u) = wd‖u‖²/2 (added to the gradient, as torch does).
        momentum: Momentum (sgd, rmsprop, ekfac), applied to the open-loop step only. Each of
            the base-specific hyperparameters below (``momentum`` to ``update_freq``) is kept
            only in groups whose base reads it (:data:`BASE_HYPERPARAMETERS`; None: the base's
            default, torch's); one given for another base raises ValueError.
        dampening: SGD dampening.
        nesterov: SGD Nesterov momentum.
        alpha: RMSprop smoothing constant.
        centered: Centered RMSprop.
        betas: Adam's (β₁, β₂).
        eps: RMSprop / Adam ε.
        damping: EKFAC Tikhonov damping λ.
        ekfac_decay: EKFAC running-average decay.
        update_freq: EKFAC eigenbasis refresh period (steps).
        vxx_reg: ε_Vxx ≥ 0, the Tikhonov term on the value Hessian (default 0; see the module
            docstring).
        eps_placement: ``"vxx"`` (Algorithm 3: V_xx ← V_xx + εI after each Bellman update,
            propagated; default) or ``"qux"`` (Tassa: inside each layer's Q_ux only).
        expansion: ``"gauss-newton"`` (the paper's Eq. 12) or ``"second-order"`` (adds
            V_x·σ'' and V_h·g_ux to Q_ux; the paper's vanishing-gradient variant).
        costate: ``"bellman"`` or ``"backprop"`` (see the module docstring).
        feedback_curvature: The M of the feedback and value recursion for RMSprop / Adam:
            ``"batch"`` (default: diag(√E_i[Q_u⁽ⁱ⁾ ⊙ Q_u⁽ⁱ⁾]) + ε, the batch second moment of
            the per-sample gradients: the paper's Table-2 formula read with E the batch
            expectation) or ``"base"`` (the base optimizer's own diag(√v) + ε, whose scale is
            the mean gradient's: with it the feedback blew up at large learning rates in our
            tests). The open-loop step is the base optimizer's either way; ignored for SGD
            (M = I) and EKFAC.
        terminal_hessian: The terminal value-Hessian factor: ``"cross-entropy"`` (default; the
            exact Hessian of softmax cross-entropy on the logits, i.e. Gauss–Newton), ``"outer"``
            (∇φ∇φᵀ, the paper's Prop. 3 example; any loss, but it overestimates the curvature
            of badly fit samples and made training diverge at large lr in our tests),
            ``"identity"`` (squared error) or a callable (see DDPTrajectory). Match it to the
            loss.
        params: Optional param groups over the model's parameters (a layer's weight and bias
            must share a group); default: one group with all of them.
        seed: Seed of the optimizer's generator (unused by the update; kept for the contract).
        nonfinite: ``"raise"``, ``"skip"`` or ``"ignore"`` for non-finite gradients or
            results (new parameters, base buffers, the updated output), with or without the
            feedback: the step is computed out of place, checked, then committed.
        track: Record per-layer diagnostics of the last step in ``last_info``.
    """

    #: The update computes the new parameters and state, checks them, then commits (see
    #: _update and _base_only).
    _checks_own_result = True
    #: The group key sets (with their base) already checked at a step (see _check_group_keys).
    _caches: ClassVar[dict[str, Callable[[], Any]]] = {
        **DynamicsOptimizer._caches, "_keys_checked": set}

    def __init__(
        self,
        model: nn.Module,
        lr: float | Tensor | None = None,
        *,
        base: str = "sgd",
        feedback: bool = True,
        weight_decay: float = 0.0,
        momentum: float | None = None,
        dampening: float | None = None,
        nesterov: bool | None = None,
        alpha: float | None = None,
        centered: bool | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        damping: float | None = None,
        ekfac_decay: float | None = None,
        update_freq: int | None = None,
        vxx_reg: float = 0.0,
        eps_placement: str = "vxx",
        expansion: str = "gauss-newton",
        costate: str = "bellman",
        feedback_curvature: str = "batch",
        terminal_hessian: TerminalHessian = "cross-entropy",
        params: Iterable[Any] | None = None,
        seed: int | None = None,
        nonfinite: str = "raise",
        track: bool = False,
    ) -> None:
        check_choice("base", base, BASES)
        check_choice("eps_placement", eps_placement, EPS_PLACEMENTS)
        if not isinstance(track, bool):
            raise TypeError(f"track must be a bool, got {track!r}")
        self.trajectory = DDPTrajectory(model, terminal_hessian=terminal_hessian)
        self._owner: dict[int, AffineLayer] = {
            id(p): st.layer for st in self.trajectory.stages for p in st.layer.params}
        given = {"momentum": momentum, "dampening": dampening, "nesterov": nesterov,
                 "alpha": alpha, "centered": centered, "betas": betas, "eps": eps,
                 "damping": damping, "ekfac_decay": ekfac_decay, "update_freq": update_freq}
        _refuse_foreign_keys({k: v for k, v in given.items() if v is not None}, base, "")
        defaults = {
            "lr": DEFAULT_LR[base] if lr is None else lr, "base": base, "feedback": feedback,
            "weight_decay": weight_decay,
            **{k: v if given[k] is None else given[k]
               for k, v in BASE_HYPERPARAMETERS[base].items()},
            "vxx_reg": vxx_reg, "eps_placement": eps_placement, "expansion": expansion,
            "costate": costate, "feedback_curvature": feedback_curvature,
        }
        groups = list(params) if params is not None else [
            p for p in self.trajectory.parameters if p.requires_grad]
        super().__init__(groups, defaults, seed=seed, nonfinite=nonfinite)
        self.track = track
        self.last_info: dict[str, list[float]] = {}
        self._sync_hooks()
        if self._needs_record():
            self._check_dtypes()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "trajectory" in self.__dict__ and "last_info" in self.__dict__:
            # a copy: the maps keyed by parameter ids and the hooks follow the copied model
            self._owner = {id(p): st.layer for st in self.trajectory.stages
                           for p in st.layer.params}
            self._sync_hooks()

    def _needs_record(self) -> bool:
        return any(g["feedback"] or g["base"] == "ekfac" for g in self.param_groups)

    def _sync_hooks(self) -> None:
        """Record activations only when some group needs them (feedback or EKFAC), unless
        :meth:`remove_hooks` detached the optimizer."""
        self.trajectory.watched = {id(p) for g in self.param_groups for p in g["params"]}
        if self._needs_record() and not self.__dict__.get("_hooks_removed", False):
            self.trajectory.attach()
        else:
            self.trajectory.detach()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        base = param_group.get("base", self.defaults["base"])
        if isinstance(base, str) and base in BASE_HYPERPARAMETERS:
            index = len(self.param_groups)
            _refuse_foreign_keys(param_group, base, f" (param group {index})")
            param_group = dict(param_group)
            # the base's own keys: the group's, else the defaults' (same base) or the base's
            for k, v in BASE_HYPERPARAMETERS[base].items():
                if k not in param_group:
                    same = base == self.defaults["base"] and k in self.defaults
                    param_group[k] = self.defaults[k] if same else v
        super().add_param_group(param_group)
        if hasattr(self, "trajectory") and hasattr(self, "last_info"):
            self._sync_hooks()

    # --- validation -------------------------------------------------------------------------
    #: Base keys set after construction are refused by _check_group_keys at the step.
    _checks_late_foreign_keys = True

    def _refuse_foreign_keys(self, group: dict[str, Any], index: int) -> None:
        # a group's own base keys are its hyperparameters even where the defaults' base differs
        own = BASE_HYPERPARAMETERS.get(group.get("base"), {})  # type: ignore[arg-type]
        super()._refuse_foreign_keys({k: v for k, v in group.items() if k not in own}, index)

    #: A layer's control is updated as one (weights and bias): no group sits a step out. At
    #: lr = 0 a group steps as torch's base optimizer does (its parameters stay exactly, its
    #: momentum/moment buffers and step counts advance) and its feedback, η·K, is 0.
    _pause_at_zero_lr = False

    def _validate_group(self, group: dict[str, Any], index: int) -> None:
        # torch copies every default into the group: drop the keys its base does not read
        if isinstance(group.get("base"), str) and group["base"] in BASE_HYPERPARAMETERS:
            for k in _BASE_KEYS.difference(BASE_HYPERPARAMETERS[group["base"]]):
                group.pop(k, None)
            _refuse_missing_keys(group, index)
        super()._validate_group(group, index)
        self._check_values(group, index)
        if group["maximize"]:
            raise ValueError("DDPNOpt does not support maximize=True (the terminal cost is "
                             "minimized)")
        if group["differentiable"]:
            raise ValueError("DDPNOpt does not support differentiable=True")
        for p in group["params"]:
            if id(p) not in self._owner:
                raise ValueError(f"param group {index} holds a tensor of shape "
                                 f"{tuple(p.shape)} that is not a parameter of the model's "
                                 "Linear/Conv2d layers")
        self._check_layers_grouped()

    def _check_prior_keys(self) -> None:
        """Nothing: DDPNOpt's ``weight_decay`` is its base optimizer's running cost, not the
        prior of :mod:`dynopt.optim.prior`; :meth:`_check_values` checks it at every step."""

    def _check_values(self, group: dict[str, Any], index: int) -> None:
        """The group's hyperparameter values (all but ``lr``, which :meth:`hyper` checks):
        at construction, and at every step, since a value set later (``group["vxx_reg"] =
        nan``, ``group["costate"] = "Bellman"``) would otherwise run silently: NaN ε taken as 0,
        an unknown costate as back-propagation, a negative weight decay as a growth term."""
        ch = self._check_hyper
        ch(group, index, "base", lambda n, v: check_choice(n, v, BASES))
        ch(group, index, "expansion", lambda n, v: check_choice(n, v, EXPANSIONS))
        ch(group, index, "eps_placement", lambda n, v: check_choice(n, v, EPS_PLACEMENTS))
        ch(group, index, "costate", lambda n, v: check_choice(n, v, COSTATES))
        ch(group, index, "feedback_curvature",
           lambda n, v: check_choice(n, v, FEEDBACK_CURVATURES))
        for name in ("weight_decay", "momentum", "dampening", "alpha", "eps", "vxx_reg"):
            if name in group:
                ch(group, index, name, check_nonnegative)
        if "damping" in group:
            ch(group, index, "damping", check_positive)
        if "ekfac_decay" in group:
            ch(group, index, "ekfac_decay",
               lambda n, v: check_probability(n, v, open_right=True))
        if "update_freq" in group:
            ch(group, index, "update_freq", lambda n, v: check_int(n, v, minimum=1))
        for flag in ("feedback", "nesterov", "centered"):
            if flag in group and not isinstance(group[flag], bool):
                raise TypeError(f"{flag} must be a bool, got {group[flag]!r} "
                                f"(param group {index})")
        if "betas" in group:
            betas = group["betas"]
            if not isinstance(betas, tuple | list) or len(betas) != 2:
                raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r} "
                                 f"(param group {index})")
            for i, b in enumerate(betas):
                try:
                    check_probability(f"betas[{i}]", b, open_right=True)
                except (ValueError, TypeError) as err:
                    raise type(err)(f"{err} (param group {index})") from None
        if group.get("nesterov") and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"nesterov=True requires momentum > 0 and dampening = 0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']} "
                             f"(param group {index})")

    def _check_layers_grouped(self) -> None:
        where = {id(p): gi for gi, g in enumerate(self.param_groups) for p in g["params"]}
        for layer in self.trajectory.layers:
            seen = {where[id(p)] for p in layer.params if id(p) in where}
            if len(seen) > 1:
                raise ValueError(f"the weight and bias of layer {layer.name} are in different "
                                 f"param groups {sorted(seen)}; DDPNOpt updates a layer as one "
                                 "control")

    # --- checkpoints ------------------------------------------------------------------------
    def _after_load(self, state_dict: dict[str, Any]) -> None:
        # the saved groups win (as in torch), bases included; keys this optimizer's groups held
        # for another base are dropped, so a group holds only its base's keys after a load too
        for group in self.param_groups:
            own = BASE_HYPERPARAMETERS.get(group.get("base"))  # type: ignore[arg-type]
            if own is not None:
                for k in _BASE_KEYS.difference(own):
                    group.pop(k, None)
        super()._after_load(state_dict)
        self._sync_hooks()

    def _state_schema(self, group: dict[str, Any]) -> dict[str, Key] | None:
        """The buffers of the group's diagonal base (:data:`~dynopt.optim.ddp_bases.
        DIAGONAL_STATE`); EKFAC's factors are not shaped like a parameter and are checked by
        :meth:`_refuse_checkpoint`."""
        return DIAGONAL_STATE.get(group.get("base"))  # type: ignore[arg-type]

    def _refuse_checkpoint(self, state_dict: dict[str, Any]) -> None:
        """What the generic per-parameter check cannot see: EKFAC entries (keys, the factors'
        shapes for the layer, finite values, the step count) and negative second moments. A
        checkpoint whose structure is wrong is left to :func:`~dynopt.optim.checkpoint.validate`,
        which names it."""
        super()._refuse_checkpoint(state_dict)
        if not isinstance(state_dict, Mapping):
            return
        state, saved_groups = state_dict.get("state"), state_dict.get("param_groups")
        if not isinstance(state, Mapping) or not isinstance(saved_groups, list | tuple) or len(
                saved_groups) != len(self.param_groups):
            return
        for gi, (saved, current) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            pids = saved.get("params") if isinstance(saved, Mapping) else None
            if not isinstance(pids, list | tuple) or len(pids) != len(current["params"]):
                return
            base = saved.get("base", self.defaults["base"])
            for pid, p in zip(pids, current["params"], strict=True):
                entry = state.get(pid) if isinstance(pid, int | str) else None
                if not isinstance(entry, Mapping) or not entry:
                    continue
                where = f"state[{pid!r}] (param group {gi})"
                if base == "ekfac":
                    _check_ekfac_entry(entry, p, self._owner[id(p)], where)
                for key in NONNEGATIVE_STATE:
                    value = entry.get(key)
                    if isinstance(value, Tensor) and value.is_floating_point() and bool(
                            (value < 0).any()):
                        raise _load_error(f"{where}[{key!r}]", "holds negative values (a second "
                                          "moment: the next step would take their square root)")

    def remove_hooks(self) -> None:
        """Detach the optimizer's recording hooks from the model, for good: later steps that
        need a record (feedback, EKFAC) raise; :meth:`attach_hooks` undoes it."""
        self._hooks_removed = True
        self.trajectory.detach()

    def attach_hooks(self) -> None:
        """Re-attach the recording hooks after :meth:`remove_hooks` (record from the next
        forward pass on)."""
        self._hooks_removed = False
        self._sync_hooks()

    # --- the update -------------------------------------------------------------------------
    def _hypers(self, group: dict[str, Any]) -> dict[str, Any]:
        """The group's hyperparameters for this step, validated. A tensor ``momentum`` or
        ``weight_decay`` is read to the host once here and the step uses that float (the base
        updates' ``momentum != 0`` and ``alpha=weight_decay`` read the tensor once per
        parameter tensor), with the same results bit for bit: torch applies a 0-dim tensor and
        a Python number alike, cast to the operation's dtype. Others stay tensors:
        ``1 - dampening`` of a float32 tensor is rounded to float32, as in
        ``torch.optim.SGD``."""
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        hp = {k: v for k, v in group.items() if k != "params"}
        try:
            for name in _HOST_HYPERS:
                if isinstance(hp.get(name), Tensor):
                    hp[name] = self._check_hyper(group, index, name, _accept)
            self._check_values(hp, index)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{err}; DDPNOpt step {self.global_state['step'] + 1}: no parameter "
                            "or optimizer state was changed") from None
        hp["lr"] = self.hyper(group, "lr", check_nonnegative)
        return hp

    def _check_group_keys(self) -> None:
        """Refuse a base-specific key that a group's base does not read (or a key it lacks),
        set after construction, e.g. by a scheduler. Cheap: a group is checked only when its
        base or key set is one not seen before."""
        seen: set[tuple[Any, ...]] = self.__dict__.setdefault("_keys_checked", set())
        for index, group in enumerate(self.param_groups):
            base = group.get("base")
            sig = (base, *group) if isinstance(base, str) else None
            if sig in seen:
                continue
            self._check_hyper(group, index, "base", lambda n, v: check_choice(n, v, BASES))
            try:
                _refuse_foreign_keys(group, base, f" (param group {index}, set after "  # type: ignore[arg-type]
                                     "construction)")
            except ValueError as err:
                raise ValueError(
                    f"{err}. A scheduler may have set it: OneCycleLR(cycle_momentum=True) writes "
                    "the momentum (or betas) of the defaults' base into every group, so with "
                    "mixed bases use OneCycleLR(cycle_momentum=False); no parameter or optimizer "
                    "state was changed") from None
            _refuse_missing_keys(group, index)
            self._refuse_base_switch(group, index, base)  # type: ignore[arg-type]
            if len(seen) > 256:
                seen.clear()
            seen.add(sig)  # type: ignore[arg-type]

    def _refuse_base_switch(self, group: dict[str, Any], index: int, base: str) -> None:
        """A group whose ``base`` changed after its first step holds the old base's buffers
        (they would be kept, and a checkpoint of them refused at load): refused."""
        allowed = set(EKFAC_STATE) if base == "ekfac" else set(DIAGONAL_STATE[base])
        for p in group["params"]:
            stale = sorted(set(self.state.get(p, {})) - allowed)
            if stale:
                raise ValueError(
                    f"param group {index} runs base={base!r}, but its state holds {stale} of "
                    "another base: base cannot change after a group's first step (build a new "
                    "DDPNOpt, or load a checkpoint of this base); no parameter or optimizer "
                    "state was changed")

    def _update(self, loss: Any = None, **kwargs: Any) -> None:
        groups = self.param_groups
        self._check_group_keys()
        if not any(p.grad is not None for g in groups for p in g["params"]):
            return  # nothing to step (a framework's skipped batch), as torch's optimizers
        if not self._needs_record():
            self._base_only()
            return
        self._check_dtypes()
        if not self.trajectory.attached:
            if self.__dict__.get("_hooks_removed", False):
                raise RuntimeError("DDPNOpt's recording hooks were removed (remove_hooks()), "
                                   "but the feedback or EKFAC needs the forward pass: call "
                                   "attach_hooks() and run a new forward and backward pass")
            self.trajectory.attach()
            raise RuntimeError("DDPNOpt was not recording activations (the feedback was off "
                               "in every param group); run a new forward and backward pass "
                               "before step()")
        group_of = {id(p): g for g in groups for p in g["params"]}
        hypers = {id(g): self._hypers(g) for g in groups}
        pending: dict[int, tuple[LayerStep, dict[str, Any]]] = {}

        def policy(t: int, layer: AffineLayer, data: StageData) -> StagePolicy | None:
            active = [id(p) in group_of and p.requires_grad and p.grad is not None
                      for p in layer.params]
            if not any(active):
                return None       # no control: frozen, or outside every param group
            group = group_of[id(layer.params[active.index(True)])]
            hp = hypers[id(group)]
            grads = [data.qbar_w] + ([data.qbar_b] if data.qbar_b is not None else [])
            states = [self.state[p] if on else {} for p, on in
                      zip(layer.params, active, strict=True)]
            if hp["base"] == "ekfac":
                if not all(active):
                    raise ValueError(f"base='ekfac' needs the weight and bias of layer "
                                     f"{layer.name} both trainable or both frozen (its Kronecker "
                                     "factors couple them)")
                ls = ekfac_layer_step(layer, grads, data.vh, data.inputs, states[0], hp)
            else:
                ls = diagonal_layer_step(hp["base"], layer, grads, states, hp, active)
                if hp["feedback_curvature"] == "batch" and hp["base"] != "sgd":
                    ls.curvature = batch_second_moment(data.vh, data.inputs, hp["eps"],
                                                       hp["lr"], ls.mask)
            pending[t] = (ls, hp)
            return StagePolicy(ls.curvature, ls.d_aug, feedback=hp["feedback"],
                               vxx_reg=hp["vxx_reg"], eps_placement=hp["eps_placement"],
                               second_order=hp["expansion"] == "second-order",
                               bellman=hp["costate"] == "bellman")

        traj = self.trajectory
        values = any(g["feedback"] for g in groups)
        gains = traj.backward(policy, values=values, diagnostics=self.track)
        new: dict[int, list[Tensor]] = {}
        fb_norm: dict[int, Tensor] = {}

        def update(t: int, fb: Tensor | None) -> tuple[Tensor, Tensor | None]:
            layer = traj.stages[t].layer
            if t not in pending:
                return layer.weight, layer.bias
            ls, hp = pending[t]
            ps = list(ls.new_params)
            if fb is not None:
                step = ls.curvature.solve(fb)
                if self.track:
                    fb_norm[t] = hp["lr"] * step.norm()
                fw, fbias = layer.split(step)
                ps[0] = ps[0].add(fw, alpha=-hp["lr"])
                if fbias is not None:
                    ps[1] = ps[1].add(fbias, alpha=-hp["lr"])
            if ls.active is not None:     # inactive tensors keep their value exactly
                ps = [q if on else p for q, p, on in
                      zip(ps, layer.params, ls.active, strict=True)]
            new[t] = ps
            return ps[0], (ps[1] if len(ps) > 1 else None)

        out = traj.forward_update(gains, update)
        if self.nonfinite != "ignore":
            items: list[tuple[Tensor, Tensor | None, str | None]] = []
            for t, ps in new.items():
                ls = pending[t][0]
                active = ls.active or [True] * len(ps)
                for p, value, st, on in zip(traj.stages[t].layer.params, ps, ls.new_states,
                                            active, strict=True):
                    items.append((value, p, None))
                    if on:
                        items.extend((v, p, k) for k, v in st.items())
            items.append((out, None, None))
            if not self._result_finite(items, " or raise vxx_reg"):
                traj.clear()
                return
        info: dict[str, list[float]] = {"update_norm": [], "feedback_norm": [], "clipped": []}
        for t, ps in new.items():
            layer = traj.stages[t].layer
            if self.track:
                du = torch.sqrt(sum(((a - p) ** 2).sum() for a, p in zip(ps, layer.params,
                                                                          strict=True)))
                info["update_norm"].append(float(du))
                info["feedback_norm"].append(float(fb_norm.get(t, torch.zeros(()))))
                cl = gains[t].clipped
                info["clipped"].append(0.0 if cl is None else float(cl))
            ls = pending[t][0]
            active = ls.active or [True] * len(ps)
            for p, value, st, on in zip(layer.params, ps, ls.new_states, active, strict=True):
                if on:
                    p.copy_(value)
                    self.state[p].update(st)
        if self.track:
            info["layer"] = [traj.stages[t].layer.name for t in new]  # type: ignore[list-item]
            self.last_info = info
        traj.clear()

    def _check_dtypes(self) -> None:
        for layer in self.trajectory.layers:
            for p in layer.params:
                if p.dtype not in (torch.float32, torch.float64):
                    raise TypeError(
                        f"DDPNOpt's feedback and EKFAC need float32 or float64 parameters; layer "
                        f"{layer.name} has {p.dtype} (bfloat16/float16 parameters are not "
                        "supported: keep the parameters in float32 and train under "
                        "torch.autocast(device, dtype=torch.bfloat16), or use feedback=False, "
                        "which is exactly the base optimizer)")

    def _base_only(self) -> None:
        """Feedback off everywhere: the base optimizer's update of every tensor, computed out
        of place, checked as the feedback path checks its result (``nonfinite``), then
        committed, so a refused or skipped step changes no parameter and no buffer."""
        pending: list[tuple[Tensor, ParamStep]] = []
        for group in self.param_groups:
            hp = self._hypers(group)
            for p in group["params"]:
                if p.grad is None or not p.requires_grad:
                    continue
                pending.append((p, param_step(hp["base"], p, p.grad, self.state.get(p, {}), hp)))
        if self.nonfinite != "ignore":
            items = [(t, p, k) for p, ps in pending
                     for k, t in ((None, ps.new_param), *ps.new_state.items())]
            if not self._result_finite(items, ""):
                return
        sq: dict[str, float] = {}
        for p, ps in pending:
            if self.track:
                name = self._owner[id(p)].name
                sq[name] = sq.get(name, 0.0) + float(((ps.new_param - p) ** 2).sum())
            p.copy_(ps.new_param)
            self.state[p].update(ps.new_state)
        if self.track:
            self.last_info = {"layer": list(sq), "update_norm": [v ** 0.5 for v in sq.values()]}  # type: ignore[dict-item]

    def _result_finite(self, items: list[tuple[Any, Tensor | None, str | None]], hint: str
                       ) -> bool:
        """Whether every new value of a step is finite (under ``nonfinite="raise"/"skip"``).

        Args:
            items: ``(value, parameter, key)``: a new parameter value (key None) or state
                buffer (its key) of ``parameter``; parameter None: the updated network's output.
                Non-tensors (step counts) are ignored.
            hint: Appended to "Lower lr" in the error.

        Returns:
            True if all are finite; False under ``"skip"`` (the skip is counted).

        Raises:
            DivergenceError: Under ``"raise"``, naming the step, the layer and the first
                non-finite tensor; nothing has been committed yet.

        One max-|x| scan per (device, dtype) of the values (:func:`~dynopt.optim.finite.
        all_finite`): a host synchronisation each, and a per-tensor scan only on failure.
        """
        buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, (value, _, _) in enumerate(items):
            if isinstance(value, Tensor) and value.is_floating_point():
                buckets.setdefault((value.device, value.dtype), []).append(i)
        bad = [i for idx in buckets.values() if not all_finite([items[i][0] for i in idx])
               for i in idx if not bool(torch.isfinite(items[i][0]).all())]
        if not bad:
            return True
        if self.nonfinite == "skip":
            self.global_state["skipped"] += 1
            return False
        _, p, key = items[min(bad)]
        stages = self.trajectory.stages
        if p is None:
            t = len(stages) - 1
            where = f"the updated network's output (after layer {stages[t].layer.name})"
        else:
            t = next(i for i, st in enumerate(stages) if any(q is p for q in st.layer.params))
            what = "weight" if p is stages[t].layer.weight else "bias"
            what = what if key is None else f"the {what}'s optimizer state {key!r}"
            where = f"layer {stages[t].layer.name}, {what}"
            group = next((g for g in self.param_groups if any(q is p for q in g["params"])), {})
            eps = group.get("eps")
            if isinstance(eps, numbers.Real) and float(torch.tensor(float(eps),
                                                                     dtype=p.dtype)) == 0:
                hint += (f" or raise eps (eps={eps!r} is 0 in {p.dtype}, so a zero gradient "
                         "entry divides 0 by 0)")
        step = self.global_state["step"] + 1
        raise DivergenceError(
            f"DDPNOpt: non-finite update at step {step} in {where}; "
            f"no parameter or optimizer state was changed. Lower lr{hint}, or use "
            "nonfinite='skip' to skip such steps.", step=step, chain=t)


@register("ddpnopt")
def _make(model: Any, **kwargs: Any) -> DDPNOpt:
    if not isinstance(model, nn.Module):
        raise TypeError("ddpnopt needs the model (an nn.Sequential), not a parameter list")
    return DDPNOpt(model, **kwargs)


#: The hyperparameters a step reads as host floats (:meth:`DDPNOpt._hypers`).
_HOST_HYPERS = ("momentum", "weight_decay")


def _accept(name: str, value: Any) -> Any:
    """No check (:meth:`DDPNOpt._check_values` checks the host value afterwards)."""
    return value


def _refuse_foreign_keys(keys: dict[str, Any], base: str, where: str) -> None:
    """ValueError for a base-specific hyperparameter that ``base`` does not read."""
    for k in keys:
        if k in _BASE_KEYS and k not in BASE_HYPERPARAMETERS[base]:
            readers = sorted(b for b, hp in BASE_HYPERPARAMETERS.items() if k in hp)
            raise ValueError(f"DDPNOpt with base={base!r} does not use {k}={keys[k]!r}{where}; "
                             f"{k} is read by base in {readers}")


def _refuse_missing_keys(group: dict[str, Any], index: int) -> None:
    """ValueError for a hyperparameter that the group's base reads but the group lacks."""
    for k, default in BASE_HYPERPARAMETERS[group["base"]].items():
        if k not in group:
            raise ValueError(f"param group {index} (base={group['base']!r}) lacks {k!r}, which "
                             f"its base reads; set it (the base's default is {default!r})")


def _load_error(where: str, message: str) -> ValueError:
    return ValueError(f"cannot load the checkpoint: {where} {message}; the optimizer was left "
                      "unchanged")


def _check_ekfac_entry(entry: Mapping[str, Any], p: Tensor, layer: AffineLayer, where: str
                       ) -> None:
    """A checkpoint's state entry of a tensor in an EKFAC group (see EKFAC_STATE), or raise."""
    if p is not layer.weight:
        raise _load_error(where, f"holds {sorted(entry)}, but under base='ekfac' layer "
                          f"{layer.name} keeps its state in its weight's entry (its bias's is "
                          "empty)")
    for key in entry:
        if key not in EKFAC_STATE:
            raise _load_error(f"{where}[{key!r}]", "is not a state of base='ekfac' (expected "
                              f"keys: {sorted(EKFAC_STATE)})")
    for key, required in EKFAC_STATE.items():
        if required and key not in entry:
            raise _load_error(where, f"lacks {key!r} (present: {sorted(entry)}); a partial state "
                              "would feed the update mismatched factors")
    step, at = entry["step"], f"{where}['step']"
    if isinstance(step, Tensor) and step.numel() == 1 and not step.is_complex():
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not (
            math.isfinite(float(step)) and float(step) >= 0 and float(step).is_integer()):
        raise _load_error(at, f"must be a non-negative integer, got {entry['step']!r}")
    for key, shape in ekfac_state_shapes(layer).items():
        value, at = entry.get(key), f"{where}[{key!r}]"
        if value is None and not EKFAC_STATE[key]:
            continue
        if not isinstance(value, Tensor) or not value.is_floating_point() or (
                value.layout != torch.strided):
            got = (f"a {value.dtype} tensor ({value.layout})" if isinstance(value, Tensor)
                   else type(value).__name__)
            raise _load_error(at, f"must be a dense floating tensor, got {got}")
        if tuple(value.shape) != shape:
            raise _load_error(at, f"has shape {tuple(value.shape)}, but layer {layer.name} needs "
                              f"{shape}")
        if not bool(torch.isfinite(value).all()):
            raise _load_error(at, "holds non-finite values")
