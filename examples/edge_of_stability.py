"""Edge of stability: full-batch GD and heavy ball on the spiral MLP (docs/studies.md, part c).

    python examples/edge_of_stability.py                 # print the table, write the plot
    python examples/edge_of_stability.py --update-docs   # also rewrite the table in studies.md

An MLP 2-64-64-1 (tanh) is trained on the 500 spiral points with the mean-squared error against
±1 labels, full batch, by

* gradient descent: ``dynopt.optim.OverdampedLangevin(lr=η, temperature=0)`` (Euler step
  q ← q − η∇L), η = 0.1;
* heavy ball: ``dynopt.optim.HeavyBall(lr=h, gamma=γ)``, the port-Hamiltonian ``"FBA"`` scheme =
  ``SGD(lr=h², momentum=1 − γh)``, here η = h² = 0.1 and μ = 0.5.

Every 25 steps λ_max of the full-batch Hessian is computed by Lanczos on Hessian-vector products
(:func:`dynopt.diagnostics.model_top_eigenvalue`) and compared with the optimizer's linear
stability limit from its own scheme (:func:`dynopt.diagnostics.optimizer_stability_limit`):
2/η = 20 for GD and 2(1 + μ)/η = 30 for the heavy ball. λ_max rises ("progressive
sharpening") until it reaches the limit and then hovers around it while the loss keeps
decreasing non-monotonically (Cohen et al., ICLR 2021).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dynopt.data import make_spirals
from dynopt.diagnostics import model_top_eigenvalue, optimizer_stability_limit
from dynopt.optim import HeavyBall, OverdampedLangevin
from dynopt.reproductions.report import markdown_table, update_section

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
ETA = 0.1
MU = 0.5


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                               torch.nn.Tanh(), torch.nn.Linear(64, 1))


def run(kind: str, steps: int, every: int, seed: int) -> dict[str, np.ndarray | float]:
    """Train with ``kind`` ("gd" or "heavy ball"); λ_max and loss every ``every`` steps."""
    split = make_spirals(seed=seed)
    x, y = split.x_train, split.y_train.reshape(-1, 1) * 2 - 1
    model = mlp(seed)
    loss_fn = torch.nn.MSELoss()
    if kind == "gd":
        opt: torch.optim.Optimizer = OverdampedLangevin(model.parameters(), lr=ETA,
                                                        temperature=0.0, seed=seed)
    else:
        h = math.sqrt(ETA)
        opt = HeavyBall(model.parameters(), lr=h, gamma=(1 - MU) / h)
    limit = optimizer_stability_limit(opt).lam
    rec_step, rec_lam, rec_loss = [], [], []
    t0 = time.perf_counter()
    for k in range(steps + 1):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        if k % every == 0:
            rec_step.append(k)
            rec_loss.append(float(loss.detach()))
            rec_lam.append(model_top_eigenvalue(model, loss_fn, (x, y), tol=1e-4).value)
        if k < steps:
            opt.step()
    return {"step": np.array(rec_step), "lam": np.array(rec_lam), "loss": np.array(rec_loss),
            "limit": float(limit), "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = {kind: run(kind, args.steps, args.every, args.seed) for kind in ("gd", "heavy ball")}
    rows = []
    for kind, r in runs.items():
        lam, step = r["lam"], r["step"]
        first = int(step[np.argmax(lam >= 0.95 * r["limit"])]) if np.any(
            lam >= 0.95 * r["limit"]) else None
        late = lam[step >= step[-1] // 2]
        rows.append([kind, f"{r['limit']:.4g}", f"{lam[0]:.3g}", first,
                     f"{late.mean():.3g} ({late.min():.3g} – {late.max():.3g})",
                     f"{late.mean() / r['limit']:.3f}", f"{r['loss'][0]:.3f} → {r['loss'][-1]:.3f}",
                     f"{r['seconds']:.0f} s"])
    table = markdown_table(["optimizer", "limit λ_c (from its scheme)", "λ_max at step 0",
                            "first step with λ_max ≥ 0.95 λ_c",
                            "λ_max, second half: mean (min – max)", "mean / λ_c", "loss",
                            "run time"], rows)
    print(table)
    fig = Figure(figsize=(10, 3.6))
    for i, (kind, r) in enumerate(runs.items()):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot(r["step"], r["lam"], lw=1.2, label=r"$\lambda_{max}$ (Lanczos)")
        label = "2/η" if kind == "gd" else "2(1+μ)/η"
        ax.axhline(r["limit"], color="C3", ls="--", lw=1, label=f"limit {label} = {r['limit']:.3g}")
        ax.set_xlabel("step")
        ax.set_ylabel(r"$\lambda_{max}$ of the full-batch Hessian")
        title = (f"GD, η = {ETA}" if kind == "gd" else f"heavy ball, η = h² = {ETA}, μ = {MU}")
        ax.set_title(title, fontsize=9)
        ax2 = ax.twinx()
        ax2.plot(r["step"], r["loss"], color="0.5", lw=0.8, label="train loss (right)")
        ax2.set_ylabel("train loss (MSE)", color="0.4")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
    FigureCanvasAgg(fig)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "edge_of_stability.png", dpi=80)
    print(f"wrote {IMG / 'edge_of_stability.png'}")
    if args.update_docs:
        body = (f"MLP 2-64-64-1 (tanh), spirals (500 points), MSE, full batch, {args.steps} steps, "
                f"λ_max every {args.every} steps, seed {args.seed}:\n\n{table}")
        print(f"updated {update_section(ROOT / 'docs' / 'studies.md', 'edge-of-stability', body)}")


if __name__ == "__main__":
    main()
