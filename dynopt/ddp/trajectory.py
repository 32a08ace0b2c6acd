r"""A feed-forward network as a discrete-time control system (Liu, Chen & Theodorou, ICLR 2021).

The network ``nn.Sequential`` is read as the optimal-control problem

.. math::

    \min_{\bar u} J = \phi(x_T) + \sum_{t<T} \ell_t(u_t), \qquad x_{t+1} = f_t(x_t, u_t)
    = \sigma_t(g_t(x_t, u_t)),\quad g_t(x, u) = W_t x + b_t ,

with the activations ``x_t`` as the state, each affine layer's ``u_t = [vec W_t, b_t]`` as the
control, the loss as the terminal cost φ and weight decay as the running cost ℓ_t(u). A batch is
the augmented state ``X_t = {x_t^{(i)}}`` with the cost ``(1/B) Σ_i φ(x_T^{(i)})``; all per-sample
quantities below are in the units of one sample's cost φ(x_T^{(i)}).

:class:`DDPTrajectory` provides the three passes of DDP on that system:

1. **nominal forward pass** (:meth:`~DDPTrajectory.nominal_forward`, or any forward of the
   model while attached): forward hooks store every ``x_t`` and tensor hooks the back-propagated
   ``∂J/∂x_t`` during ``loss.backward()``;
2. **backward Bellman pass** (:meth:`~DDPTrajectory.backward`), with the Gauss–Newton
   outer-product factorization of the value Hessian (the paper's Proposition 3): per sample
   ``V_xx = Z Zᵀ`` with ``Z`` of rank r (r = 1 for ``terminal_hessian="outer"``), so that

   * ``q_x = f_xᵀ Z``, ``q_u = f_uᵀ Z``, ``Q_xx = q_x q_xᵀ``, ``Q_ux = q_u q_xᵀ`` (never formed);
   * ``Q_ux δx = q_u (q_xᵀ δx)``: the feedback is a per-sample *re-weighted gradient*
     ``E[Q_ux δx] = (1/B) Σ_i r_i X_iᵀ`` (one extra matmul per layer);
   * ``V_x = Q_x − Q_uxᵀ Q_uu⁻¹ Q̄_u`` (the Bellman costate; ``Q_uu ≈ M/η`` is the base
     optimizer's preconditioner, :class:`~dynopt.ddp.layers.Curvature`);
   * ``V_xx = q_xᵀ (I − (η/B) Φ) q_x`` with ``Φ_ab = q_{u,a}ᵀ M⁻¹ q_{u,b}`` (the diagonal
     block of the augmented-state value Hessian), refactored as the factor of its projection
     onto the PSD cone (negative eigenvalues set to 0; for r = 1,
     ``Z ← √max(1 − (η/B) q_uᵀM⁻¹q_u, 0) q_x``; see the docs);
3. **extra forward pass** (:meth:`~DDPTrajectory.forward_update`): ``δx_t = x̂_t − x_t`` through
   the already updated layers, and the per-layer update ``u_t ← u_t + k_t + K_t δx_t``.

The Tikhonov term ε_Vxx has two placements (``StagePolicy.eps_placement``):

* ``"vxx"`` (the paper's Algorithm 3, line 12): after the Bellman update of stage t,
  ``V_xx^t ← V_xx^t + ε I``, so ε enters Q_xx, Q_ux, the costate and V_xx of every earlier stage
  (it propagates); the terminal Hessian is not regularized. Exactly: V_xx is then positive
  definite and dense, formed per sample as an n × n matrix (n = dim x_t) and refactored by its
  Cholesky factor (n rows), so the backward pass costs O(B n³) per layer;
* ``"qux"`` (Tassa et al. 2012): ``Q_ux = f_uᵀ (V'_xx + ε I) f_x`` in the feedback gain of every
  stage (the last one included), not propagated; the value recursion keeps the rank-r structure.

The second-order dynamics terms (``V_x · σ''`` and ``V_h · g_ux``) enter the feedback gain
``Q_ux`` only.

| symbol | code |
|---|---|
| x_t, x̂_t, δx_t | ``StageGains.x``, ``forward_update`` ``xhat``, ``dx`` |
| V_x (per sample, at x_t) | ``StageGains.vx`` |
| Z (V_xx = Z Zᵀ, at x_t) | ``StageGains.z`` |
| V_h = σ'ᵀ V'_x | ``StageGains.vh`` |
| Z_h = σ'ᵀ Z' | ``StageGains.zh`` |
| q_x | ``StageGains.qx`` |
| Q̄_u = E[Q_u] | ``StageGains.qbar`` |
| E[Q_ux δx] | :meth:`StageGains.feedback` |
| ε_Vxx | ``StagePolicy.vxx_reg`` |
| where ε_Vxx enters | ``StagePolicy.eps_placement`` (``"vxx"`` or ``"qux"``) |
| M, η | ``StagePolicy.curvature`` |

Reference: G.-H. Liu, T. Chen, E. A. Theodorou, "DDPNOpt: Differential Dynamic Programming
Neural Optimizer", ICLR 2021 (arXiv:2002.08809).
"""

from __future__ import annotations

import itertools
import math
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_choice
from .layers import AffineLayer, Curvature, post_derivatives, unsupported_reason

__all__ = ["DDPTrajectory", "Stage", "StageData", "StageGains", "StagePolicy"]

TerminalHessian = str | Callable[[Tensor, Tensor], Tensor]
#: Built-in terminal value-Hessian factors.
TERMINAL_HESSIANS = ("outer", "cross-entropy", "identity")
#: Where ε_Vxx enters: added to V_xx after the Bellman update (Algorithm 3) or inside Q_ux.
EPS_PLACEMENTS = ("vxx", "qux")


@dataclass
class Stage:
    """Stage t: an affine layer followed by parameter-free leaves (activations, Flatten)."""

    index: int
    layer: AffineLayer
    leaf: int
    post: list[tuple[int, nn.Module]]

    @property
    def out_leaf(self) -> int:
        return self.post[-1][0] if self.post else self.leaf


