r"""The base optimizers whose curvature DDPNOpt adopts (the paper's Table 2).

Every base gives, per layer, the open-loop step ``k_t`` (its own update, moments and momentum
included) and the curvature model ``Q_uu ≈ M/η`` that DDPNOpt uses for the feedback
``K_t δx = −η M⁻¹ Q_ux δx``:

| base | torch equivalent (feedback off) | M |
|---|---|---|
| ``"sgd"`` | ``SGD(lr, momentum, dampening, weight_decay, nesterov)`` | I |
| ``"rmsprop"`` | ``RMSprop(lr, alpha, eps, weight_decay, momentum, centered)`` | diag(√v + ε) |
| ``"adam"`` | ``Adam(lr, betas, eps, weight_decay)`` | diag(√(v/(1−β₂ᵏ)) + ε) |
| ``"ekfac"`` | none (dynopt's EKFAC, George et al. 2018) | (U_G⊗U_A) diag(S+λ) (U_G⊗U_A)ᵀ |

(torch equivalents are ``torch.optim`` classes.)

The diagonal bases repeat torch's single-tensor arithmetic operation for operation (out of
place, committed after the step succeeded), so with the feedback off DDPNOpt equals the torch
optimizer bit for bit. EKFAC: running averages (decay ``ekfac_decay``) of the Kronecker factors
A = E[X Xᵀ] and G = E[V_h V_hᵀ] of each layer, their eigenbases recomputed every
``update_freq`` steps (and then the scaling reset), the second moment
S = E[(U_Gᵀ V_h X ᵀ U_A)²] of the per-sample gradients in that basis, and Tikhonov damping λ
(``damping``); the step is −lr · M⁻¹ (Q̄_u + wd·u), with optional heavy-ball ``momentum``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..ddp.layers import AffineLayer, Curvature
from .checkpoint import Key

__all__ = ["BASES", "DIAGONAL_STATE", "EKFAC_STATE", "NONNEGATIVE_STATE", "LayerStep",
           "ParamStep", "batch_second_moment", "ekfac_layer_step", "ekfac_state_shapes",
           "param_step"]

BASES = ("sgd", "rmsprop", "adam", "ekfac")

#: The per-tensor state each diagonal base writes (:func:`param_step`), as a checkpoint must hold
#: it. Buffers that a hyperparameter turns on later (momentum, centered) start from zero when
#: absent, so they are optional; a step writes the others together.
DIAGONAL_STATE: dict[str, dict[str, Key]] = {
    "sgd": {"momentum_buffer": Key("param")},
    "rmsprop": {"step": Key("count", required=True), "square_avg": Key("param", required=True),
                "grad_avg": Key("param"), "momentum_buffer": Key("param")},
    "adam": {"step": Key("count", required=True), "exp_avg": Key("param", required=True),
             "exp_avg_sq": Key("param", required=True)},
}
#: EKFAC's state, kept in the layer's weight entry (the bias entry stays empty): key -> whether
#: an entry must hold it (the heavy-ball buffer appears once ``momentum`` is non-zero).
EKFAC_STATE: dict[str, bool] = {"step": True, "ekfac_A": True, "ekfac_G": True,
                                "ekfac_UA": True, "ekfac_UG": True, "ekfac_S": True,
                                "ekfac_buf": False}
#: Second moments: a negative entry would make the next step's square root NaN.
NONNEGATIVE_STATE = ("square_avg", "exp_avg_sq", "ekfac_S")


@dataclass
class ParamStep:
    """A pending base update of one parameter tensor.

    Attributes:
        new_param: u + k (the base optimizer's step, out of place).
        new_state: The tensors to write into the optimizer state when the step is committed.
        denom: diag(M) for this tensor (None: M = I).
        d: The effective gradient Q̄_u + ℓ_u (weight decay included).
    """

    new_param: Tensor
    new_state: dict[str, Any]
    denom: Tensor | None
    d: Tensor


@dataclass
class LayerStep:
    """A pending base update of one layer (weight and bias) and its curvature."""

    new_params: list[Tensor]
    new_states: list[dict[str, Any]]
    curvature: Curvature
    d_aug: Tensor
    extra: dict[str, Any] = field(default_factory=dict)
    mask: Tensor | None = None   # 1 on the layer's active (control) coordinates, None: all
    active: list[bool] | None = None  # per tensor of the layer, None: all active


def param_step(base: str, p: Tensor, g: Tensor, state: dict[str, Any], hp: dict[str, Any]
               ) -> ParamStep:
    """The torch single-tensor update of ``base`` (sgd, rmsprop, adam), out of place."""
    lr, wd = hp["lr"], hp["weight_decay"]
    d = g.add(p, alpha=wd) if wd != 0 else g
    if base == "sgd":
        momentum = hp["momentum"]
        new: dict[str, Any] = {}
        dirn = d
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = d.detach().clone()
            else:
                buf = buf.mul(momentum).add_(d, alpha=1 - hp["dampening"])
            new["momentum_buffer"] = buf
            dirn = d.add(buf, alpha=momentum) if hp["nesterov"] else buf
        return ParamStep(p.add(dirn, alpha=-lr), new, None, d)
    step = int(state.get("step", 0)) + 1
    if base == "rmsprop":
        alpha, momentum = hp["alpha"], hp["momentum"]
        sq = state.get("square_avg")
        sq = torch.zeros_like(p) if sq is None else sq
        sq = sq.mul(alpha).addcmul_(d, d, value=1 - alpha)
        new = {"step": step, "square_avg": sq}
        if hp["centered"]:
            ga = state.get("grad_avg")
            ga = (torch.zeros_like(p) if ga is None else ga).lerp(d, 1 - alpha)
            new["grad_avg"] = ga
            avg = sq.addcmul(ga, ga, value=-1).sqrt_()
        else:
            avg = sq.sqrt()
        avg = avg.add_(hp["eps"])
        if momentum > 0:
            buf = state.get("momentum_buffer")
            buf = (torch.zeros_like(p) if buf is None else buf).mul(momentum).addcdiv_(d, avg)
            new["momentum_buffer"] = buf
            return ParamStep(p.add(buf, alpha=-lr), new, avg, d)
        return ParamStep(p.addcdiv(d, avg, value=-lr), new, avg, d)
    if base == "adam":
        beta1, beta2 = hp["betas"]
        m = state.get("exp_avg")
        v = state.get("exp_avg_sq")
        m = (torch.zeros_like(p) if m is None else m).lerp(d, 1 - beta1)
        v = (torch.zeros_like(p) if v is None else v).mul(beta2).addcmul_(d, d, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** float(step)
        bias_correction2 = 1 - beta2 ** float(step)
        step_size = lr / bias_correction1
        denom = (v.sqrt() / bias_correction2 ** 0.5).add_(hp["eps"])
        new = {"step": step, "exp_avg": m, "exp_avg_sq": v}
        return ParamStep(p.addcdiv(m, denom, value=-step_size), new, denom, d)
    raise ValueError(f"unknown base {base!r}")  # pragma: no cover - validated earlier


def diagonal_layer_step(base: str, layer: AffineLayer, grads: list[Tensor],
                        states: list[dict[str, Any]], hp: dict[str, Any],
                        active: list[bool] | None = None) -> LayerStep:
    """:func:`param_step` for each tensor of a layer, with the layer's curvature assembled.

    ``active[i] = False`` marks a tensor that is not a control (frozen, or outside every param
    group): it keeps its value and state, and its block of M⁻¹ is 0, so neither the open-loop
    step nor the feedback K δx nor the value recursion's quadratic forms involve it (M⁻¹
    restricted to the active coordinates).
    """
    active = [True] * len(layer.params) if active is None else active
    steps = [param_step(base, p, g, s, hp) if on else
             ParamStep(p, {}, None, torch.zeros_like(p))
             for p, g, s, on in zip(layer.params, grads, states, active, strict=True)]
    inv = None
    if not all(active) or any(s.denom is not None for s in steps):
        invs = [(s.denom.reciprocal() if s.denom is not None else torch.ones_like(p)) if on
                else torch.zeros_like(p)
                for s, p, on in zip(steps, layer.params, active, strict=True)]
        inv = layer.aug(invs[0], invs[1] if len(invs) > 1 else None)
    d_aug = layer.aug(steps[0].d, steps[1].d if len(steps) > 1 else None)
    out = LayerStep([s.new_param for s in steps], [s.new_state for s in steps],
                    Curvature(eta=hp["lr"], inv=inv), d_aug)
    if not all(active):
        out.active = active
        out.mask = layer.aug(*[torch.full_like(p, float(on))
                               for p, on in zip(layer.params, active, strict=True)])
    return out


def ekfac_layer_step(layer: AffineLayer, grads: list[Tensor], vh: Tensor, xs: Tensor,
                     state: dict[str, Any], hp: dict[str, Any]) -> LayerStep:
    """One EKFAC step of a layer (state lives in the weight's optimizer state).

    Args:
        layer: The layer.
        grads: Q̄_u for weight (and bias).
        vh: Per-sample V_h, ``(B, out, P)``.
        xs: Augmented inputs X, ``(B, in_aug, P)``.
        state: The weight's optimizer state (read only; the new values are returned).
        hp: Hyperparameters (lr, weight_decay, momentum, damping, ekfac_decay, update_freq).
    """
    lr, wd, decay = hp["lr"], hp["weight_decay"], hp["ekfac_decay"]
    step = int(state.get("step", 0)) + 1
    bsz, _, npos = xs.shape
    if npos == 1:
        x0, v0 = xs[:, :, 0], vh[:, :, 0]
        a_b = x0.T @ x0 / bsz
        g_b = v0.T @ v0 / bsz
    else:
        a_b = torch.einsum("bkp,blp->kl", xs, xs) / (bsz * npos)
        g_b = torch.einsum("bjp,blp->jl", vh, vh) / (bsz * npos)
    a_old, g_old = state.get("ekfac_A"), state.get("ekfac_G")
    a = a_b if a_old is None else a_old.mul(decay).add_(a_b, alpha=1 - decay)
    g = g_b if g_old is None else g_old.mul(decay).add_(g_b, alpha=1 - decay)
    refresh = "ekfac_UA" not in state or (step - 1) % hp["update_freq"] == 0
    if refresh:
        ua = torch.linalg.eigh(a.double()).eigenvectors.to(a.dtype)
        ug = torch.linalg.eigh(g.double()).eigenvectors.to(g.dtype)
    else:
        ua, ug = state["ekfac_UA"], state["ekfac_UG"]
    vt = torch.einsum("jk,bjp->bkp", ug, vh)
    xt = torch.einsum("kl,bkp->blp", ua, xs)
    if npos == 1:
        s_b = (vt[:, :, 0] ** 2).T @ (xt[:, :, 0] ** 2) / bsz
    else:
        s_b = (torch.matmul(vt, xt.transpose(1, 2)) ** 2).mean(0)
    s_old = state.get("ekfac_S")
    s = s_b if refresh or s_old is None else s_old.mul(decay).add_(s_b, alpha=1 - decay)
    params = layer.params
    d = layer.aug(grads[0], grads[1] if len(grads) > 1 else None)
    if wd != 0:
        d = d.add(layer.aug(params[0], params[1] if len(params) > 1 else None), alpha=wd)
    inv = (s + hp["damping"]).reciprocal()
    cur = Curvature(eta=lr, inv=inv, rot_out=ug, rot_in=ua)
    dirn = cur.solve(d)
    new: dict[str, Any] = {"step": step, "ekfac_A": a, "ekfac_G": g, "ekfac_UA": ua,
                           "ekfac_UG": ug, "ekfac_S": s}
    if hp["momentum"] != 0:
        buf = state.get("ekfac_buf")
        buf = dirn if buf is None else buf.mul(hp["momentum"]).add_(dirn)
        new["ekfac_buf"] = buf
        dirn = buf
    dw, db = layer.split(dirn)
    new_params = [params[0].add(dw, alpha=-lr)]
    if db is not None:
        new_params.append(params[1].add(db, alpha=-lr))
    states = [new] + ([{}] if db is not None else [])
    return LayerStep(new_params, states, cur, d)


def ekfac_state_shapes(layer: AffineLayer) -> dict[str, tuple[int, ...]]:
    """The shapes of the EKFAC factors of ``layer`` (:func:`ekfac_layer_step`): A and U_A are
    ``(in_aug, in_aug)``, G and U_G ``(out, out)``, S and the momentum buffer ``(out, in_aug)``,
    with ``in_aug`` the weight's fan-in plus one for a bias."""
    n_out = layer.n_out
    n_in = layer.weight[0].numel() + (layer.bias is not None)
    return {"ekfac_A": (n_in, n_in), "ekfac_UA": (n_in, n_in), "ekfac_G": (n_out, n_out),
            "ekfac_UG": (n_out, n_out), "ekfac_S": (n_out, n_in), "ekfac_buf": (n_out, n_in)}


def batch_second_moment(vh: Tensor, xs: Tensor, eps: float, lr: float,
                        mask: Tensor | None = None) -> Curvature:
    """M = diag(√E_i[Q_u⁽ⁱ⁾ ⊙ Q_u⁽ⁱ⁾]) + ε from the per-sample gradients Q_u⁽ⁱ⁾ = V_h⁽ⁱ⁾ X_iᵀ
    of this batch (one matmul for a linear layer); M⁻¹ is 0 where ``mask`` is 0."""
    bsz, _, npos = xs.shape
    if npos == 1:
        sm = (vh[:, :, 0] ** 2).T @ (xs[:, :, 0] ** 2) / bsz
    else:
        sm = (torch.matmul(vh, xs.transpose(1, 2)) ** 2).mean(0)
    inv = (sm.sqrt() + eps).reciprocal()
    return Curvature(eta=lr, inv=inv if mask is None else inv * mask)
