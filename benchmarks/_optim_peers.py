r"""Reference rows and optional peers of the optimizer-step benchmark (benchmarks/langevin_step.py).

Every row is a :class:`Row`: a ``step()`` callable that updates the shared parameters in place
from their fixed ``.grad``, and the size of the state it keeps. The references measure floors
of the step: ``torch.Tensor.normal_()`` alone on the parameters' 20M floats (the noise draw),
and a numba kernel of the noise-free step (heavy ball, what Langevin's BAOAB is at τ = 0),

.. math:: p' = p - h g,\qquad \theta \leftarrow \theta + \tfrac{h}{2}(1 + c)\,p',\qquad
          p \leftarrow c\,p',\qquad c = e^{-\gamma h},

one parallel pass that reads θ, p, g and writes θ, p (20 bytes per float32 parameter).

| symbol | code |
|---|---|
| h | ``lr`` |
| γ | ``gamma`` |
| c | ``c`` |
| g | ``p.grad`` |

The optional peers (each skipped with a note when its package is absent; ``pip install -e
.[peers]``, see setup.cfg) are posteriors' ``sgmcmc.baoa`` and ``sgmcmc.sghmc`` transforms
(``transform.update(state, batch, inplace=True)``) and devinterp's ``optim.SGLD``. posteriors
takes no precomputed gradient: its update differentiates the log posterior itself
(``torch.func.grad_and_value``), so its rows use the linear log posterior ⟨−g, θ⟩, whose gradient
is the fixed −g, and a separate row times that gradient pass alone.

Reference: B. Leimkuhler, C. Matthews, AMRX 2013 (BAOAB); T. Chen, E. Fox, C. Guestrin, ICML
2014 (SGHMC); M. Welling, Y. W. Teh, ICML 2011 (SGLD).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np
import torch


@dataclass
class Row:
    """One benchmark row: ``step()`` advances the parameters once; ``state()`` is the bytes of
    state the method keeps (None: it keeps none to speak of, e.g. a bare noise draw)."""

    label: str
    step: Callable[[], object]
    state: Callable[[], int] | None


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def normal_row(params: list[torch.Tensor]) -> Row:
    """``normal_()`` into one preallocated buffer per parameter: the noise draw alone."""
    buffers = [torch.empty_like(p) for p in params]

    def step() -> None:
        for b in buffers:
            b.normal_()

    return Row("torch.Tensor.normal_() on the same 20M floats", step, None)


@nb.njit(parallel=True, cache=True)
def _heavy_ball(theta: np.ndarray, p: np.ndarray, g: np.ndarray, h: float, c: float) -> None:
    a = 0.5 * h * (1.0 + c)
    for i in nb.prange(theta.shape[0]):
        pi = p[i] - h * g[i]
        theta[i] += a * pi
        p[i] = c * pi


def numba_row(params: list[torch.Tensor], *, lr: float, gamma: float) -> Row:
    """The noise-free step as one numba kernel per tensor (float32 arrays, in place)."""
    c = math.exp(-gamma * lr)
    views = [(p.detach().numpy(), np.zeros(p.numel(), np.float32), p.grad.numpy())
             for p in params]

    def step() -> None:
        for theta, p, g in views:
            _heavy_ball(theta, p, g, lr, c)

    return Row("numba fused update, no noise (heavy ball, plain kernel)", step,
               lambda: sum(v[1].nbytes for v in views))


def _missing(package: str, err: Exception) -> str:
    return f"skipped: {package} is not importable ({type(err).__name__}: {err})"


def posteriors_rows(params: list[torch.Tensor], *, lr: float, gamma: float,
                    temperature: float) -> tuple[list[Row], list[str]]:
    """posteriors' BAOA and SGHMC (σ = 1, so its friction α is γ) and its gradient pass alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # tensordict's, at import
            import posteriors
    except ImportError as err:
        return [], [_missing("posteriors", err)]
    from torch.func import grad_and_value

    grads = {f"p{i}": p.grad for i, p in enumerate(params)}

    def log_posterior(theta: dict[str, torch.Tensor], _batch: object) -> tuple[torch.Tensor, Any]:
        return -sum(torch.vdot(theta[k], grads[k]) for k in theta), torch.tensor([])

    rows = []
    for name, module in (("baoa", posteriors.sgmcmc.baoa), ("sghmc", posteriors.sgmcmc.sghmc)):
        transform = module.build(log_posterior, lr=lr, alpha=gamma, temperature=temperature)
        state = transform.init({f"p{i}": p for i, p in enumerate(params)})

        def step(transform: Any = transform, state: Any = state) -> None:
            transform.update(state, None, inplace=True)

        rows.append(Row(f"posteriors sgmcmc.{name} (inplace=True)", step,
                        lambda state=state: tensor_bytes(state.momenta.values())))
    pass_alone = grad_and_value(log_posterior, has_aux=True)
    theta = {f"p{i}": p for i, p in enumerate(params)}
    rows.append(Row("posteriors' gradient pass alone (in both rows above)",
                    lambda: pass_alone(theta, None), None))
    return rows, []


def devinterp_rows(params: list[torch.Tensor], *, lr: float) -> tuple[list[Row], list[str]]:
    """devinterp's SGLD (θ ← θ − (lr/2) nβ g + √lr N(0, 1), nβ = 1, no localization)."""
    try:
        from devinterp.optim import SGLD
    except ImportError as err:
        return [], [_missing("devinterp", err)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation and nβ = 1 warnings
        opt = SGLD(params, lr=lr)
    return [Row("devinterp optim.SGLD", opt.step,
                lambda: tensor_bytes(v for s in opt.state.values() for v in s.values()
                                     if isinstance(v, torch.Tensor)))], []