class StageData:
    """What the backward pass hands the optimizer for stage t (before the stage's policy).

    Attributes:
        qbar_w, qbar_b: Q̄_u = E[Q_u^{(i)}] in parameter shapes (the ordinary gradient plus the
            Bellman correction of the costate; weight decay not included).
        inputs: Augmented input patches X, ``(B, in_aug, P)``.
        vh: Per-sample V_h, ``(B, out, P)`` (computed on first access).
    """

    def __init__(self, qbar_w: Tensor, qbar_b: Tensor | None, inputs: Tensor,
                 vh: Callable[[], Tensor]) -> None:
        self.qbar_w, self.qbar_b, self.inputs = qbar_w, qbar_b, inputs
        self._vh_fn: Callable[[], Tensor] | None = vh
        self._vh: Tensor | None = None

    @property
    def vh(self) -> Tensor:
        if self._vh is None:
            assert self._vh_fn is not None
            self._vh = self._vh_fn()
            self._vh_fn = None
        return self._vh


@dataclass
class StagePolicy:
    """The optimizer's answer for stage t: its curvature model and feedback options.

    Attributes:
        curvature: Q_uu ≈ M/η.
        q_eff: The open-loop direction's gradient Q̄_u + ℓ_u (with weight decay), ``(out, in_aug)``.
        feedback: Whether the layer uses the feedback K δx (False: Q_ux := 0 for this layer).
        vxx_reg: ε_Vxx.
        eps_placement: ``"vxx"`` (V_xx ← V_xx + εI after the stage's Bellman update, propagated)
            or ``"qux"`` (ε inside this stage's Q_ux only); see the module docstring.
        second_order: Add the second-order dynamics terms to Q_ux.
        bellman: Use the Bellman costate V_x = Q_x − Q_uxᵀQ_uu⁻¹Q_u upstream (False: back-prop).
    """

    curvature: Curvature
    q_eff: Tensor
    feedback: bool = True
    vxx_reg: float = 0.0
    second_order: bool = False
    bellman: bool = True
    eps_placement: str = "qux"

    def __post_init__(self) -> None:
        check_choice("eps_placement", self.eps_placement, EPS_PLACEMENTS)

    @property
    def tassa(self) -> bool:
        """ε_Vxx inside Q_ux (``eps_placement="qux"`` with ε > 0)."""
        return self.eps_placement == "qux" and self.vxx_reg > 0


@dataclass
class StageGains:
    """The backward pass's result for one stage (see the module docstring for the symbols).

    ``vx`` and ``clipped`` (the fraction of samples whose value Hessian was projected) are only
    filled with ``backward(..., diagnostics=True)``.
    """

    stage: Stage
    policy: StagePolicy | None
    x: Tensor
    data: StageData
    qbar: Tensor
    zh: Tensor | None = None
    qx: Tensor | None = None
    d1: Tensor | None = None
    d2vx: Tensor | None = None
    vx: Tensor | None = None
    z: Tensor | None = None
    clipped: Tensor | None = None

    @property
    def inputs(self) -> Tensor:
        return self.data.inputs

    @property
    def vh(self) -> Tensor:
        return self.data.vh

    @property
    def has_feedback(self) -> bool:
        return self.policy is not None and self.policy.feedback and self.zh is not None

    def feedback(self, dx: Tensor) -> Tensor:
        r"""``E[Q_ux δx] = (1/B) Σ_i Q_ux^{(i)} δx^{(i)}`` as an ``(out, in_aug)`` matrix.

        ``r_i = Σ_a Z_h,ia (q_x,iaᵀ δx_i) + ε σ'² ⊙ W δx_i + V'_x σ'' ⊙ W δx_i`` and
        ``E[Q_ux δx] = (1/B) Σ_i r_i X_iᵀ (+ (1/B) Σ_i V_h,i δX_iᵀ)``.
        """
        pol = self.policy
        assert pol is not None and self.zh is not None and self.qx is not None
        layer = self.stage.layer
        n = dx.shape[0]
        w = (self.qx * dx.unsqueeze(1)).reshape(n, self.qx.shape[1], -1).sum(-1)   # (B, r)
        r = torch.einsum("ba,bajp->bjp", w, self.zh) if w.shape[1] > 1 else \
            self.zh[:, 0] * w[:, 0, None, None]
        if pol.tassa or (pol.second_order and self.d2vx is not None):
            wdx = layer.outputs(layer.linear_part(dx))
            if pol.tassa:
                d1sq = 1.0 if self.d1 is None else self.d1 * self.d1
                r = r + pol.vxx_reg * d1sq * wdx
            if pol.second_order and self.d2vx is not None:
                r = r + self.d2vx * wdx
        g = layer.batch_outer(r, self.inputs)
        if pol.second_order:
            g = g + layer.batch_outer(self.vh, layer.inputs(dx, ones=False))
        return g / n


@dataclass
class _Record:
    x0: Tensor
    outs: list[Tensor | None]
    versions: list[int]
    dtype: torch.dtype
    grads: dict[int, Tensor] = field(default_factory=dict)
    needs_grad: set[int] = field(default_factory=set)   # leaves whose output required grad
    low_precision: bool = False     # some output was recorded below the parameters' dtype
    reconciled: bool = False
    accumulated: bool = False       # a backward pass added to an earlier one's gradients
    next: int = 0                   # the leaf whose output the model's forward pass gives next

    @property
    def batch(self) -> int:
        return int(self.x0.shape[0])


PolicyFn = Callable[[int, AffineLayer, StageData], StagePolicy | None]
UpdateFn = Callable[[int, Tensor | None], tuple[Tensor, Tensor | None]]


