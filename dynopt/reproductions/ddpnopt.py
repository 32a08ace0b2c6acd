"""``dynopt reproduce ddpnopt``: DDPNOpt vs its base optimizers (Liu, Chen & Theodorou, ICLR 2021).

1. **Learning-rate sweep** (the paper's Fig. 4a claim: DDPNOpt is at least as good as the base
   optimizer it adapts, the gain growing with the learning rate; Fig. 4b: faster convergence).
   scikit-learn DIGITS and WINE, a fully connected tanh network with 5 layers of width 32, each
   base (SGD, SGD with momentum 0.9, RMSprop, Adam) against DDPNOpt with the same base and
   identical hyperparameters, paired runs (same split, initialization and batch order). Per
   epoch: test accuracy and the full training-set loss; reported as paired differences
   DDPNOpt − base (mean ± standard error over seeds) at epochs 1, 2 and the last, and plotted
   against the epoch for each learning rate.
2. **Ablation** of ε_Vxx at the largest learning rate of SGD and Adam: off, 0, Algorithm 3's
   placement (V_xx ← V_xx + εI, propagated) with several ε, Tassa's placement (inside Q_ux).
3. **Vanishing gradients** (the paper's Fig. 6): deep sigmoid networks on DIGITS with the
   Max-Mahalanobis-center (MMC) loss, a depth scan; SGD, SGD-VGR (SGD with Pascanu et al.'s
   vanishing-gradient regularizer), EKFAC vs DDPNOpt (SGD base) with the terminal Hessian I,
   Gauss–Newton and second-order expansion; test accuracy, training loss, per-layer update norms.

The paper's appendix values (ε_Vxx, the learning-rate grids, the tuned momentum, depth and width
of the vanishing-gradient network, the VGR weight) are unknown to us; every value below is ours.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._files import json_text
from ..data import Split, batches, load_digits_split, load_wine_split
from ..errors import DivergenceError
from ..optim import DDPNOpt
from ..training import evaluate, fit, loss_function, mlp
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

DESCRIPTION = ("DDPNOpt vs its base optimizers (per-epoch paired differences over an lr sweep on "
               "digits and wine; ε_Vxx ablation; vanishing gradients with a depth scan)")

#: (batch size, epochs, quick epochs)
DATASETS = {"digits": (32, 6, 2), "wine": (8, 10, 2)}
#: the bases: DDPNOpt's ``base`` and extra hyperparameters ("sgdm": momentum 0.9, our choice;
#: the paper's "tuned momentum" value is unknown)
BASES: dict[str, dict[str, Any]] = {"sgd": {"base": "sgd"},
                                    "sgdm": {"base": "sgd", "momentum": 0.9},
                                    "rmsprop": {"base": "rmsprop"}, "adam": {"base": "adam"}}
#: learning-rate grids per base (SGD with momentum 0.9: the same effective steps lr/(1 − μ) as
#: the SGD grid)
LRS = {"sgd": [0.1, 0.3, 1.0], "sgdm": [0.01, 0.03, 0.1], "rmsprop": [1e-3, 1e-2, 3e-2],
       "adam": [1e-3, 1e-2, 3e-2]}
QUICK_LRS = {k: v[-1:] for k, v in LRS.items()}
#: the DDPNOpt settings of the sweep (the defaults; ε_Vxx = 0: see the ablation)
DDP_SETTINGS: dict[str, Any] = {"terminal_hessian": "cross-entropy", "costate": "bellman",
                                "feedback_curvature": "batch", "eps_placement": "vxx",
                                "vxx_reg": 0.0}


def load(name: str, seed: int) -> Split:
    return load_digits_split(seed=seed) if name == "digits" else load_wine_split(seed=seed)


def network(split: Split, seed: int, *, depth: int = 5, width: int = 32,
            activation: type[nn.Module] = nn.Tanh, n_out: int | None = None) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp(split.n_features, n_out or split.n_classes, (width,) * (depth - 1), activation)


def run_one(dataset: str, base: str, lr: float, seed: int, epochs: int, feedback: bool,
            **ddp: Any) -> dict[str, list[float]]:
    """Per-epoch test accuracy and full training-set loss of one run (same split,
    initialization and batch order for every variant). A diverged run has NaN from the epoch
    it diverged on."""
    split = load(dataset, seed)
    model = network(split, seed)
    opt = DDPNOpt(model, lr=lr, feedback=feedback, seed=seed, **(BASES[base] | ddp))
    loss_fn = loss_function(split)
    train_loss: list[float] = []

    def record(epoch: int, hist: Any) -> None:
        train_loss.append(evaluate(model, split.x_train, split.y_train, loss_fn)[0])

    acc: list[float] = []
    try:
        hist = fit(model, opt, split, epochs=epochs, batch_size=DATASETS[dataset][0],
                   seed=seed, eval_every=1, callback=record)
        acc = list(hist.test_accuracy)
    except (DivergenceError, FloatingPointError):
        acc = [float("nan")] * epochs
    nan = float("nan")
    pad = train_loss + [nan] * (len(acc) - len(train_loss))
    acc = [a if math.isfinite(v) else nan for a, v in zip(acc, pad, strict=True)]
    return {"acc": acc + [nan] * (epochs - len(acc)),
            "train_loss": [v if math.isfinite(v) else nan for v in train_loss]
            + [nan] * (epochs - len(train_loss))}


def paired(base: list[float], ddp: list[float]) -> tuple[float, float, int]:
    """Mean and standard error (sample SD/√n) of the paired differences ddp − base over the
    seeds where both are finite, and that n."""
    d = np.asarray(ddp, dtype=float) - np.asarray(base, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan"), 0
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), se, int(d.size)


def _mean_se(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan"), float("nan")
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
    return float(a.mean()), se


def _fmt(m: float, se: float, scale: float = 100.0, digits: int = 1) -> str:
    if not math.isfinite(m):
        return "diverged"
    return (f"{scale * m:+.{digits}f} ± {scale * se:.{digits}f}" if math.isfinite(se)
            else f"{scale * m:+.{digits}f}")


def _acc(m: float, se: float) -> str:
    return _fmt(m, se).lstrip("+")


def paired_rows(runs: list[dict[str, Any]], epochs: int) -> list[list[Any]]:
    """Table rows: per (dataset, base, lr), the paired differences of test accuracy (points)
    and training loss at epochs 1, 2 and the last, the final accuracies and win/tie/loss."""
    rows = []
    marks = sorted({1, min(2, epochs), epochs})
    for r in runs:
        off, on = r["base"], r["ddpnopt"]
        row: list[Any] = [r["dataset"], r["base_name"], r["lr"]]
        for e in marks:
            row.append(_fmt(*paired([a["acc"][e - 1] for a in off],
                                    [a["acc"][e - 1] for a in on])[:2]))
        for e in marks:
            row.append(_fmt(*paired([a["train_loss"][e - 1] for a in off],
                                    [a["train_loss"][e - 1] for a in on])[:2], 1.0, 3))
        fa = [a["acc"][-1] for a in off]
        fb = [a["acc"][-1] for a in on]
        d = np.asarray(fb) - np.asarray(fa)
        row += [_acc(*_mean_se(fa)), _acc(*_mean_se(fb)),
                f"{int((d > 1e-9).sum())}/{int((np.abs(d) <= 1e-9).sum())}/"
                f"{int((d < -1e-9).sum())}",
                sum(not math.isfinite(a["acc"][-1]) for a in off + on)]
        rows.append(row)
    return rows


def paired_header(epochs: int) -> list[str]:
    marks = sorted({1, min(2, epochs), epochs})
    return (["data", "base", "lr"] + [f"Δacc ep {e} (pts)" for e in marks]
            + [f"Δloss ep {e}" for e in marks]
            + [f"base acc ep {epochs} %", f"DDPNOpt acc ep {epochs} %",
               f"win/tie/loss ep {epochs}", "diverged runs"])


def sweep(seeds: list[int], quick: bool, log: dict[str, Any]) -> dict[str, str]:
    lrs = QUICK_LRS if quick else LRS
    tables = {}
    for dataset, (_, epochs, q_epochs) in DATASETS.items():
        if quick and dataset == "wine":
            continue
        ep = q_epochs if quick else epochs
        runs = []
        for base, grid in lrs.items():
            for lr in grid:
                off = [run_one(dataset, base, lr, s, ep, False) for s in seeds]
                on = [run_one(dataset, base, lr, s, ep, True, **DDP_SETTINGS) for s in seeds]
                runs.append({"dataset": dataset, "base_name": base, "lr": lr, "base": off,
                             "ddpnopt": on})
                print(" | ".join(map(str, paired_rows(runs[-1:], ep)[0])), flush=True)
        log.setdefault("sweep", []).extend(runs)
        tables[dataset] = markdown_table(paired_header(ep), paired_rows(runs, ep))
    return tables


def _eps_variants(base_label: str) -> list[tuple[str, dict[str, Any]]]:
    """Feedback off, then ε_Vxx = 0 (default), 0.03, 0.1, 0.3 at Algorithm 3's place and 0.1 at
    Tassa's."""
    return ([(f"feedback off (= {base_label})", {"feedback": False}),
             ("ε = 0 (default)", {"feedback": True})]
            + [(f"ε = {e:g} at V_xx (Alg. 3)", {"feedback": True, "vxx_reg": e})
               for e in (0.03, 0.1, 0.3)]
            + [("ε = 0.1 in Q_ux (Tassa)", {"feedback": True, "eps_placement": "qux",
                                           "vxx_reg": 0.1})])


