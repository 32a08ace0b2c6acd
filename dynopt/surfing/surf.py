r"""Surfing: continuation over network snapshots (Song, Fan & Lafferty, NeurIPS 2019).

To invert a trained generator G_θ (find x with A·G_θ(x) ≈ y), surfing follows the training
trajectory θ_0 (random), θ_1, …, θ_K (trained): it minimizes the loss of the benign random
network first and warm-starts each next snapshot from the previous optimum. As dynamics this is
the non-autonomous gradient flow

.. math::

    \dot x = -\nabla_x U(x, s),\qquad
    U(x, s) = \tfrac12\lVert A\,G_{\theta(s)}(x) - y\rVert^2 ,

with θ(s) piecewise constant on the snapshots, integrated here by dynopt's own schemes through
the single-step API: ``dynamics="gradient-flow"`` is :class:`~dynopt.systems.OverdampedLangevin`
at temperature 0 with :class:`~dynopt.integrators.EulerMaruyama` (x ← x − lr ∇U: plain gradient
descent), ``"overdamped-langevin"`` adds a temperature schedule τ(s) (annealed Langevin),
``"langevin"`` is :class:`~dynopt.systems.Langevin` with friction γ and BAOAB (momentum carried
across snapshots; γ = τ = 0 is Hamiltonian dynamics, leapfrog). ``inner="adam"`` replaces the
dynamics by ``torch.optim.Adam`` on the codes (the surfing paper's inner optimizer, per its
reviewers; each chain's update depends only on its own gradient), with its moment estimates
carried across snapshots (our choice: the paper's handling is unknown to us); Adam has no
Hamiltonian, so H is U there.

Energy is not conserved when θ switches: the accumulated **work**

.. math:: W = \sum_k \big[U(x_k, s_{k+1}) - U(x_k, s_k)\big]

(evaluated at the switching configurations) is reported, and
``H(end) − H(start) − W`` is what the dynamics itself changed: zero up to O(h²) for Hamiltonian
dynamics, ≤ 0 (dissipation) for a gradient flow with a small step.

| symbol | code |
|---|---|
| θ_k | ``snapshots[k]`` |
| y, A | ``y``, ``A`` |
| x_0 | ``x0`` |
| N_k steps of size h | ``steps_per_snapshot``, ``lr`` |
| τ(s), s = k/(K−1) | ``temperature`` (float or callable of s) |
| γ | ``gamma`` |
| inner optimizer | ``inner`` (``"dynamics"`` or ``"adam"``; Adam's (β₁, β₂): ``betas``) |
| W | ``SurfResult.work`` |
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._modes import eval_mode
from .._validation import (
    check_choice,
    check_int,
    check_nonnegative,
    check_positive,
    check_probability,
)
from ..errors import DivergenceError
from ..integrators import BAOAB, EulerMaruyama
from ..integrators.base import AbstractIntegrator
from ..stepping import State, run
from ..systems import Langevin, OverdampedLangevin
from ..systems.base import AbstractSystem
from .potential import generator_fn, reconstruction_potential

__all__ = ["SurfResult", "surf"]

DYNAMICS = ("gradient-flow", "overdamped-langevin", "langevin")
INNER = ("dynamics", "adam")
Snapshot = nn.Module | Mapping[str, Tensor]


@dataclass
class SurfResult:
    """The outcome of :func:`surf`.

    Attributes:
        x: The final latent codes, ``(n, d)``, on the snapshots' device.
        loss: ``(K, n)``: U_k at the end of snapshot k.
        norm: ``(K, n)``: ‖x‖ at the end of snapshot k.
        steps: ``(K,)``: steps taken on snapshot k.
        work: ``(n,)``: accumulated work W.
        energy_start: ``(n,)``: H at the start (U_0(x_0) + kinetic energy).
        energy_end: ``(n,)``: H at the end (U_{K−1} + kinetic energy).
        state: The final :class:`~dynopt.State` (to continue the run).
    """

    x: Tensor
    loss: np.ndarray
    norm: np.ndarray
    steps: np.ndarray
    work: np.ndarray
    energy_start: np.ndarray
    energy_end: np.ndarray
    state: State

    @property
    def dynamics_energy_change(self) -> np.ndarray:
        """``H(end) − H(start) − W``: the energy change caused by the dynamics alone."""
        return self.energy_end - self.energy_start - self.work

    @property
    def log(self) -> list[dict[str, Any]]:
        """Per-snapshot records: loss and ‖x‖ at its end (per chain) and the steps taken."""
        return [{"snapshot": k, "loss": self.loss[k], "norm": self.norm[k],
                 "steps": int(self.steps[k])} for k in range(len(self.steps))]


def _snapshots_in_eval_mode(fn: Callable[..., SurfResult]) -> Callable[..., SurfResult]:
    @functools.wraps(fn)
    def run(snapshots: Any, *args: Any, **kwargs: Any) -> SurfResult:
        snaps = [snapshots] if isinstance(snapshots, nn.Module) else list(snapshots)
        mods = [s for s in snaps if isinstance(s, nn.Module)]
        if isinstance(kwargs.get("model"), nn.Module):
            mods.append(kwargs["model"])
        with eval_mode(mods):
            return fn(snaps, *args, **kwargs)
    return run


@_snapshots_in_eval_mode
def surf(
    snapshots: Sequence[Snapshot],
    y: Any,
    *,
    model: nn.Module | None = None,
    A: Any = None,
    x0: Any = None,
    latent_dim: int | None = None,
    steps_per_snapshot: int | Sequence[int] = 100,
    lr: float = 0.01,
    dynamics: str = "gradient-flow",
    temperature: float | Callable[[float], float] | None = None,
    gamma: float = 1.0,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    inner: str = "dynamics",
    betas: tuple[float, float] = (0.9, 0.999),
) -> SurfResult:
    """Recover latent codes by surfing the snapshots θ_0 … θ_{K−1} (see the module docstring).

    Args:
        snapshots: The networks along training, untrained first: modules, or state dicts
            together with ``model`` (evaluated with ``torch.func.functional_call``).
        y: Targets, ``(m,)`` or ``(n, m)``: one chain per row (a single target is shared by
            all chains, e.g. for random restarts).
        model: The module to evaluate state-dict snapshots with.
        A: Measurement matrix ``(m, n_out)`` (compressed sensing y = A·G(x*)); None for A = I.
        x0: Initial codes ``(d,)`` or ``(n, d)``; default N(0, I) draws from ``seed``.
        latent_dim: d, needed only when ``x0`` is None and the first module is not an
            ``nn.Linear`` network.
        steps_per_snapshot: Steps N_k on each snapshot (an int or one per snapshot).
        lr: Step size h.
        dynamics: ``"gradient-flow"``, ``"overdamped-langevin"`` or ``"langevin"``.
        temperature: τ ≥ 0 or a schedule ``τ(s)`` with s = k/(K−1) ∈ [0, 1] (Langevin
            dynamics only; default 0). A single snapshot is the trained network: s = 1.
        gamma: Friction γ of ``"langevin"``.
        seed: Seed of the initial codes (drawn on the CPU, so the same on every device) and of
            the noise.
        dtype: Tensor dtype of the chains (default: the snapshots' parameter dtype). The run
            is on the snapshots' device (all their tensors must be on one); ``y``, ``A`` and
            ``x0`` are copied there.
        inner: ``"dynamics"`` (integrate ``dynamics`` with step ``lr``) or ``"adam"``
            (``torch.optim.Adam(lr, betas)`` on the codes, state carried across snapshots;
            needs ``dynamics="gradient-flow"``).
        betas: Adam's (β₁, β₂), each in [0, 1).

    Returns:
        :class:`SurfResult`.

    Raises:
        ValueError: For an empty snapshot list, snapshots on several devices, a snapshot that
            does not fit (a state dict's key or shape, an output size other than the first
            snapshot's) or holds NaN/inf, mismatched shapes of ``y``, ``A`` or ``x0``, or bad
            hyperparameters (naming them).
        DivergenceError: If the codes become non-finite (names the snapshot and the step on
            it, ``DivergenceError.step``).
    """
    snaps = list(snapshots) if not isinstance(snapshots, nn.Module) else [snapshots]
    if not snaps:
        raise ValueError("snapshots is empty: give at least one network (module or state dict)")
    kinds = {isinstance(s, nn.Module) for s in snaps}
    if len(kinds) > 1 or not all(isinstance(s, nn.Module | Mapping) for s in snaps):
        raise TypeError("snapshots must all be nn.Modules or all be state dicts")
    if not isinstance(snaps[0], nn.Module) and model is None:
        raise ValueError("state-dict snapshots need model= (the module to load them into)")
    check_choice("dynamics", dynamics, DYNAMICS)
    check_choice("inner", inner, INNER)
    if inner == "adam":
        if dynamics != "gradient-flow":
            raise ValueError(f"inner='adam' replaces the dynamics: use dynamics='gradient-flow' "
                             f"(got dynamics={dynamics!r})")
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        betas = (check_probability("betas[0]", betas[0], open_right=True),
                 check_probability("betas[1]", betas[1], open_right=True))
    lr = check_positive("lr", lr)
    gamma = check_nonnegative("gamma", gamma)
    seed = None if seed is None else check_int("seed", seed, minimum=0)
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64 (the chains' dtype), "
                         f"got {dtype!r}")
    n_snap = len(snaps)
    steps = _steps(steps_per_snapshot, n_snap)
    temp = _temperature(temperature, dynamics, n_snap)
    net_dtype = _snapshot_dtype(snaps, model)
    device = _snapshot_device(snaps)
    _refuse_nonfinite(snaps)
    if dtype is None:
        dtype = net_dtype
    gens = [generator_fn(s, model) for s in snaps]

    gen_t = torch.Generator().manual_seed(0 if seed is None else int(seed))
    yt = torch.as_tensor(y, dtype=dtype).detach().to(device)
    if yt.ndim not in (1, 2):
        raise ValueError(f"y must have shape (m,) or (n, m), got {tuple(yt.shape)}")
    x = _initial_codes(x0, latent_dim, snaps[0], yt, dtype, gen_t).to(device)
    n, d = x.shape
    if yt.ndim == 2 and yt.shape[0] != n:
        raise ValueError(f"y has {yt.shape[0]} rows (targets) but x0 has {n} rows (chains)")
    n_out = _output_size(gens, x[:1].to(net_dtype))
    at = None
    if A is not None:
        at = torch.as_tensor(A, dtype=dtype).detach().to(device)
        if at.ndim != 2 or at.shape[1] != n_out:
            raise ValueError(f"A must have shape (m, {n_out}) (the generator outputs {n_out} "
                             f"values), got {tuple(at.shape)}")
        if not bool(torch.isfinite(at).all()):
            raise ValueError("A must be finite")
    m = n_out if at is None else at.shape[0]
    if yt.shape[-1] != m:
        raise ValueError(f"y has {yt.shape[-1]} entries per target but A·G(x) has {m}")
    if not bool(torch.isfinite(yt).all()):
        raise ValueError("y must be finite")
    y2 = yt.expand(n, m) if yt.ndim == 1 else yt
    pots = [reconstruction_potential(g, y2, at, d, f"surfing snapshot {k}", net_dtype)
            for k, g in enumerate(gens)]

    integ: AbstractIntegrator = BAOAB() if dynamics == "langevin" else EulerMaruyama()

    def system(k: int) -> AbstractSystem:
        if dynamics == "langevin":
            return Langevin(pots[k], gamma=gamma, temperature=temp[k])
        return OverdampedLangevin(pots[k], temperature=temp[k])

    sys0 = system(0)
    state = integ.init(sys0, x.double().cpu().numpy(), backend="torch",
                       seed=0 if seed is None else int(seed), dtype=dtype, device=device,
                       n_chains=n)
    loss = np.zeros((n_snap, n))
    norm = np.zeros((n_snap, n))
    work = np.zeros(n)
    with torch.no_grad():
        energy_start = _energy(sys0, state)
    adam = None
    if inner == "adam":
        xq = state.q.detach().clone().requires_grad_(True)
        adam = torch.optim.Adam([xq], lr=lr, betas=betas)
    for k in range(n_snap):
        sys_k = system(k)
        if k > 0:
            with torch.no_grad():
                work += (pots[k].value(state.q)
                         - pots[k - 1].value(state.q)).double().cpu().numpy()
        if adam is None:
            state = _advance(sys_k, integ, state, steps[k], lr, k)
        else:
            _adam_steps(adam, pots[k], state, steps[k], k)
        with torch.no_grad():
            loss[k] = pots[k].value(state.q).double().cpu().numpy()
            norm[k] = state.q.norm(dim=1).double().cpu().numpy()
    with torch.no_grad():
        energy_end = _energy(system(n_snap - 1), state)
    return SurfResult(state.q.clone(), loss, norm, np.asarray(steps), work, energy_start,
                      energy_end, state)


def _advance(system: AbstractSystem, integ: AbstractIntegrator, state: State, n_steps: int,
             h: float, k: int) -> State:
    """``n_steps`` steps on snapshot k; a divergence is reported with the snapshot and the exact
    step (the backend finds it)."""
    if n_steps == 0:
        return state
    try:
        return run(system, integ, state, n_steps=n_steps, h=h)
    except DivergenceError as err:
        step = err.step - state.step     # the run's step count -> the step on snapshot k
        raise _diverged(k, step, n_steps, err.step, err.chain, "") from err


def _adam_steps(adam: torch.optim.Adam, pot: Any, state: State, n_steps: int, k: int) -> None:
    """``n_steps`` Adam steps on U_k, written back into ``state.q`` (in place). The codes are
    checked after each step (a non-finite gradient makes them non-finite too): checking only
    the gradient missed codes that overflowed at a snapshot's last step, or where the
    gradient vanishes (a saturated tanh)."""
    xq = adam.param_groups[0]["params"][0]
    for i in range(n_steps):
        with torch.no_grad():
            g = pot.grad(xq.detach())
        xq.grad = g.to(xq.dtype)
        adam.step()
        bad = ~torch.isfinite(xq.detach()).all(1)
        if bool(bad.any()):
            chain = int(bad.nonzero()[0, 0])
            raise _diverged(k, i + 1, n_steps, state.step + i + 1, chain, " (inner='adam')")
    with torch.no_grad():
        state.q.copy_(xq.detach())
    state.step += n_steps


def _diverged(k: int, step: int, n_steps: int, overall: int, chain: int, how: str
              ) -> DivergenceError:
    """The one divergence report of both inner loops: ``step`` (also ``DivergenceError.step``)
    counts the steps on snapshot k, so ``steps_per_snapshot[k] = step - 1`` stops just before
    it; ``overall`` counts the whole run's."""
    return DivergenceError(f"surfing{how} diverged on snapshot {k} at step {step} of its "
                           f"{n_steps} (step {overall} of the run; chain {chain}); lower lr",
                           step=step, chain=chain)


def _output_size(gens: Sequence[Callable[[Tensor], Tensor]], x1: Tensor) -> int:
    """The generator's output size, the same for every snapshot (evaluated on one code): a
    snapshot with another (a broadcastable size 1 ran silently against the targets) or one
    that cannot take the codes is named."""
    sizes = []
    for k, g in enumerate(gens):
        try:
            with torch.no_grad():
                sizes.append(int(g(x1).shape[1]))
        except RuntimeError as err:
            raise ValueError(f"snapshot {k} cannot be evaluated on x0 with {x1.shape[1]} latent "
                             f"coordinates per chain ({err})") from None
        if sizes[k] != sizes[0]:
            raise ValueError(f"snapshot {k} outputs {sizes[k]} values per code but snapshot 0 "
                             f"outputs {sizes[0]}: every snapshot must map a code to the same "
                             "number of outputs")
    return sizes[0]


def _refuse_nonfinite(snaps: Sequence[Any]) -> None:
    """ValueError naming the first snapshot tensor holding NaN/inf: its potential is NaN, and
    a snapshot given no steps passed it on silently into the loss and the work."""
    for k, s in enumerate(snaps):
        named = list(s.named_parameters()) + list(s.named_buffers()) \
            if isinstance(s, nn.Module) else list(s.items())
        ts = [t for _, t in named if isinstance(t, Tensor) and t.is_floating_point()]
        if not ts or bool(torch.stack([torch.isfinite(t).all() for t in ts]).all()):
            continue      # (one host synchronisation per snapshot)
        for name, t in named:
            if isinstance(t, Tensor) and t.is_floating_point() and not bool(
                    torch.isfinite(t).all()):
                raise ValueError(f"snapshot {k} holds non-finite values in {name!r}: a "
                                 "snapshot must be a finite network")


def _energy(system: AbstractSystem, state: State) -> np.ndarray:
    h = system.energy(state.q, state.p if system.has_momentum else None)
    return h.double().cpu().numpy()


def _snapshot_dtype(snaps: Sequence[Any], model: nn.Module | None) -> torch.dtype:
    """The one floating dtype of the snapshots' tensors (float64 if they have none); state
    dicts must hold exactly the model's keys, shaped as the model's (a missing or misspelt key
    silently ran on the model's own tensor, and a bias of shape (1,) broadcast, functional_call
    being lenient)."""
    dtypes: set[torch.dtype] = set()
    own = model.state_dict() if model is not None else {}
    want = set(own)
    for k, s in enumerate(snaps):
        if isinstance(s, nn.Module):
            tensors = [*s.parameters(), *s.buffers()]
        else:
            keys = set(s)
            missing, extra = sorted(want - keys), sorted(keys - want)
            if missing or extra:
                raise ValueError(f"snapshot {k} does not fit model: missing keys {missing[:5]}, "
                                 f"unexpected keys {extra[:5]} (a state dict of model itself, "
                                 "e.g. copy.deepcopy(model.state_dict()), has exactly its keys)")
            for key in sorted(keys):
                t, ref = s[key], own[key]
                if isinstance(t, Tensor) and isinstance(ref, Tensor) and t.shape != ref.shape:
                    raise ValueError(f"snapshot {k} does not fit model: {key!r} has shape "
                                     f"{tuple(t.shape)} but the model's has {tuple(ref.shape)}")
            tensors = [t for t in s.values() if isinstance(t, Tensor)]
        dtypes |= {t.dtype for t in tensors if t.is_floating_point()}
    if len(dtypes) > 1:
        raise ValueError(f"the snapshots mix dtypes {sorted(map(str, dtypes))}: give them one")
    return dtypes.pop() if dtypes else torch.float64


def _snapshot_device(snaps: Sequence[Any]) -> torch.device:
    """The one device of the snapshots' tensors (the CPU if they have none), where the run goes."""
    devices: set[torch.device] = set()
    for s in snaps:
        tensors = [*s.parameters(), *s.buffers()] if isinstance(s, nn.Module) else [
            t for t in s.values() if isinstance(t, Tensor)]
        devices |= {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"the snapshots' tensors are on several devices "
                         f"{sorted(map(str, devices))}: surf runs on the snapshots' device, move "
                         "them all to one (e.g. snapshot.to('cuda'))")
    return devices.pop() if devices else torch.device("cpu")


def _steps(spec: int | Sequence[int], n_snap: int) -> list[int]:
    if not isinstance(spec, Sequence | np.ndarray | torch.Tensor) or isinstance(spec, str) or (
            getattr(spec, "ndim", 1) == 0):
        return [check_int("steps_per_snapshot", spec, minimum=0)] * n_snap
    steps = [check_int(f"steps_per_snapshot[{i}]", s, minimum=0) for i, s in enumerate(spec)]
    if len(steps) != n_snap:
        raise ValueError(f"steps_per_snapshot has {len(steps)} entries but there are {n_snap} "
                         "snapshots")
    return steps


def _temperature(spec: float | Callable[[float], float] | None, dynamics: str, n_snap: int
                 ) -> list[float]:
    if dynamics == "gradient-flow":
        if spec not in (None, 0, 0.0):
            raise ValueError("temperature must be None for dynamics='gradient-flow' (use "
                             "dynamics='overdamped-langevin' for a temperature)")
        return [0.0] * n_snap
    if spec is None:
        return [0.0] * n_snap
    ss = [k / (n_snap - 1) if n_snap > 1 else 1.0 for k in range(n_snap)]
    if callable(spec):
        return [check_nonnegative(f"temperature(s={s:g})", spec(s)) for s in ss]
    return [check_nonnegative("temperature", spec)] * n_snap


def _initial_codes(x0: Any, latent_dim: int | None, first: Snapshot, y: Tensor,
                   dtype: torch.dtype, gen: torch.Generator) -> Tensor:
    n = y.shape[0] if y.ndim == 2 else 1
    if x0 is None:
        d = latent_dim
        if d is None:
            lin = next((m for m in first.modules() if isinstance(m, nn.Linear)), None) \
                if isinstance(first, nn.Module) else None
            if lin is None:
                raise ValueError("give x0 or latent_dim (the latent dimension could not be "
                                 "read from the first snapshot)")
            d = int(lin.in_features)
        d = check_int("latent_dim", d, minimum=1)
        return torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)
    x = torch.as_tensor(x0, dtype=dtype).detach().clone()
    if x.ndim == 1:
        x = x.unsqueeze(0).expand(n, -1).clone()
    if x.ndim != 2:
        raise ValueError(f"x0 must have shape (d,) or (n, d), got {tuple(x.shape)}")
    if latent_dim is not None and x.shape[1] != latent_dim:
        raise ValueError(f"x0 has {x.shape[1]} latent coordinates but latent_dim={latent_dim}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x0 must be finite")
    return x