class DDPTrajectory:
    """A feed-forward ``nn.Sequential`` viewed as a discrete-time control system.

    Supported leaves: ``nn.Linear`` and ``nn.Conv2d`` (the controlled layers; groups = 1, zero
    padding), the elementwise activations of :data:`~dynopt.ddp.layers.ACTIVATIONS`
    (Tanh, Sigmoid, ReLU, LeakyReLU, ELU, Softplus, Identity) and ``nn.Flatten``. Nested
    ``nn.Sequential`` containers are flattened.

    Args:
        model: The network.
        terminal_hessian: The factor Z_T (``∇²φ ≈ Z_Tᵀ Z_T``) of the terminal value Hessian per
            sample: ``"outer"`` (Z_T = ∇φ, the rank-one outer product of the paper's Prop. 3,
            an empirical-Fisher surrogate that works for any loss but overestimates the
            curvature of confidently misclassified samples), ``"cross-entropy"`` (the exact
            Hessian diag(p) − ppᵀ of softmax cross-entropy on logits, i.e. the Gauss–Newton
            matrix; rank = number of classes; Z_T,a = √p_a (e_a − p)), ``"identity"`` (Z_T = I:
            exact for a squared-error loss ½‖x_T − y‖², e.g. the MMC loss) or a callable
            ``(output, per_sample_grad) -> Z`` of shape ``(B, r, *output.shape[1:])``.

    Raises:
        TypeError: If ``model`` is not an ``nn.Sequential``.
        ValueError: Naming the first unsupported leaf, or consecutive layers whose sizes do not
            match.
    """

    #: Set when a forward hook fired inside backward() (activation checkpointing recomputing
    #: layers); cleared when a forward pass starts a record. Only for error messages.
    _recomputed: bool = False

    def __init__(self, model: nn.Module, *,
                 terminal_hessian: TerminalHessian = "cross-entropy") -> None:
        if not isinstance(model, nn.Sequential):
            raise TypeError(f"DDPTrajectory needs an nn.Sequential, got {type(model).__name__}")
        if not callable(terminal_hessian):
            check_choice("terminal_hessian", terminal_hessian, TERMINAL_HESSIANS)
        self.model = model
        self.terminal_hessian = terminal_hessian
        self.leaves, names = _leaves(model)
        self.stages: list[Stage] = []
        for i, (m, name) in enumerate(zip(self.leaves, names, strict=True)):
            if isinstance(m, nn.Linear | nn.Conv2d):
                reason = _affine_reason(m)
                if reason is not None:
                    raise ValueError(f"DDPTrajectory models layer {name} as a plain "
                                     f"{_affine_base(m).__name__}, but {reason}")
                self.stages.append(Stage(len(self.stages), AffineLayer(m, name), i, []))
                continue
            reason = unsupported_reason(m)
            if reason is None and any(True for _ in m.parameters(recurse=False)):
                reason = f"{type(m).__name__} has parameters but is not Linear or Conv2d"
            if reason is not None:
                raise ValueError(
                    f"DDPTrajectory supports nn.Sequential of Linear, Conv2d, elementwise "
                    f"activations (Tanh, Sigmoid, ReLU, LeakyReLU, ELU, Softplus, Identity) and "
                    f"Flatten; layer {name}: {reason}")
            if self.stages:
                self.stages[-1].post.append((i, m))
        if not self.stages:
            raise ValueError("DDPTrajectory needs at least one nn.Linear or nn.Conv2d layer "
                             "(the controls)")
        _refuse_shared_weights(self.stages)
        _check_sizes(self.stages)
        self._grad_leaves = {st.out_leaf for st in self.stages}
        self._handles: list[Any] = []
        self._rec: _Record | None = None
        self._marks: dict[int, tuple[Any, int]] = {}
        #: ids of the parameters whose gradient accumulation is refused (None: all); an
        #: optimizer sets it to its own parameters (others' gradients may pile up unused).
        self.watched: set[int] | None = None

    # --- structure ------------------------------------------------------------------------
    @property
    def layers(self) -> list[AffineLayer]:
        return [st.layer for st in self.stages]

    @property
    def parameters(self) -> list[nn.Parameter]:
        return [p for st in self.stages for p in st.layer.params]

    # --- nominal forward pass (recording) ---------------------------------------------------
    def attach(self) -> DDPTrajectory:
        """Register the recording hooks (idempotent).

        If torch.compile has been used in the process, its caches are reset
        (``torch._dynamo.reset()``): dynamo does not guard on module hooks
        (``torch._dynamo.config.skip_nnmodule_hook_guards``), so a graph compiled earlier for
        this model, or for any model of the same structure, would keep running without the
        hooks and nothing would be recorded. The hooks run eagerly inside compiled models.
        """
        if not self._handles:
            _reset_compiled()
            for i, m in enumerate(self.leaves):
                self._handles.append(m.register_forward_hook(_ForwardHook(self, i)))
            self._attach_tensor_hooks()
        return self

    def _attach_tensor_hooks(self) -> None:
        for p in self.parameters:
            if p.requires_grad:
                self._handles.append(p.register_hook(partial(self._grad_pre_hook, p)))
                self._handles.append(p.register_post_accumulate_grad_hook(
                    self._grad_post_hook))

    # --- copies (deepcopy / pickle of the model together with the trajectory) ---------------
    def __getstate__(self) -> dict[str, Any]:
        """The module forward hooks travel with a copied model (picklable :class:`_ForwardHook`
        objects bound to the copied trajectory) and keep their handles; tensor hooks do not
        survive a copy of a parameter, so they are registered again on the copy; the record
        and the accumulation marks (weak references) are dropped."""
        state = dict(self.__dict__)
        attached = bool(self._handles)
        state["_handles"] = self._handles[:len(self.leaves)] if attached else []
        state["_rec"], state["_marks"], state["_reattach"] = None, {}, attached
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        reattach = state.pop("_reattach", False)
        self.__dict__.update(state)
        if reattach:
            self._attach_tensor_hooks()

    def detach(self) -> None:
        """Remove the hooks and drop the record (resetting torch.compile's caches, as
        :meth:`attach` does, if hooks were removed)."""
        if self._handles:
            _reset_compiled()
        for h in self._handles:
            h.remove()
        self._handles = []
        self._rec = None
        self._marks = {}

    # Gradient accumulation is detected without reading values: after each backward pass the
    # post-accumulate hook marks every parameter's .grad (the tensor and its version counter);
    # if the next backward pass finds the very same, untouched tensor in .grad, it adds to an
    # earlier pass's gradient (zero_grad() drops or zeroes it, GradScaler and clipping modify
    # it in place, all of which change the mark).
    def _grad_pre_hook(self, p: Tensor, grad: Tensor) -> None:
        mark = self._marks.get(id(p))
        g = p.grad
        if mark is not None and g is not None and mark[0]() is g and mark[1] == g._version \
                and self._rec is not None and (self.watched is None or id(p) in self.watched):
            self._rec.accumulated = True

    def _grad_post_hook(self, p: Tensor) -> None:
        if p.grad is not None:
            self._marks[id(p)] = (weakref.ref(p.grad), p.grad._version)

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def nominal_forward(self, x: Tensor) -> Tensor:
        """Run the model on ``x`` with gradients enabled, storing every ``x_t``; call
        ``.backward()`` on a loss of the output (the batch mean of per-sample losses) next."""
        self.attach()
        with torch.enable_grad():
            return self.model(x)

    def clear(self) -> None:
        """Drop the stored trajectory."""
        self._rec = None

    def _forward_hook(self, i: int, module: nn.Module, inputs: tuple[Any, ...], output: Any
                      ) -> None:
        # Registered through torch.compiler.disable (attach): it runs eagerly even inside a
        # torch.compile'd model (dynamo breaks the graph here), so the record holds real tensors
        # and the tensor hooks fire during backward().
        if not torch.is_grad_enabled() or module is not self.leaves[i]:
            return
        if _in_backward():
            # activation checkpointing (torch.utils.checkpoint) recomputes a segment inside
            # backward(): the recorded pass is the forward pass itself, whose outputs are the
            # graph's (their gradient hooks fire); a recomputation would start a new record
            self._recomputed = True
            return
        if i == 0:
            self._recomputed = False
            params = self.parameters
            dtype = params[0].dtype
            x0 = inputs[0].detach()
            self._rec = _Record(x0=x0.to(dtype), outs=[None] * len(self.leaves),
                                versions=[p._version for p in params], dtype=dtype)
        rec = self._rec
        # only the model's own forward pass, leaf after leaf, is recorded: a layer run on its
        # own afterwards (model[2](h), e.g. to inspect it between backward() and step()) would
        # otherwise overwrite that layer's activations with another input's
        if rec is None or i != rec.next or not isinstance(output, Tensor):
            return
        rec.next = i + 1
        out = output.detach()
        if out.is_floating_point() and out.dtype != rec.dtype:
            # autocast: keep the record in the parameters' dtype; backward() recomputes the
            # nominal activations in that dtype so that δx_t compares like with like.
            rec.low_precision = True
            out = out.to(rec.dtype)
        rec.outs[i] = out
        if i in self._grad_leaves and output.requires_grad:
            rec.needs_grad.add(i)
            output.register_hook(partial(_store_grad, rec, i))

    def record(self) -> _Record:
        """The stored trajectory, checked for completeness and freshness.

        Raises:
            RuntimeError: If no forward/backward was recorded, or the parameters changed since.
        """
        rec = self._rec
        hint = ("call loss.backward() on the batch-mean loss of the model's last forward pass "
                "(run with gradients enabled) before step()")
        if self._recomputed:
            hint += ("; layers of the model ran inside backward(), as activation checkpointing "
                     "does: torch.utils.checkpoint with use_reentrant=True runs the "
                     "checkpointed layers without gradients, so they are not recorded (use "
                     "use_reentrant=False, which DDPNOpt supports)")
        if rec is None:
            raise RuntimeError(f"no forward pass of the model was recorded; {hint}")
        if any(o is None for o in rec.outs):
            raise RuntimeError(f"the recorded forward pass is incomplete; {hint}")
        last = self.stages[-1].out_leaf
        if last not in rec.needs_grad:
            raise RuntimeError(f"the output of the recorded forward pass does not require grad "
                               f"(every parameter frozen?); {hint}")
        for leaf in sorted(rec.needs_grad):
            # leaves before the first trainable layer get no gradient (frozen first layers)
            if leaf not in rec.grads:
                raise RuntimeError(
                    f"no gradient reached the output of layer {leaf} in the last recorded forward "
                    f"pass; {hint}")
        if [p._version for p in self.parameters] != rec.versions:
            raise RuntimeError("the parameters changed after the recorded forward pass; run a "
                               "new forward and backward pass before step()")
        if rec.accumulated:
            raise RuntimeError(
                "the parameter gradients were accumulated over several backward passes since "
                "the last zero_grad(); DDPNOpt does not support gradient accumulation (its "
                "feedback needs the per-sample quantities of one batch: use one larger batch)")
        return rec

    def _input_of(self, rec: _Record, st: Stage) -> Tensor:
        return rec.x0 if st.leaf == 0 else rec.outs[st.leaf - 1]  # type: ignore[return-value]

    def _post_derivs(self, rec: _Record, st: Stage, second: bool
                     ) -> tuple[Tensor | None, Tensor | None]:
        h = rec.outs[st.leaf]
        assert h is not None
        ins = [rec.outs[j - 1] for j, _ in st.post]
        outs = [rec.outs[j] for j, _ in st.post]
        return post_derivatives([m for _, m in st.post], ins, outs, h.shape, second)  # type: ignore[arg-type]

    # --- precision and gradient units -----------------------------------------------------
    def _prepare(self, rec: _Record) -> None:
        """Once per record: recompute low-precision activations, then bring the recorded
        activation gradients to the units of the parameter gradients (:meth:`_reconcile`)."""
        if rec.reconciled:
            return
        if rec.low_precision:
            self._renominal(rec)
        scale = self._reconcile(rec)
        if scale != 1.0:
            rec.grads = {i: g * scale for i, g in rec.grads.items()}
        rec.reconciled = True

    def _renominal(self, rec: _Record) -> None:
        """Recompute the nominal activations x_t in the parameters' dtype (after an autocast
        forward pass), with autocast off and without recording."""
        x = rec.x0
        device = x.device.type
        with torch.no_grad(), torch.autocast(device, enabled=False):
            for i, m in enumerate(self.leaves):
                x = m(x)
                rec.outs[i] = x
        rec.low_precision = False

    def _reconcile(self, rec: _Record) -> float:
        r"""The factor c that converts the recorded activation gradients to the units of the
        parameter gradients as they are now.

        The gradient of the last layer that has one must equal the one the record implies,
        ``Σ_i (σ' ⊙ ∂J/∂x_{t+1})_i X_iᵀ``, up to a common factor c (the inverse loss scale
        after ``GradScaler.unscale_`` or ``scaler.step``, the factor of ``clip_grad_norm_``, 1
        otherwise) plus an L2 term of the loss, λ_W·W + λ_b·b (a penalty written into the loss
        rather than given as ``weight_decay``: the record holds only the data part). c and the
        λ are the least-squares fit; c within 1e-4 of a power of two (GradScaler's scales) is
        taken as that power, so scaled and unscaled runs agree to rounding. A layer whose
        implied gradient is at rounding level (a last layer at a stationary point) cannot tell
        c: the next layer down decides; if none can, c = 1.

        Raises:
            RuntimeError: If the two differ by more than 5 % after the fit: the gradients were
                accumulated over several backward passes (not supported), or changed other than
                by a common factor between backward() and step().
        """
        stages = [s for s in reversed(self.stages)
                  if any(p.grad is not None for p in s.layer.params) and s.out_leaf in rec.grads]
        for st in stages:
            fit = self._fit_scale(rec, st)
            if fit is None:
                continue
            c, rel = fit
            if rel > 0.05:
                raise RuntimeError(
                    f"the gradient of layer {st.layer.name} differs from the gradient of the "
                    f"recorded forward pass (relative difference {rel:.3g} after the best common "
                    "factor and L2 term): gradient accumulation over several backward passes is "
                    "not supported by DDPNOpt (its feedback needs the per-sample quantities of "
                    "one batch: use one larger batch), nor are changes of the gradients between "
                    "backward() and step() other than a common factor (GradScaler, "
                    "clip_grad_norm_), nor gradients averaged over processes "
                    "(DistributedDataParallel)")
            if c > 0:
                power = 2.0 ** round(math.log2(c))
                if abs(c / power - 1.0) < 1e-4:
                    c = power
            return c
        return 1.0

    def _fit_scale(self, rec: _Record, st: Any) -> tuple[float, float] | None:
        """(c, relative residual) for one stage's layer; None if its implied gradient is at
        rounding level (or not finite: the optimizer's finiteness check reports that)."""
        layer = st.layer
        h = rec.outs[st.leaf]
        assert h is not None
        d1, _ = self._post_derivs(rec, st, second=False)
        v = rec.grads[st.out_leaf].reshape(h.shape)
        outs = layer.outputs(v if d1 is None else v * d1)
        ins = layer.inputs(self._input_of(rec, st))
        implied = layer.batch_outer(outs, ins)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in layer.params]
        a = layer.aug(grads[0], grads[1] if len(grads) > 1 else None).reshape(-1).double()
        b = implied.reshape(-1).double()
        w = layer.aug(layer.params[0].detach(), None if len(layer.params) < 2 else
                      torch.zeros_like(layer.params[1])).reshape(-1).double()
        cols = [b, w]
        if len(layer.params) > 1:
            cols.append(layer.aug(torch.zeros_like(layer.params[0]),
                                  layer.params[1].detach()).reshape(-1).double())
        if any(p.grad is None for p in layer.params):   # compare the parts that have one
            mask = layer.aug(*[torch.full_like(p, float(p.grad is not None))
                               for p in layer.params]).reshape(-1).double()
            a, cols = a * mask, [col * mask for col in cols]
        # rounding level of the implied gradient: eps · Σ_i |G_i| |X_i| (per-sample outer
        # products' sizes), with a margin for the backward pass's own rounding
        eps = torch.finfo(h.dtype).eps
        size_t = (outs.flatten(1).norm(dim=1) * ins.flatten(1).norm(dim=1)).sum()
        scalars = torch.stack([a.dot(a), b.dot(b), size_t.to(torch.float64)])
        basis = torch.stack(cols, dim=1)
        if basis.device.type != "cpu":  # (gelsd: rank-safe, CPU only) the fit's inputs and
            n = a.numel()               # scalars in one device-to-host transfer
            flat = torch.cat([scalars, a, basis.reshape(-1)]).cpu()
            scalars, a, basis = flat[:3], flat[3:3 + n], flat[3 + n:].reshape(basis.shape)
        aa, bb, size = scalars.tolist()
        if not all(map(math.isfinite, (aa, bb, size))):
            return None
        if math.sqrt(bb) <= 64.0 * eps * size:
            return None
        # columns scaled to unit norm: gelsd drops singular values below eps · the largest, so
        # unscaled, weights ~1e16 times the gradient (a diverging run) dropped the c column
        norms = basis.norm(dim=0)
        norms = torch.where(norms > 0, norms, torch.ones_like(norms))
        coef = torch.linalg.lstsq(basis / norms, a.unsqueeze(1),
                                  driver="gelsd").solution[:, 0] / norms
        resid = a - basis @ coef
        rel = math.sqrt(float(resid.dot(resid)) / aa) if aa > 0 else 0.0
        return float(coef[0]), rel

    # --- terminal ---------------------------------------------------------------------------
    def _terminal_factor(self, out: Tensor, vxt: Tensor) -> Tensor:
        n = out.shape[0]
        if self.terminal_hessian == "outer":
            return vxt.unsqueeze(1)
        if self.terminal_hessian == "cross-entropy":
            if out.ndim != 2 or out.shape[1] < 2:
                raise ValueError(f"terminal_hessian='cross-entropy' needs logits of shape "
                                 f"(B, classes >= 2), got {tuple(out.shape)}; for other losses "
                                 "pass 'outer', 'identity' or a callable")
            p = torch.softmax(out, dim=1)
            sp = p.sqrt()
            return torch.diag_embed(sp) - sp.unsqueeze(2) * p.unsqueeze(1)
        if self.terminal_hessian == "identity":
            k = out[0].numel()
            eye = torch.eye(k, dtype=out.dtype, device=out.device).reshape(k, *out.shape[1:])
            return eye.unsqueeze(0).expand(n, *eye.shape)
        z = self.terminal_hessian(out, vxt)  # type: ignore[operator]
        if not isinstance(z, Tensor) or z.ndim != out.ndim + 1 or z.shape[0] != n or \
                z.shape[2:] != out.shape[1:]:
            raise ValueError(f"terminal_hessian must return a (B, r, *output.shape[1:]) tensor; "
                             f"got {getattr(z, 'shape', z)!r} for output shape "
                             f"{tuple(out.shape)}")
        return z

    # --- backward Bellman pass --------------------------------------------------------------
    def backward(self, policy: PolicyFn, *, values: bool = True, diagnostics: bool = False
                 ) -> list[StageGains]:
        """The backward Bellman pass over the recorded trajectory.

        Args:
            policy: ``policy(t, layer, data) -> StagePolicy | None`` called for t = T−1 … 0
                with the stage's :class:`StageData`; it updates the base optimizer's curvature
                statistics and returns the layer's policy (None: a frozen layer, no control).
            values: Also propagate V_x and Z (needed for feedback); False computes only Q̄_u and
                V_h (for a base optimizer that needs per-sample gradients, such as EKFAC).
            diagnostics: Also store the per-sample V_x at each stage input and the fraction of
                samples whose value Hessian was projected onto the PSD cone.

        Returns:
            One :class:`StageGains` per stage, in forward order.
        """
        rec = self.record()
        self._prepare(rec)
        bsz = rec.batch
        last = self.stages[-1]
        out_t = rec.outs[last.out_leaf]
        assert out_t is not None
        z = self._terminal_factor(out_t, rec.grads[last.out_leaf] * bsz) if values else None
        e: Tensor | None = None      # Bellman correction to the back-prop costate, at x_{t+1}
        gains: list[StageGains | None] = [None] * len(self.stages)
        for st in reversed(self.stages):
            layer = st.layer
            x = self._input_of(rec, st)
            h = rec.outs[st.leaf]
            assert h is not None
            hs = h.shape
            d1, _ = self._post_derivs(rec, st, second=False)
            e_h = None if e is None else e.reshape(hs)
            if e_h is not None and d1 is not None:
                e_h = e_h * d1

            def vxn(st: Stage = st, e: Tensor | None = e, hs: torch.Size = hs) -> Tensor:
                v = (rec.grads[st.out_leaf] * bsz).reshape(hs)
                return v if e is None else v + e.reshape(hs)

            def vh(layer: AffineLayer = layer, d1: Tensor | None = d1, vxn=vxn) -> Tensor:
                v = vxn()
                return layer.outputs(v if d1 is None else v * d1)

            xs = layer.inputs(x)
            qw = layer.weight.grad
            qb = None if layer.bias is None else layer.bias.grad
            if qw is None:
                qw = torch.zeros_like(layer.weight)
            if layer.bias is not None and qb is None:
                qb = torch.zeros_like(layer.bias)
            qbar = layer.aug(qw, qb)
            if e_h is not None:
                qbar = qbar + layer.batch_outer(layer.outputs(e_h), xs).div_(bsz)
                qw, qb = layer.split(qbar)
            data = StageData(qw, qb, xs, vh)
            frozen = all(p.grad is None for p in layer.params)
            pol = None if frozen else policy(st.index, layer, data)
            g = StageGains(st, pol, x, data, qbar)
            gains[st.index] = g
            if not values:
                continue
            assert z is not None
            r = z.shape[1]
            zh_full = z.reshape(bsz, r, *hs[1:])
            if d1 is not None:
                zh_full = zh_full * d1.unsqueeze(1)
            zh_flat = zh_full.reshape(bsz * r, *hs[1:])
            g.zh = layer.outputs(zh_flat).reshape(bsz, r, layer.n_out, -1)
            if pol is not None and (pol.tassa or pol.second_order):
                g.d1 = None if d1 is None else layer.outputs(d1)
            if pol is not None and pol.second_order:
                _, d2 = self._post_derivs(rec, st, second=True)
                g.d2vx = None if d2 is None else layer.outputs(vxn() * d2)
            if st.index == 0:
                continue
            qx = layer.input_vjp(zh_flat, x.shape[1:]).reshape(bsz, r, *x.shape[1:])
            g.qx = qx
            e_x = None if e_h is None else layer.input_vjp(e_h, x.shape[1:])
            eps = pol.vxx_reg if pol is not None and pol.eps_placement == "vxx" else 0.0
            if pol is not None and pol.feedback:
                cur = pol.curvature
                phi, c = cur.quadratic_forms(g.zh, xs, pol.q_eff if pol.bellman else None)
                s = torch.eye(r, dtype=phi.dtype, device=phi.device) - (cur.eta / bsz) * phi
                if eps > 0:      # Algorithm 3, line 12: V_xx ← V_xx + εI (dense factor)
                    z_new, clipped = _regularized_factor(s, qx, eps, diagnostics)
                else:
                    z_new, clipped = _refactor(s, qx, diagnostics)
                g.clipped = clipped
                if c is not None:
                    if r == 1:
                        corr = qx[:, 0] * (c[:, 0] * -cur.eta).reshape(
                            bsz, *([1] * (x.ndim - 1)))
                    else:
                        corr = torch.einsum("ba,ban->bn", c, qx.reshape(bsz, r, -1)).reshape(
                            x.shape).mul_(-cur.eta)
                    e_x = corr if e_x is None else e_x.add_(corr)
            elif eps > 0:
                z_new = _regularized_factor(None, qx, eps, False)[0]
            else:
                z_new = qx
            g.z = z_new
            prev_leaf = self.stages[st.index - 1].out_leaf
            if diagnostics and prev_leaf in rec.grads:
                vx_bp = (rec.grads[prev_leaf] * bsz).reshape(x.shape)
                g.vx = vx_bp if e_x is None else vx_bp + e_x
            z, e = z_new, e_x
        return gains  # type: ignore[return-value]

    # --- extra forward pass -----------------------------------------------------------------
    def forward_update(self, gains: list[StageGains], update: UpdateFn) -> Tensor:
        """The additional forward pass: for t = 0 … T−1, ``δx_t = x̂_t − x_t`` through the
        already updated layers, ``update(t, E[Q_ux δx_t] or None) -> (W_t*, b_t*)`` gives the
        layer's new parameters, and ``x̂_{t+1} = f_t(x̂_t, u_t*)``.

        Returns:
            ``x̂_T``, the output of the updated network on the recorded batch.
        """
        rec = self.record()
        xhat = self._input_of(rec, self.stages[0])
        for st, g in zip(self.stages, gains, strict=True):
            fb = None
            if st.index > 0 and g.has_feedback:
                fb = g.feedback(xhat - g.x)
            w, b = update(st.index, fb)
            xhat = st.layer.forward(xhat, w, b)
            for _, m in st.post:
                xhat = m(xhat)
        return xhat


