"""``dynopt reproduce ddpnopt``: DDPNOpt vs its base optimizers (Liu, Chen & Theodorou, ICLR 2021).

1. **Learning-rate sweep** (the paper's Fig. 4a claim: DDPNOpt is at least as good as the base
   optimizer it adapts, with the gain growing with the learning rate). scikit-learn DIGITS and
   WINE, a fully connected tanh network with 5 layers of width 32, each base optimizer (SGD,
   RMSprop, Adam) against DDPNOpt with the same base and identical hyperparameters, paired runs
   (same split, initialization and batch order) over several seeds.
2. **Ablation** at one learning rate per base: feedback off / on with the Bellman costate / on
   with the back-propagated costate / on with ε_Vxx.
3. **Vanishing gradients** (the paper's Fig. 6): a deep sigmoid network on DIGITS with the
   Max-Mahalanobis-center (MMC) loss; SGD and EKFAC vs DDPNOpt (SGD base) with the terminal
   Hessian I and the second-order expansion; test accuracy and per-layer update norms.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import Split, batches, load_digits_split, load_wine_split
from ..optim import DDPNOpt
from ..training import fit, mlp
from .report import markdown_table, repo_root, seed_count, update_section

DESCRIPTION = "DDPNOpt vs its base optimizers (lr sweep on digits and wine; vanishing gradients)"

#: (dataset, batch size, epochs, quick epochs)
DATASETS = {"digits": (32, 20, 6), "wine": (8, 40, 12)}
#: learning-rate grids per base
LRS = {"sgd": [0.03, 0.1, 0.3, 1.0], "rmsprop": [1e-3, 3e-3, 1e-2, 3e-2],
       "adam": [1e-3, 3e-3, 1e-2, 3e-2]}
QUICK_LRS = {"sgd": [0.1, 1.0], "rmsprop": [3e-3, 3e-2], "adam": [3e-3, 3e-2]}
#: the DDPNOpt settings of the sweep (fixed before the sweep; see the ablation)
DDP_SETTINGS: dict[str, Any] = {"terminal_hessian": "cross-entropy", "costate": "bellman",
                                "feedback_curvature": "batch", "vxx_reg": 0.0}


def load(name: str, seed: int) -> Split:
    return load_digits_split(seed=seed) if name == "digits" else load_wine_split(seed=seed)


def network(split: Split, seed: int, *, depth: int = 5, width: int = 32,
            activation: type[nn.Module] = nn.Tanh, n_out: int | None = None) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp(split.n_features, n_out or split.n_classes, (width,) * (depth - 1), activation)


def run_one(dataset: str, base: str, lr: float, seed: int, epochs: int, feedback: bool,
            **ddp: Any) -> float:
    """Test accuracy after training (same split, init and batch order for every variant)."""
    split = load(dataset, seed)
    model = network(split, seed)
    opt = DDPNOpt(model, lr=lr, base=base, feedback=feedback, seed=seed, **ddp)
    bs = DATASETS[dataset][0]
    try:
        hist = fit(model, opt, split, epochs=epochs, batch_size=bs, seed=seed, eval_every=epochs)
    except FloatingPointError:
        return float("nan")
    acc = hist.test_accuracy[-1]
    return acc if math.isfinite(hist.test_loss[-1]) else float("nan")


def _mean_se(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan"), float("nan")
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
    return float(a.mean()), se


def _fmt(m: float, se: float, scale: float = 100.0) -> str:
    if not math.isfinite(m):
        return "diverged"
    return f"{scale * m:.1f} ± {scale * se:.1f}" if math.isfinite(se) else f"{scale * m:.1f}"


def sweep(seeds: list[int], quick: bool, log: dict[str, Any]) -> str:
    lrs = QUICK_LRS if quick else LRS
    rows = []
    for dataset, (_, epochs, q_epochs) in DATASETS.items():
        ep = q_epochs if quick else epochs
        for base, grid in lrs.items():
            for lr in grid:
                off = [run_one(dataset, base, lr, s, ep, False) for s in seeds]
                on = [run_one(dataset, base, lr, s, ep, True, **DDP_SETTINGS) for s in seeds]
                diff = [b - a for a, b in zip(off, on, strict=True)]
                wins = sum(d > 1e-9 for d in diff)
                losses = sum(d < -1e-9 for d in diff)
                log.setdefault("sweep", []).append(
                    {"dataset": dataset, "base": base, "lr": lr, "base_acc": off,
                     "ddpnopt_acc": on})
                rows.append([dataset, base, lr, _fmt(*_mean_se(off)), _fmt(*_mean_se(on)),
                             _fmt(*_mean_se(diff)), f"{wins}/{len(seeds) - wins - losses}/"
                             f"{losses}"])
                print(" | ".join(map(str, rows[-1])), flush=True)
    return markdown_table(["data", "base", "lr", "base optimizer acc %", "DDPNOpt acc %",
                           "paired diff (pts)", "win/tie/loss"], rows)


ABLATION: dict[tuple[str, float], list[tuple[str, dict[str, Any]]]] = {
    ("sgd", 1.0): [
        ("feedback off (= SGD)", {"feedback": False}),
        ("DDPNOpt default (CE Hessian, Bellman costate)", {"feedback": True}),
        ("Z_T = ∇φ (outer)", {"feedback": True, "terminal_hessian": "outer"}),
        ("back-prop costate", {"feedback": True, "costate": "backprop"}),
        ("ε_Vxx = 0.1", {"feedback": True, "vxx_reg": 0.1}),
        ("second-order expansion", {"feedback": True, "expansion": "second-order"}),
    ],
    ("adam", 3e-2): [
        ("feedback off (= Adam)", {"feedback": False}),
        ("DDPNOpt default (CE Hessian, Bellman, batch M)", {"feedback": True}),
        ("M = Adam's own √v̂ + ε", {"feedback": True, "feedback_curvature": "base"}),
        ("back-prop costate", {"feedback": True, "costate": "backprop"}),
        ("Z_T = ∇φ (outer)", {"feedback": True, "terminal_hessian": "outer"}),
    ],
}


def ablation(seeds: list[int], quick: bool, log: dict[str, Any]) -> str:
    ep = DATASETS["digits"][2 if quick else 1]
    rows = []
    for (base, lr), variants in ABLATION.items():
        for label, kw in variants:
            kw = dict(kw)
            fb = kw.pop("feedback")
            acc = [run_one("digits", base, lr, s, ep, fb, **kw) for s in seeds]
            log.setdefault("ablation", []).append({"base": base, "lr": lr, "variant": label,
                                                   "acc": acc})
            rows.append([base, lr, label, _fmt(*_mean_se(acc))])
            print(" | ".join(map(str, rows[-1])), flush=True)
    return markdown_table(["base", "lr", "variant", "digits test acc %"], rows)


# --- vanishing gradients ------------------------------------------------------------------
def mmc_centers(n_classes: int, radius: float = 10.0) -> torch.Tensor:
    """Max-Mahalanobis centers: a regular simplex of radius ``radius`` in R^n_classes (the
    maximally separated configuration of Pang et al., up to a rotation)."""
    e = torch.eye(n_classes)
    c = e - e.mean(0, keepdim=True)
    return radius * c / c.norm(dim=1, keepdim=True)


def vanishing(seeds: list[int], quick: bool, log: dict[str, Any]) -> str:
    depth, width = 12, 32
    epochs = 4 if quick else 15
    lr = 0.1
    variants: list[tuple[str, dict[str, Any]]] = [
        ("SGD", {"base": "sgd", "feedback": False}),
        ("EKFAC", {"base": "ekfac", "feedback": False, "damping": 0.1}),
        ("DDPNOpt (SGD, Gauss-Newton)", {"base": "sgd", "terminal_hessian": "identity"}),
        ("DDPNOpt (SGD, second-order)", {"base": "sgd", "terminal_hessian": "identity",
                                         "expansion": "second-order"}),
    ]
    rows = []
    for label, kw in variants:
        accs, norms = [], []
        for seed in seeds:
            split = load_digits_split(seed=seed)
            centers = mmc_centers(split.n_classes)
            model = network(split, seed, depth=depth, width=width, activation=nn.Sigmoid)
            opt = DDPNOpt(model, lr=lr, seed=seed, **kw)
            layers = [m for m in model if isinstance(m, nn.Linear)]
            g = torch.Generator().manual_seed(seed)
            sums = np.zeros(len(layers))
            n_steps = 0
            for _ in range(epochs):
                for xb, yb in batches(split.x_train, split.y_train, 32, g):
                    opt.zero_grad()
                    out = model(xb)
                    loss = 0.5 * ((out - centers[yb]) ** 2).sum(1).mean()
                    loss.backward()
                    before = [torch.cat([m.weight.flatten(), m.bias]).detach().clone()
                              for m in layers]
                    opt.step()
                    for i, m in enumerate(layers):
                        sums[i] += float((torch.cat([m.weight.flatten(), m.bias]).detach()
                                          - before[i]).norm())
                    n_steps += 1
            with torch.no_grad():
                pred = (model(split.x_test) @ centers.T).argmax(1)
            accs.append(float((pred == split.y_test).float().mean()))
            norms.append(sums / n_steps)
        mean_norm = np.mean(norms, axis=0)
        log.setdefault("vanishing", []).append({"variant": label, "acc": accs,
                                                "update_norm": mean_norm.tolist()})
        rows.append([label, _fmt(*_mean_se(accs)), f"{mean_norm[0]:.2e}",
                     f"{mean_norm[len(mean_norm) // 2]:.2e}", f"{mean_norm[-1]:.2e}"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    return (f"Sigmoid network, {depth} layers of width {width}, MMC loss (radius 10, prediction "
            f"= nearest center), lr = {lr}, batch 32, {epochs} epochs; DDPNOpt with the terminal "
            "Hessian I (exact for the MMC loss); mean per-step update norm ‖Δu_t‖ of the first, "
            "middle and last layer.\n\n" + markdown_table(
                ["optimizer", "digits test acc %", "‖Δu‖ layer 1", f"‖Δu‖ layer {depth // 2 + 1}",
                 f"‖Δu‖ layer {depth}"], rows))


def run(args: Any) -> int:
    quick = bool(args.quick)
    n_seeds = seed_count(args, 2 if quick else 5)
    seeds = list(range(n_seeds))
    torch.set_num_threads(1)       # small networks: one thread is fastest
    log: dict[str, Any] = {"seeds": seeds, "quick": quick, "ddp_settings": DDP_SETTINGS}
    t0 = time.perf_counter()
    print("## learning-rate sweep")
    table1 = sweep(seeds, quick, log)
    print("## ablation (digits)")
    table2 = ablation(seeds[:3], quick, log)
    print("## vanishing gradients (digits, sigmoid, MMC)")
    table3 = vanishing(seeds[: max(2, min(3, len(seeds)))], quick, log)
    minutes = (time.perf_counter() - t0) / 60
    out = Path(args.out) / "ddpnopt"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(log, indent=1))
    cmd = "dynopt reproduce ddpnopt" + (" --quick" if quick else "") + (
        f" --seeds {args.seeds}" if args.seeds else "")
    body = (f"Measured with `{cmd} --update-docs` ({len(seeds)} seeds, {minutes:.0f} min on 2 "
            f"shared CPU cores); raw numbers in `<out>/ddpnopt/results.json`.\n\n"
            "### Learning-rate sweep (5-layer tanh MLP, width 32)\n\n"
            f"DDPNOpt settings: {DDP_SETTINGS}, everything else identical to the base "
            "optimizer (torch defaults otherwise). Accuracy: mean ± standard error over seeds; "
            "paired diff = DDPNOpt − base on the same split, initialization and batch order.\n\n"
            f"{table1}\n\n### Ablation (digits, {min(3, len(seeds))} seeds, "
            f"{DATASETS['digits'][2 if quick else 1]} epochs)\n\n{table2}\n\n"
            f"### Vanishing gradients\n\n{table3}\n")
    print(body)
    if args.update_docs:
        update_section(repo_root() / "docs" / "reproductions.md", "ddpnopt", body)
        print("updated docs/reproductions.md section 'ddpnopt'")
    return 0