ABLATION: dict[tuple[str, float], list[tuple[str, dict[str, Any]]]] = {
    ("sgd", 1.0): _eps_variants("SGD"),
    ("adam", 3e-2): _eps_variants("Adam"),
}


def ablation(seeds: list[int], quick: bool, log: dict[str, Any]) -> str:
    ep = DATASETS["digits"][2 if quick else 1]
    rows = []
    for (base, lr), variants in ABLATION.items():
        for label, kw in variants:
            kw = DDP_SETTINGS | dict(kw)
            fb = kw.pop("feedback")
            same = next((r for r in log.get("sweep", []) if r["dataset"] == "digits"
                         and r["base_name"] == base and r["lr"] == lr), None)
            if same is not None and (not fb or kw == DDP_SETTINGS):   # reuse the sweep's runs
                res = same["ddpnopt" if fb else "base"]
            else:
                res = [run_one("digits", base, lr, s, ep, fb, **kw) for s in seeds]
            log.setdefault("ablation", []).append({"base": base, "lr": lr, "variant": label,
                                                   "runs": res})
            final = [r["acc"][-1] for r in res]
            rows.append([base, lr, label, _acc(*_mean_se([r["acc"][0] for r in res])),
                         _acc(*_mean_se(final)),
                         f"{100 * np.nanmin(final):.1f}" if np.isfinite(final).any() else "–",
                         f"{100 * lowest_after_first(res):.1f}",
                         sum(not math.isfinite(a) for a in final)])
            print(" | ".join(map(str, rows[-1])), flush=True)
    return markdown_table(ablation_header(ep), rows)


