"""``dynopt reproduce surfing``: latent recovery by surfing (Song, Fan & Lafferty, NeurIPS 2019).

Generators, realizable targets y = A·G_final(x*), and methods with the same gradient budget T
(one gradient of the batch of chains per step), each with two inner optimizers, gradient
descent (GD: OverdampedLangevin at τ = 0, Euler–Maruyama, step 0.5) and Adam (lr 0.05, the
inner optimizer the surfing paper's reviewers describe; moments carried across snapshots), all
through :func:`dynopt.surfing.surf`:

* **surfing**: over the K snapshots, N = T/K steps each;
* **surfing, ½ budget on final**: T/(2(K−1)) steps on each of the first K−1 snapshots and T/2
  on the final one (so that it converges there);
* **final network only**: T steps from the same x_0 (the paper's "vanilla Adam" baseline);
* **random restarts**: R independent runs of T/R steps on the final network, keeping the
  restart with the smallest final loss (the reviewers' compute-matched alternative).

Generators:

1. **Random expansive ReLU network, synthetic path** (the theory case): G(x) = ReLU(W₂ ReLU(W₁
   x)), 5 → 50 → 250, i.i.d. N(0, 1/n_i) weights (n_i = the layer's output size, as in
   Hand & Voroninski), no biases. The path is *synthetic*, not a training trajectory: the
   spherical interpolation θ(s) = cos(πs/2) θ_a + sin(πs/2) θ_b between two independent draws,
   so that every snapshot is itself an exactly Gaussian expansive network (the Hand–Voroninski
   setting); the final network is θ_b.
2. **Random expansive ReLU network, trained path**: the same random network θ_a actually
   trained (Adam, lr 10⁻³, batches of 64 latent draws, :data:`TRAIN_STEPS` steps) to reproduce
   the outputs of a second random network θ_b (student–teacher regression, mean squared error);
   snapshots evenly along the run from θ_a on. The final network is the trained student.
3. **VAE decoder** on scikit-learn digits (8×8, pixels / 16), latent dimension 4, decoder
   4 → 128 → 128 → 64 (ReLU, sigmoid output), trained with Adam; snapshots every 75 steps
   from the untrained decoder on (45 snapshots). Targets: x* = encoder means of held-out digits.

**Success** (defined before the runs): the relative residual ‖A G(x̂) − y‖ / ‖y‖ ≤ 10⁻², i.e.
x̂ reaches a global minimizer of the (realizable) loss up to 1 %. The median relative latent
error ‖x̂ − x*‖/‖x*‖ is reported alongside.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional

from .._files import json_text
from ..surfing import SnapshotRecorder, surf
from .report import (
    as_run,
    command,
    docs_path,
    duration,
    markdown_table,
    seed_count,
    update_section,
    write_results,
)

DESCRIPTION = "surfing vs GD / Adam / random restarts on the final network (random ReLU, VAE)"

THRESHOLD = 1e-2
LR = 0.5            # GD / surfing step (chosen on the final VAE decoder for plain GD)
ADAM_LR = 0.05
RESTARTS = 5
#: training steps of the random ReLU network's trained path
TRAIN_STEPS = 600
#: inner optimizers: name → (surf keyword arguments)
INNERS: dict[str, dict[str, Any]] = {"GD": {"lr": LR}, "Adam": {"lr": ADAM_LR, "inner": "adam"}}


def expansive_path(seed: int, n_snap: int, dims: tuple[int, ...] = (5, 50, 250)
                   ) -> list[nn.Module]:
    """Snapshots θ(s_k) = cos(πs_k/2) θ_a + sin(πs_k/2) θ_b of a bias-free ReLU network."""
    g = torch.Generator().manual_seed(seed)

    def draw() -> list[Tensor]:
        return [torch.randn(o, i, generator=g, dtype=torch.float64) / math.sqrt(o)
                for i, o in itertools.pairwise(dims)]

    wa, wb = draw(), draw()
    out = []
    for s in np.linspace(0.0, 1.0, n_snap):
        c, sn = math.cos(math.pi * s / 2), math.sin(math.pi * s / 2)
        layers: list[nn.Module] = []
        for a, b in zip(wa, wb, strict=True):
            lin = nn.Linear(a.shape[1], a.shape[0], bias=False).double()
            with torch.no_grad():
                lin.weight.copy_(c * a + sn * b)
            layers += [lin, nn.ReLU()]
        out.append(nn.Sequential(*layers))
    return out


def trained_path(seed: int, n_snap: int, dims: tuple[int, ...] = (5, 50, 250),
                 steps: int = TRAIN_STEPS) -> tuple[nn.Module, list[dict[str, Tensor]]]:
    """The random bias-free ReLU network θ_a of :func:`expansive_path` trained by Adam to match
    θ_b's outputs on N(0, I) latent draws; ``n_snap`` evenly spaced snapshots (θ_a first)."""
    nets = expansive_path(seed, 2, dims)
    student, teacher = nets[0], nets[1]
    g = torch.Generator().manual_seed(10_000 + seed)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    every = max(1, steps // (n_snap - 1))
    rec = SnapshotRecorder(student, every=every)
    rec.attach(opt)
    for _ in range(every * (n_snap - 1)):
        z = torch.randn(64, dims[0], generator=g, dtype=torch.float64)
        with torch.no_grad():
            target = teacher(z)
        loss = ((student(z) - target) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student, rec.snapshots


def train_vae(seed: int, steps_every: int, epochs: int, latent: int = 4
              ) -> tuple[nn.Module, nn.Module, list[dict[str, Tensor]], Tensor]:
    """A VAE on digits; returns (encoder, decoder, decoder snapshots, held-out images)."""
    from sklearn.datasets import load_digits

    data = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    train, test = data[perm[:1400]], data[perm[1400:]]
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 2 * latent))
    dec = nn.Sequential(nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                        nn.Linear(128, 64), nn.Sigmoid())
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    rec = SnapshotRecorder(dec, every=steps_every)
    rec.attach(opt)
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=g).split(64):
            xb = train[idx]
            h = enc(xb)
            mu, logvar = h[:, :latent], h[:, latent:]
            z = mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()
            recon = functional.binary_cross_entropy(dec(z), xb, reduction="sum") / len(xb)
            kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum() / len(xb)
            opt.zero_grad()
            (recon + kl).backward()
            opt.step()
    return enc, dec, rec.snapshots, test


