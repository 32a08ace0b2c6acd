"""Real networks as studied systems (docs/studies.md, part d).

    python examples/network_study.py                 # print the tables, write docs/img/*.png
    python examples/network_study.py --update-docs   # also rewrite the tables in studies.md

1. Per-layer temperatures of the spiral MLP (2-100-1, BCE, minibatches of 25) trained with
   AdLaLa and with Langevin (the spiral paper's h = 0.25, τ = 1e-4), recorded by a
   :class:`dynopt.monitor.TrainingMonitor` every 20 steps: kinetic temperature 2⟨K_L⟩/n_L from
   the optimizer's momenta and configurational temperature ⟨|∇_L U|²⟩/⟨Δ_L U⟩ of the
   full-batch loss, over the second half of 200 epochs.
2. Replica R-hat at a low and a high temperature: ``dynopt study --model mlp`` (8 replicas from
   independent initializations, Langevin BAOAB, h = 0.05) at τ = 1e-4 and τ = 1e-2.
3. BBI's energy and invariant on a digits MLP: ``dynopt study --model mlp --data digits
   --system born-infeld``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dynopt import optim
from dynopt.cli import main as cli
from dynopt.data import make_spirals
from dynopt.monitor import TrainingMonitor
from dynopt.observables import layer_temperatures
from dynopt.reproductions.report import markdown_table, update_section
from dynopt.training import fit, loss_function, mlp

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"


def save(fig: Figure, name: str) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / name, dpi=80)
    print(f"wrote {IMG / name}")


def part1(epochs: int) -> str:
    split = make_spirals(seed=0)
    loss_fn = loss_function(split)
    results = {}
    for name in ("adlala", "langevin"):
        torch.manual_seed(0)
        model = mlp(2, 1, (100,), sigmoid_output=True)
        opt = optim.make(name, model, seed=0)
        mon = TrainingMonitor(model, opt, loss_fn, (split.x_train, split.y_train), every=20)

        def step(o, closure, loss, mon=mon):  # type: ignore[no-untyped-def]
            out = o.step()
            mon.step()
            return out

        t0 = time.perf_counter()
        hist = fit(model, opt, split, epochs=epochs, batch_size=25, seed=0, step=step,
                   eval_every=epochs, loss_fn=loss_fn)
        traj = mon.trajectory()
        results[name] = (layer_temperatures(traj, burn_in=traj.n_draws // 2), hist,
                         time.perf_counter() - t0, traj)
    rows = []
    for name, (temps, hist, _secs, traj) in results.items():
        xi = [float(np.mean(v[0, traj.n_draws // 2:])) for k, v in traj.extras.items()
              if k.startswith("xi:")]
        for layer, t in temps.items():
            rows.append([name, layer, t.n, f"{t.kinetic.value:.3e} ± {t.kinetic.se:.1e}",
                         f"{t.configurational.value:.3e} ± {t.configurational.se:.1e}",
                         f"{xi[0]:.3f}" if xi and layer == "0.weight" else "-",
                         f"{100 * hist.test_accuracy[-1]:.1f} %"])
    table = markdown_table(["optimizer", "layer", "n", "T_kin ± SE", "T_conf ± SE",
                            "ξ (layer 1, mean)", "test accuracy"], rows)
    print(table)
    fig = Figure(figsize=(10, 3.4))
    for k, key in enumerate(("kinetic", "configurational")):
        ax = fig.add_subplot(1, 2, k + 1)
        for j, (name, (temps, *_)) in enumerate(results.items()):
            names = list(temps)
            x = np.arange(len(names)) + (j - 0.5) * 0.25
            vals = [getattr(temps[n], key) for n in names]
            ax.errorbar(x, [v.value for v in vals], yerr=[2 * v.se for v in vals], fmt="os"[j],
                        ms=4, capsize=3, label=name)
        ax.axhline(1e-4, color="k", ls="--", lw=0.8, label="τ = 1e-4")
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(names)), names, fontsize=8)
        ax.set_title(f"{key} temperature per layer (± 2 SE)", fontsize=9)
        ax.legend(fontsize=7)
    save(fig, "network_layer_temperatures.png")
    return table


def study(argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        rc = cli(["study", "--model", "mlp", "--out", d, *argv])
        if rc != 0:
            raise RuntimeError(f"dynopt study {argv} failed with {rc}")
        return json.loads((Path(d) / "summary.json").read_text())


def part2(steps: int) -> str:
    rows = []
    for tau in ("1e-4", "1e-2"):
        s = study(["--temperature", tau, "--steps", str(steps), "--no-plots"])
        t = s["layers"]["0.weight"]
        rows.append([tau, f"{s['loss']['value']:.4f} ± {s['loss']['se']:.1g}",
                     f"{s['loss']['rhat']:.3f}", f"{s['loss']['ess']:.0f}",
                     f"{max(s['projections']['rhat']):.2f}",
                     f"{min(s['projections']['ess']):.0f}",
                     f"{t['kinetic']['value']:.3e} ± {t['kinetic']['se']:.1e}",
                     f"{t['configurational']['value']:.3e} ± {t['configurational']['se']:.1e}",
                     f"{s['wall_time_s']:.0f} s"])
    table = markdown_table(["τ", "train loss", "R-hat (loss)", "ESS (loss)",
                            "max R-hat (4 projections)", "min ESS (projections)",
                            "T_kin, layer 1 weights", "T_conf, layer 1 weights", "run time"],
                           rows)
    print(table)
    return table


def part3(steps: int) -> str:
    s = study(["--data", "digits", "--system", "born-infeld", "--h", "0.01", "--steps",
               str(steps), "--chains", "4", "--record-every", "10", "--no-plots"])
    c = s["conservation"]
    table = markdown_table(
        ["quantity", "max abs error", "max rel error", "slope d/dt ± SE", "train loss (mean)"],
        [[c["quantity"], f"{c['max_abs_error']:.3e}", f"{c['max_rel_error']:.3e}",
          f"{c['slope']:.2e} ± {c['slope_se']:.1e}",
          f"{s['loss']['value']:.4f}"]])
    print(table)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t1 = part1(args.epochs)
    t2 = part2(args.steps)
    t3 = part3(args.steps // 2)
    if args.update_docs:
        body = (f"1. Spiral MLP, {args.epochs} epochs (minibatch 25, h = 0.25, τ = 1e-4), "
                f"records every 20 steps, statistics over the second half:\n\n{t1}\n\n"
                f"2. Replicas: `dynopt study --model mlp --temperature τ --steps {args.steps}` "
                f"(8 replicas, BAOAB h = 0.05, γ = 1, weight decay 1e-3):\n\n{t2}\n\n"
                f"3. BBI on the digits MLP: `dynopt study --model mlp --data digits --system "
                f"born-infeld --h 0.01 --steps {args.steps // 2} --chains 4`:\n\n{t3}")
        print(f"updated {update_section(ROOT / 'docs' / 'studies.md', 'network-study', body)}")


if __name__ == "__main__":
    main()