class _ForwardHook:
    """The recording forward hook of leaf ``i``: a picklable callable, so that a copied model
    keeps a hook bound to the copied trajectory. It runs eagerly even inside a torch.compile'd
    model (dynamo breaks the graph at the disabled call)."""

    def __init__(self, trajectory: DDPTrajectory, i: int) -> None:
        self.trajectory, self.i = trajectory, i

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        _eager_hook()(self.trajectory, self.i, module, inputs, output)


_EAGER_HOOK: Any = None


def _eager_hook() -> Any:
    """``torch.compiler.disable`` of the hook body, made on first use (imports dynamo only for
    users of the trajectory)."""
    global _EAGER_HOOK
    if _EAGER_HOOK is None:
        from torch import compiler

        _EAGER_HOOK = compiler.disable(_run_forward_hook)
    return _EAGER_HOOK


def _run_forward_hook(trajectory: DDPTrajectory, i: int, module: nn.Module,
                      inputs: tuple[Any, ...], output: Any) -> None:
    trajectory._forward_hook(i, module, inputs, output)


def _reset_compiled() -> None:
    """``torch._dynamo.reset()`` if dynamo is loaded (it is not imported otherwise)."""
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.reset()


def _in_backward() -> bool:
    """True while autograd runs a backward pass on this thread (torch's graph-task id, -1
    outside one; False where this private hook of torch is missing)."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


def _store_grad(rec: _Record, i: int, grad: Tensor) -> None:
    rec.grads[i] = grad.detach().to(rec.dtype)


def _regularized_factor(s: Tensor | None, qx: Tensor, eps: float, diagnostics: bool
                        ) -> tuple[Tensor, Tensor | None]:
    """The factor Z (``Zᵀ Z = V_xx``, ``dim x`` rows per sample) of
    ``V_xx = Π_+(q_xᵀ S q_x) + ε I``, Π_+ the projection onto the PSD cone (S = I when ``s`` is
    None), and (with ``diagnostics``) the fraction of samples that needed the projection.

    V_xx is formed densely per sample (``(B, n, n)``, n = dim x); samples whose S has a Cholesky
    factor (S ≻ 0, hence q_xᵀ S q_x ⪰ 0) skip the eigendecomposition; V_xx ⪰ εI ≻ 0, so its
    Cholesky factor L gives Z = Lᵀ exactly, and the rank never exceeds n.
    """
    bsz, r = qx.shape[:2]
    shape = qx.shape[2:]
    # in float64: q_xᵀ S q_x has rank ≤ r < n, so in float32 its rounding-level negative
    # eigenvalues defeated a small ε (Cholesky failed at step 1 for ε ≤ 1e-9)
    q = qx.reshape(bsz, r, -1).double()
    s = None if s is None else s.double()
    n = q.shape[2]
    clipped = None
    if s is None:
        v = q.transpose(1, 2) @ q
    else:
        v = q.transpose(1, 2) @ (s @ q)
        v = 0.5 * (v + v.transpose(1, 2))
        bad = torch.linalg.cholesky_ex(s).info != 0
        if bool(bad.any()):  # (one host synchronisation; rare samples take the slow branch)
            vb = v[bad].double()
            if not bool(torch.isfinite(vb).all()):   # the optimizer's finiteness check reports it
                return torch.full((bsz, n, *shape), float("nan"), dtype=qx.dtype,
                                  device=qx.device), None
            lam, vec = torch.linalg.eigh(vb)
            proj = (vec * lam.clamp(min=0.0).unsqueeze(1)) @ vec.transpose(1, 2)
            v = v.clone()
            v[bad] = proj.to(v.dtype)
            if diagnostics:
                tol = 1e-12 * lam.abs().amax(dim=1)
                neg = (lam.min(dim=1).values < -tol).to(s.dtype).sum()
                clipped = neg / bsz
        elif diagnostics:
            clipped = torch.zeros((), dtype=s.dtype, device=s.device)
    v = v + eps * torch.eye(n, dtype=v.dtype, device=v.device)
    chol, info = torch.linalg.cholesky_ex(v)
    z = chol.transpose(1, 2).reshape(bsz, n, *shape).to(qx.dtype)
    # a failed factorisation (non-finite or lost to rounding) gives NaN everywhere, selected on
    # the device (no host read of info); the optimizer's finiteness check reports it
    z = torch.where(info.any(), torch.full((), float("nan"), dtype=qx.dtype, device=qx.device),
                    z)
    return z, None if clipped is None else clipped.to(qx.dtype)


def _refactor(s: Tensor, qx: Tensor, diagnostics: bool = True) -> tuple[Tensor, Tensor | None]:
    """The factor Z of the PSD projection of V_xx = q_xᵀ S q_x (per sample), and (with
    ``diagnostics``) the fraction of samples whose V_xx had a negative eigenvalue.

    ``qx`` is ``(B, r, *x_shape)``, ``s`` is ``(B, r, r)``. With r = 1, ``Z = √max(s, 0) q_x``.
    Otherwise ``q_xᵀ = Q R`` (reduced QR), ``V_xx = Q (R S Rᵀ) Qᵀ``, and the projection is
    ``Q (R S Rᵀ)_+ Qᵀ = Zᵀ Z`` with ``Z = (R S Rᵀ)_+^{1/2} Qᵀ`` (rank ≤ min(r, dim x); the
    Cholesky shortcut is taken only when r ≤ dim x, so the factor never has more rows than the
    state has entries).
    """
    bsz, r = qx.shape[:2]
    if r == 1:
        v = s[:, 0, 0]
        clipped = (v < 0).to(s.dtype).mean() if diagnostics else None
        scale = v.clamp(min=0.0).sqrt_().reshape(bsz, 1, *([1] * (qx.ndim - 2)))
        return qx * scale, clipped
    if r <= math.prod(qx.shape[2:]) and bool((s.diagonal(dim1=1, dim2=2).sum(-1) >= r - 1).all()):
        # trace(I − S) ≤ 1 bounds every eigenvalue of the PSD matrix I − S by 1, so S ⪰ 0 and
        # V_xx = q_xᵀ S q_x needs no projection: any factor S = L Lᵀ gives Z = Lᵀ q_x
        chol, info = torch.linalg.cholesky_ex(s)
        if not bool(info.any()):
            z = chol.transpose(1, 2) @ qx.reshape(bsz, r, -1)
            zero = torch.zeros((), dtype=s.dtype, device=s.device) if diagnostics else None
            return z.reshape(qx.shape), zero
    q, rr = torch.linalg.qr(qx.reshape(bsz, r, -1).transpose(1, 2))
    c = rr @ s @ rr.transpose(1, 2)
    c = (0.5 * (c + c.transpose(1, 2))).double()
    if not bool(torch.isfinite(c).all()):       # let the optimizer's finiteness check report it
        nan = torch.full((bsz, c.shape[1], *qx.shape[2:]), float("nan"), dtype=qx.dtype,
                         device=qx.device)
        return nan, None
    lam, vec = torch.linalg.eigh(c)
    lam, vec = lam.to(qx.dtype), vec.to(qx.dtype)
    clipped = None
    if diagnostics:
        tol = 1e-12 * lam.abs().amax(dim=1)
        clipped = (lam.min(dim=1).values < -tol).to(s.dtype).mean()
    root = (vec * lam.clamp(min=0.0).sqrt().unsqueeze(1)) @ vec.transpose(1, 2)
    z = root @ q.transpose(1, 2)
    return z.reshape(bsz, z.shape[1], *qx.shape[2:]), clipped


def _affine_base(m: nn.Module) -> type[nn.Module]:
    return nn.Linear if isinstance(m, nn.Linear) else nn.Conv2d


def _affine_reason(m: nn.Module) -> str | None:
    """Why a Linear/Conv2d is not the plain layer the DDP model assumes (its weight W and bias
    b enter as W x + b), or None."""
    from torch.nn.utils import parametrize

    base = _affine_base(m)
    if type(m).forward is not base.forward or (
            base is nn.Conv2d and type(m)._conv_forward is not nn.Conv2d._conv_forward):
        return (f"{type(m).__name__} overrides forward (e.g. fake quantization, LoRA): the DDP "
                "model would not be the layer the network runs")
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in m.parameters()):
        return "its parameters are not initialized yet (a lazy layer): run one forward first"
    if parametrize.is_parametrized(m):
        return ("its weight is parametrized (weight_norm/spectral_norm): the controls must be "
                "the parameters themselves")
    if m._forward_pre_hooks:  # (forward hooks that only observe, as DDPNOpt's own, are fine)
        return ("it has forward pre-hooks (e.g. torch.nn.utils.weight_norm, which recomputes "
                "the weight): the controls must be the parameters themselves")
    return None


def _refuse_shared_weights(stages: list[Stage]) -> None:
    """Each stage is its own control: a parameter shared by two layers (tied weights) would be
    updated once per layer, with feedback computed as if they were independent."""
    owner: dict[int, str] = {}
    for st in stages:
        for p in st.layer.params:
            if id(p) in owner:
                raise ValueError(
                    f"DDPTrajectory: layers {owner[id(p)]} and {st.layer.name} share a parameter "
                    "(tied weights); each layer is its own control in DDP, so shared weights "
                    "are not supported")
            owner[id(p)] = st.layer.name


def _leaves(model: nn.Sequential, prefix: str = "", seen: dict[int, str] | None = None
            ) -> tuple[list[nn.Module], list[str]]:
    """The model's leaf modules in order (nested Sequentials flattened); a module that appears
    twice (reused: its hook would fire twice and overwrite its record) is refused."""
    seen = {} if seen is None else seen
    mods: list[nn.Module] = []
    names: list[str] = []
    for name, m in model._modules.items():  # named_children() would skip a repeated module
        if m is None:
            continue
        if id(m) in seen:
            raise ValueError(
                f"DDPTrajectory: module {prefix}{name} is the same object as {seen[id(m)]}; "
                "each position of the Sequential must be its own module (a reused layer "
                "shares weights, which DDP's per-layer controls do not support)")
        seen[id(m)] = f"{prefix}{name}"
        full = f"{prefix}{name}"
        if isinstance(m, nn.Sequential):
            sub, subn = _leaves(m, full + ".", seen)
            mods += sub
            names += subn
        else:
            mods.append(m)
            names.append(f"{full} ({type(m).__name__})")
    return mods, names


def _check_sizes(stages: list[Stage]) -> None:
    for prev, st in itertools.pairwise(stages):
        a, b = prev.layer.module, st.layer.module
        if any(isinstance(m, nn.Flatten) for _, m in prev.post):
            continue
        if isinstance(a, nn.Linear) and isinstance(b, nn.Linear) and \
                a.out_features != b.in_features:
            raise ValueError(f"layer {st.layer.name} expects {b.in_features} inputs but layer "
                             f"{prev.layer.name} produces {a.out_features}")
        if isinstance(a, nn.Conv2d) and isinstance(b, nn.Conv2d) and \
                a.out_channels != b.in_channels:
            raise ValueError(f"layer {st.layer.name} expects {b.in_channels} channels but layer "
                             f"{prev.layer.name} produces {a.out_channels}")