def ablation_header(ep: int) -> list[str]:
    """The ablation table's columns for runs of ``ep`` epochs (the lowest-accuracy column
    spans epochs 2 … ep: "ep 2–6", or "ep 2" for a two-epoch --quick run, not "ep 2–2")."""
    span = "2" if ep == 2 else f"2–{ep}"
    return ["base", "lr", "variant", "acc ep 1 %", f"acc ep {ep} %", f"worst seed ep {ep} %",
            f"lowest acc, any seed, ep {span} %", "diverged"]


def lowest_after_first(runs: list[dict[str, list[float]]]) -> float:
    """The lowest test accuracy over all seeds and epochs 2 … E (a transient collapse shows
    here even when the run recovers by the last epoch; NaN counts as 0)."""
    vals = [0.0 if not math.isfinite(a) else a for r in runs for a in r["acc"][1:]]
    return min(vals) if vals else float("nan")


# --- vanishing gradients ------------------------------------------------------------------
def mmc_centers(n_classes: int, radius: float = 10.0) -> torch.Tensor:
    """Max-Mahalanobis centers: a regular simplex of radius ``radius`` in R^n_classes (the
    maximally separated configuration of Pang et al., up to a rotation)."""
    e = torch.eye(n_classes)
    c = e - e.mean(0, keepdim=True)
    return radius * c / c.norm(dim=1, keepdim=True)


