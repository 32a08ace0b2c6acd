"""A dense, per-sample DDP reference for small networks (test helper, float64).

Everything is formed explicitly: per-sample Jacobians f_x, f_u by autograd, Q_x, Q_u, Q_xx, Q_ux
as matrices, the second-order term V'_x·f_ux as a Hessian block, the preconditioner M as a dense
matrix, and the policy δu = −η M⁻¹ (Q̄_u + E[Q_ux δx]) applied in an extra forward pass. It shares
no code with dynopt.systems.ddp_trajectory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev


def stages(model: nn.Sequential) -> list[tuple[nn.Module, list[nn.Module]]]:
    out: list[tuple[nn.Module, list[nn.Module]]] = []
    for m in model:
        if isinstance(m, nn.Linear | nn.Conv2d):
            out.append((m, []))
        else:
            out[-1][1].append(m)
    return out


def stage_fn(layer: nn.Module, post: list[nn.Module], in_shape: tuple[int, ...]) -> Callable:
    """f(x_flat, u) -> flat output for ONE sample (u = [vec W, b])."""
    n_w = layer.weight.numel()

    def f(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        w = u[:n_w].reshape(layer.weight.shape)
        b = u[n_w:]
        h = functional_call(layer, {"weight": w, "bias": b}, (x.reshape(1, *in_shape),))
        for m in post:
            h = m(h)
        return h.reshape(-1)

    return f


def flat(layer: nn.Module) -> torch.Tensor:
    return torch.cat([layer.weight.detach().flatten(), layer.bias.detach()])


def dense_step(model: nn.Sequential, x: torch.Tensor, terminal_grad: Callable, *, lr: float,
               minv: Callable[..., torch.Tensor], vxx_reg: float = 0.0,
               second_order: bool = False, bellman: bool = True, terminal_z: str = "outer",
               minv_open: Callable[..., torch.Tensor] | None = None,
               eps_placement: str = "qux") -> dict:
    """One DDPNOpt step by dense formulas.

    Args:
        terminal_grad: ``out -> per-sample ∇φ`` (B, n_T).
        minv: ``(t, qbar, per_sample_qu) -> M⁻¹`` dense (n_u, n_u) for layer t.
        minv_open: The M⁻¹ of the open-loop step k (default: ``minv``).
        eps_placement: ``"qux"``: ε·I added to V'_xx inside each stage's Q_ux only (the terminal
            one too); ``"vxx"``: the modified Bellman recursion of Algorithm 3, V_xx ← V_xx + ε·I
            after each stage's update (so Q_xx, Q_ux, V_x and V_xx upstream all see it), the
            terminal V_xx left alone.

    Returns:
        dict with new flat params per layer, and per-layer dense diagnostics.
    """
    st = stages(model)
    us = [flat(layer) for layer, _ in st]
    bsz = x.shape[0]
    shapes = []
    h = x
    with torch.no_grad():
        for layer, post in st:
            shapes.append(tuple(h.shape[1:]))
            h = layer(h)
            for m in post:
                h = m(h)
    out_nat = h
    fns = [stage_fn(layer, post, shp) for (layer, post), shp in zip(st, shapes, strict=True)]
    xs = [x.reshape(bsz, -1)]
    for f, u in zip(fns, us, strict=True):
        xs.append(torch.stack([f(xs[-1][i], u) for i in range(bsz)]).detach())
    vx = terminal_grad(out_nat).reshape(bsz, -1)             # (B, n_T)
    if terminal_z == "outer":
        vxx = [torch.outer(v, v) for v in vx]
    elif terminal_z == "identity":
        vxx = [torch.eye(v.numel(), dtype=v.dtype) for v in vx]
    else:                                                    # softmax cross-entropy Hessian
        p = torch.softmax(out_nat, dim=1)
        vxx = [torch.diag(pi) - torch.outer(pi, pi) for pi in p]
    ks, kgain, info = [None] * len(st), [None] * len(st), [None] * len(st)
    for t in reversed(range(len(st))):
        f, u = fns[t], us[t]
        fx = [jacrev(f, argnums=0)(xs[t][i], u) for i in range(bsz)]
        fu = [jacrev(f, argnums=1)(xs[t][i], u) for i in range(bsz)]
        qx = [fx[i].T @ vx[i] for i in range(bsz)]
        qu = [fu[i].T @ vx[i] for i in range(bsz)]
        qxx = [fx[i].T @ vxx[i] @ fx[i] for i in range(bsz)]
        qux = [fu[i].T @ vxx[i] @ fx[i] for i in range(bsz)]
        gain = []
        for i in range(bsz):
            tassa = vxx_reg if eps_placement == "qux" else 0.0
            g = fu[i].T @ (vxx[i] + tassa * torch.eye(vxx[i].shape[0], dtype=x.dtype)) @ fx[i]
            if second_order:
                v = vx[i]

                def s(xx: torch.Tensor, uu: torch.Tensor, v: torch.Tensor = v) -> torch.Tensor:
                    return (v * f(xx, uu)).sum()

                hs = hessian(s, argnums=(0, 1))(xs[t][i], u)
                g = g + hs[1][0]                              # ∂²/∂u∂x
            gain.append(g)
        qbar = torch.stack(qu).mean(0)
        mi = minv(t, qbar, torch.stack(qu))
        mo = mi if minv_open is None else minv_open(t, qbar, torch.stack(qu))
        ks[t] = -lr * mo @ qbar
        kgain[t] = [-lr * mi @ g for g in gain]
        info[t] = {"qbar": qbar, "vx_in": None, "vxx_in": None}
        vx = [qx[i] - qux[i].T @ (lr * mi @ qbar) for i in range(bsz)] if bellman else qx
        vxx = [_psd(qxx[i] - (lr / bsz) * qux[i].T @ mi @ qux[i]) for i in range(bsz)]
        if eps_placement == "vxx":
            vxx = [v + vxx_reg * torch.eye(v.shape[0], dtype=v.dtype) for v in vxx]
        info[t]["vx_in"] = torch.stack(vx)
        info[t]["vxx_in"] = torch.stack(vxx)
    xhat = xs[0]
    new = []
    for t, (f, u) in enumerate(zip(fns, us, strict=True)):
        dx = xhat - xs[t]
        du = ks[t] + torch.stack([kgain[t][i] @ dx[i] for i in range(bsz)]).mean(0)
        new.append(u + du)
        xhat = torch.stack([f(xhat[i], new[-1]) for i in range(bsz)]).detach()
    return {"new": new, "info": info}


def _psd(v: torch.Tensor) -> torch.Tensor:
    """The projection onto the PSD cone (negative eigenvalues set to 0)."""
    lam, vec = torch.linalg.eigh(0.5 * (v + v.T))
    return (vec * lam.clamp(min=0)) @ vec.T