def evaluate(snaps: list[Any], model: nn.Module | None, x_true: Tensor, a: Tensor | None,
             steps_per_snapshot: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Residuals and latent errors of every method × inner optimizer on y = A G_final(x*)."""
    final = snaps[-1]

    def gen(x: Tensor) -> Tensor:
        out = final(x) if model is None else functional_call(model, final, (x,))
        return out.reshape(x.shape[0], -1)

    with torch.no_grad():
        y = gen(x_true)
        if a is not None:
            y = y @ a.T
    n, d = x_true.shape
    budget = steps_per_snapshot * len(snaps)
    g = torch.Generator().manual_seed(1000 + seed)
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64).to(x_true.dtype)
    xr = torch.randn(n * RESTARTS, d, generator=g, dtype=torch.float64).to(x_true.dtype)
    xr[:n] = x0
    yr = y.repeat(RESTARTS, 1)
    k = len(snaps)
    half = [budget // (2 * (k - 1))] * (k - 1) + [budget // 2]
    out: dict[str, Tensor] = {}
    for inner, ikw in INNERS.items():
        kw = dict(model=model, A=a, **ikw)
        out[f"surfing ({inner})"] = surf(snaps, y, x0=x0, steps_per_snapshot=steps_per_snapshot,
                                         **kw).x
        out[f"surfing, ½ on final ({inner})"] = surf(snaps, y, x0=x0, steps_per_snapshot=half,
                                                     **kw).x
        out[f"{inner} on final"] = surf([final], y, x0=x0, steps_per_snapshot=budget, **kw).x
        rr = surf([final], yr, x0=xr, steps_per_snapshot=budget // RESTARTS, **kw)
        best = torch.as_tensor(rr.loss[-1]).reshape(RESTARTS, n).argmin(0)
        out[f"{RESTARTS} restarts ({inner})"] = rr.x.reshape(RESTARTS, n, d)[best,
                                                                             torch.arange(n)]
    res = {}
    with torch.no_grad():
        for name, x in out.items():
            fit = gen(x) if a is None else gen(x) @ a.T
            resid = ((fit - y).norm(dim=1) / y.norm(dim=1)).double().numpy()
            lat = ((x - x_true).norm(dim=1) / x_true.norm(dim=1)).double().numpy()
            res[name] = {"residual": resid, "latent_error": lat}
    return res


def _plot(pooled: dict[str, dict[str, dict[str, list[float]]]], path: Path) -> None:
    """One panel per setting: the fraction of targets whose relative residual is at most r,
    against r (log scale), one line per method; the success threshold dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(pooled)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    FigureCanvasAgg(fig)
    for k, (setting, per) in enumerate(pooled.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        for method, v in per.items():
            r = np.sort(np.maximum(np.asarray(v["residual"]), 1e-12))
            ax.step(r, np.arange(1, r.size + 1) / r.size, where="post", label=method)
        ax.axvline(THRESHOLD, color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_title(setting, fontsize=8)
        ax.set_xlabel("relative residual r")
        ax.set_ylabel("fraction of targets ≤ r")
        if k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def run(args: Any) -> int:
    quick = bool(args.quick)
    n_seeds = seed_count(args, 1 if quick else 2)
    n_targets = 50 if quick else 100
    torch.set_num_threads(1)       # tiny tensors: one thread is fastest
    t0 = time.perf_counter()
    pooled: dict[str, dict[str, dict[str, list[float]]]] = {}

    def add(setting: str, res: dict[str, dict[str, np.ndarray]]) -> None:
        for method, v in res.items():
            slot = pooled.setdefault(setting, {}).setdefault(
                method, {"residual": [], "latent_error": []})
            slot["residual"] += v["residual"].tolist()
            slot["latent_error"] += v["latent_error"].tolist()
        line = ", ".join(f"{m}: {100 * np.mean(np.asarray(v['residual']) <= THRESHOLD):.0f}%"
                         for m, v in res.items())
        print(f"{setting}: {line}", flush=True)

    n_steps_rand = 50 if quick else 100
    n_steps_vae = 20 if quick else 50
    n_vae = 0
    for seed in range(n_seeds):
        snaps = expansive_path(seed, 20)
        g = torch.Generator().manual_seed(seed)
        x_true = torch.randn(n_targets, 5, generator=g, dtype=torch.float64)
        synth = "random ReLU 5→50→250 (synthetic path)"
        add(f"{synth}, exact", evaluate(snaps, None, x_true, None, n_steps_rand, seed))
        a = torch.randn(20, 250, generator=g, dtype=torch.float64) / math.sqrt(20)
        add(f"{synth}, CS m = 20", evaluate(snaps, None, x_true, a, n_steps_rand, seed))
        student, tsnaps = trained_path(seed, 20, steps=TRAIN_STEPS // (4 if quick else 1))
        add("trained ReLU 5→50→250, exact", evaluate(tsnaps, student, x_true, None,
                                                     n_steps_rand, seed))
        add("trained ReLU 5→50→250, CS m = 20", evaluate(tsnaps, student, x_true, a,
                                                         n_steps_rand, seed))
        enc, dec, vsnaps, test = train_vae(seed, steps_every=75, epochs=60 if quick else 150)
        with torch.no_grad():
            xv = enc(test[:n_targets])[:, :4]
        n_vae = len(vsnaps)
        add("VAE digits, exact", evaluate(vsnaps, dec, xv, None, n_steps_vae, seed))
        for m in (20, 10):
            am = torch.randn(m, 64, generator=g) / math.sqrt(m)
            add(f"VAE digits, CS m = {m}", evaluate(vsnaps, dec, xv, am, n_steps_vae, seed))
    seconds = time.perf_counter() - t0
    methods = list(next(iter(pooled.values())))
    rows = []
    for setting, per in pooled.items():
        row: list[Any] = [setting]
        for m in methods:
            r = np.asarray(per[m]["residual"])
            lat = np.median(per[m]["latent_error"])
            row.append(f"{100 * np.mean(r <= THRESHOLD):.0f} ({lat:.2g})")
        rows.append(row)
    n_total = len(next(iter(next(iter(pooled.values())).values()))["residual"])
    table = markdown_table(["setting", *methods], rows)
    out = Path(args.out) / "surfing"
    out.mkdir(parents=True, exist_ok=True)
    write_results("surfing", {out / "results.json": json_text(pooled, default=None, indent=None)})
    _plot(pooled, out / "residual_cdf.png")
    cmd = command("surfing", args)
    body = (f"Measured with `{cmd} --update-docs` ({n_seeds} seed(s), {n_total} targets per "
            f"setting, {duration(seconds)} on 2 shared CPU cores); raw numbers in "
            f"`<out>/surfing/results.json`, the residuals' distributions in "
            f"`<out>/surfing/residual_cdf.png`.\n\nCells: success rate in % (success: relative "
            f"residual ‖A G(x̂) − y‖/‖y‖ ≤ {THRESHOLD:g}) and, in parentheses, the median "
            f"relative latent error ‖x̂ − x*‖/‖x*‖. Equal gradient budget per target: random "
            f"ReLU (both paths) 20 snapshots × {n_steps_rand} steps, VAE {n_vae} snapshots × "
            f"{n_steps_vae} "
            f"steps; GD step {LR}, Adam lr {ADAM_LR} (inner optimizer of surfing, of the "
            f"final-network runs and of the restarts, as named), {RESTARTS} restarts of "
            f"budget/{RESTARTS} steps (the restart with the lowest final loss is kept).\n\n"
            + table + "\n")
    print(as_run(body, args.update_docs))
    if args.update_docs:
        update_section(docs_path(), "surfing", body)
        print("updated docs/reproductions.md section 'surfing'")
    return 0