#: SGD-VGR: weight λ of the vanishing-gradient regularizer (ours; the paper's value is unknown)
VGR_WEIGHT = 1.0


def vgr_penalty(model: nn.Sequential, x: torch.Tensor, loss_fn: Any) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    r"""The loss and Pascanu, Mikolov & Bengio's (ICML 2013, Eq. 9) vanishing-gradient
    regularizer for a feed-forward network,

    .. math:: \Omega = \sum_{t=1}^{T-1} \frac1B\sum_i \Big(
              \frac{\lVert (\partial x_{t+1}/\partial x_t)^\top v_{t+1}^{(i)}\rVert}
                   {\lVert v_{t+1}^{(i)}\rVert} - 1\Big)^2 ,
              \qquad v_{t+1} = \partial L/\partial x_{t+1} \text{ held constant},

    which asks every layer to preserve the norm of the back-propagated error. x_t are the
    activations after each nonlinearity (the inputs of the affine layers 2 … T)."""
    acts: list[torch.Tensor] = []
    h = x
    mods = list(model)
    for i, m in enumerate(mods):
        h = m(h)
        if not isinstance(m, nn.Linear) and i + 1 < len(mods):
            acts.append(h)
    loss = loss_fn(h)
    vs = torch.autograd.grad(loss, acts, retain_graph=True)
    omega = h.new_zeros(())
    for x_t, x_next, v in zip(acts[:-1], acts[1:], vs[1:], strict=True):
        jtv = torch.autograd.grad(x_next, x_t, grad_outputs=v.detach(), create_graph=True)[0]
        ratio = jtv.norm(dim=1) / v.norm(dim=1).clamp_min(1e-30)
        omega = omega + ((ratio - 1.0) ** 2).mean()
    return loss, omega


VANISH_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"base": "sgd", "feedback": False}),
    ("SGD-VGR", {"base": "sgd", "feedback": False, "vgr": VGR_WEIGHT}),
    ("EKFAC", {"base": "ekfac", "feedback": False, "damping": 0.1}),
    ("DDPNOpt (SGD, Gauss-Newton)", {"base": "sgd", "terminal_hessian": "identity"}),
    ("DDPNOpt (SGD, second-order)", {"base": "sgd", "terminal_hessian": "identity",
                                     "expansion": "second-order"}),
]


def vanishing_run(depth: int, seed: int, epochs: int, lr: float, width: int = 32,
                  **kw: Any) -> dict[str, Any]:
    """One deep sigmoid MMC run: test accuracy, final full-batch training loss, mean per-step
    update norm of every layer."""
    kw = dict(kw)
    vgr = float(kw.pop("vgr", 0.0))
    split = load_digits_split(seed=seed)
    centers = mmc_centers(split.n_classes)
    model = network(split, seed, depth=depth, width=width, activation=nn.Sigmoid)
    opt = DDPNOpt(model, lr=lr, seed=seed, **kw)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    g = torch.Generator().manual_seed(seed)
    sums = np.zeros(len(layers))
    n_steps = 0

    def mmc(out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((out - centers[yb]) ** 2).sum(1).mean()

    for _ in range(epochs):
        for xb, yb in batches(split.x_train, split.y_train, 32, g):
            opt.zero_grad()
            if vgr > 0:
                loss, omega = vgr_penalty(model, xb, lambda o, yb=yb: mmc(o, yb))
                (loss + vgr * omega).backward()
            else:
                mmc(model(xb), yb).backward()
            before = [torch.cat([m.weight.flatten(), m.bias]).detach().clone() for m in layers]
            opt.step()
            for i, m in enumerate(layers):
                sums[i] += float((torch.cat([m.weight.flatten(), m.bias]).detach()
                                  - before[i]).norm())
            n_steps += 1
    with torch.no_grad():
        pred = (model(split.x_test) @ centers.T).argmax(1)
        train_loss = float(mmc(model(split.x_train), split.y_train))
    return {"acc": float((pred == split.y_test).float().mean()), "train_loss": train_loss,
            "update_norm": (sums / max(n_steps, 1)).tolist()}


def vanishing(seeds: list[int], quick: bool, log: dict[str, Any]) -> str:
    depths = [4, 8] if quick else [4, 8, 12]
    epochs = 1 if quick else 4
    lr = 0.1
    rows = []
    for depth in depths:
        ref_norm = None
        for label, kw in VANISH_VARIANTS:
            res = [vanishing_run(depth, s, epochs, lr, **kw) for s in seeds]
            norm = np.mean([r["update_norm"] for r in res], axis=0)
            if ref_norm is None:
                ref_norm = norm
            log.setdefault("vanishing", []).append({"depth": depth, "variant": label,
                                                    "runs": res})
            rows.append([depth, label, _acc(*_mean_se([r["acc"] for r in res])),
                         f"{np.mean([r['train_loss'] for r in res]):.3g}",
                         f"{norm[0]:.2e}", f"{norm[0] / ref_norm[0]:.2f}",
                         f"{norm[-1]:.2e}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    return (f"Sigmoid networks of width 32 and depth {depths} (layers), MMC loss (radius 10, "
            f"prediction = nearest center), lr = {lr}, batch 32, {epochs} epochs, {len(seeds)} "
            "seeds; DDPNOpt with the terminal Hessian I (exact for the MMC loss), ε_Vxx = 0. "
            "SGD-VGR: SGD on L + λΩ, Ω Pascanu et al.'s (2013) "
            f"vanishing-gradient regularizer (each layer's Jacobian should preserve the norm of "
            f"the back-propagated error; λ = {VGR_WEIGHT}, our choice: the paper names the "
            "baseline but we do not know its definition or weight). ‖Δu‖: mean per-step update "
            "norm; ratio: layer 1 vs SGD at the same depth.\n\n" + markdown_table(
                ["depth", "optimizer", "digits test acc %", "train MMC loss",
                 "‖Δu‖ layer 1", "layer-1 ratio to SGD", "‖Δu‖ last layer"], rows))


def _plot(log: dict[str, Any], out: Path) -> None:
    """Paired difference DDPNOpt − base of test accuracy and training loss against the epoch,
    one column per position in the learning-rate grid, one line per base (digits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = [r for r in log.get("sweep", []) if r["dataset"] == "digits"]
    if not runs:
        return
    n_lr = max(len(v) for v in LRS.values())

    def position(r: dict[str, Any]) -> int:
        grid = LRS[r["base_name"]]
        return grid.index(r["lr"]) if r["lr"] in grid else n_lr - 1

    # only the grid positions that ran (--quick runs the largest learning rates alone: the
    # other columns were empty panels)
    cols = sorted({position(r) for r in runs})
    # at least 6 inches wide: one column clipped the title
    fig, ax = plt.subplots(2, len(cols), figsize=(max(4 * len(cols), 6), 6), squeeze=False,
                           sharey="row")
    for r in runs:
        j = cols.index(position(r))
        for i, key in enumerate(("acc", "train_loss")):
            ep = len(r["base"][0][key])
            stats = [paired([a[key][e] for a in r["base"]], [a[key][e] for a in r["ddpnopt"]])
                     for e in range(ep)]
            m = np.array([s[0] for s in stats]) * (100 if key == "acc" else 1)
            se = np.array([s[1] for s in stats]) * (100 if key == "acc" else 1)
            xs = np.arange(1, ep + 1)
            line = ax[i, j].plot(xs, m, marker="o", ms=3,
                                 label=f"{r['base_name']} lr {r['lr']:g}")[0]
            ax[i, j].fill_between(xs, m - se, m + se, color=line.get_color(), alpha=0.2)
    for j, pos in enumerate(cols):
        ax[0, j].set_title(f"lr grid position {pos + 1} of {n_lr} (smallest → largest)")
        ax[0, j].axhline(0, color="k", lw=0.6)
        ax[1, j].axhline(0, color="k", lw=0.6)
        ax[1, j].set_xlabel("epoch")
        for i in range(2):
            ax[i, j].xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax[0, j].get_legend_handles_labels()[0]:
            ax[0, j].legend(fontsize=7)
    ax[0, 0].set_ylabel("Δ test accuracy (points)")
    ax[1, 0].set_ylabel("Δ training loss")
    fig.suptitle("DIGITS: DDPNOpt − base, paired by seed (mean ± SE)")
    fig.tight_layout()
    fig.savefig(out / "paired_diff.png", dpi=110)
    plt.close(fig)


def run(args: Any) -> int:
    quick = bool(args.quick)
    n_seeds = seed_count(args, 2 if quick else 5)
    seeds = list(range(n_seeds))
    torch.set_num_threads(1)       # small networks: one thread is fastest
    log: dict[str, Any] = {"seeds": seeds, "quick": quick, "ddp_settings": DDP_SETTINGS}
    t0 = time.perf_counter()
    print("## learning-rate sweep")
    tables = sweep(seeds, quick, log)
    print("## ablation (digits)")
    table2 = ablation(seeds, quick, log)
    print("## vanishing gradients (digits, sigmoid, MMC)")
    table3 = vanishing(seeds, quick, log)
    seconds = time.perf_counter() - t0
    out = Path(args.out) / "ddpnopt"
    out.mkdir(parents=True, exist_ok=True)
    write_results("ddpnopt", {out / "results.json": json_text(log, default=None, indent=None)})
    _plot(log, out)
    cmd = command("ddpnopt", args)
    ep = {d: v[2 if quick else 1] for d, v in DATASETS.items()}
    sweep_text = "\n\n".join(
        f"**{d.upper()}** (batch {DATASETS[d][0]}, {ep[d]} epochs):\n\n{t}"
        for d, t in tables.items())
    body = (f"Measured with `{cmd} --update-docs` ({len(seeds)} seeds, {duration(seconds)} on 2 "
            f"shared CPU cores); raw numbers in `<out>/ddpnopt/results.json`, plot "
            "`<out>/ddpnopt/paired_diff.png`.\n\n"
            "### Learning-rate sweep (5-layer tanh MLP, width 32)\n\n"
            f"DDPNOpt settings: {DDP_SETTINGS}, everything else identical to the base "
            "optimizer (torch defaults otherwise; sgdm = SGD with momentum 0.9; the momentum "
            "and the learning-rate grids are ours: the paper's tuned values are unknown to us). "
            "Δ = DDPNOpt − "
            "base on the same split, initialization and batch order, mean ± standard error "
            "(sample SD/√n) over the seeds; Δacc in points of test accuracy, Δloss in the full "
            "training-set cross-entropy at the end of the epoch (negative = DDPNOpt lower). "
            "Diverged runs (non-finite loss) are left out of the differences and counted.\n\n"
            f"{sweep_text}\n\n### ε_Vxx ablation (digits, {len(seeds)} seeds, "
            f"{ep['digits']} epochs)\n\n{table2}\n\n"
            f"### Vanishing gradients\n\n{table3}\n")
    print(as_run(body, args.update_docs))
    if args.update_docs:
        update_section(docs_path(), "ddpnopt", body)
        print("updated docs/reproductions.md section 'ddpnopt'")
    return 0
