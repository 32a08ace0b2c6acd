"""Energy-conservation study: leapfrog on the double well (docs/studies.md, part a).

    python examples/energy_study.py                 # print the tables, write docs/img/*.png
    python examples/energy_study.py --update-docs   # also rewrite the tables in docs/studies.md

1. Energy error over 10⁶ steps (h = 0.05, 8 chains): bounded, no secular drift.
2. Maximum energy error over t ≤ 1000 for h = 0.1 … 0.0125: O(h²).
3. Global error at T = 10 against the torchdiffeq dopri8 reference flow: order 2.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import dynopt
from dynopt import diagnostics as dg
from dynopt.potentials import DoubleWell
from dynopt.reproductions.report import markdown_table, update_section

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
# Four chains in the wells (E < 1), three above the barrier (E > 1), one near the bottom.
Q0 = np.array([[1.0], [-1.0], [1.2], [-0.8], [0.0], [1.5], [-1.4], [0.9]])
P0 = np.array([[0.5], [0.3], [-0.4], [0.6], [1.8], [0.0], [2.0], [-0.2]])
HS = [0.1, 0.05, 0.025, 0.0125]


def save(fig: Figure, name: str) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / name, dpi=80)
    print(f"wrote {IMG / name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    system = dynopt.systems.Hamiltonian(DoubleWell())
    e0 = system.energy(Q0, P0)

    # 1. long run
    t0 = time.perf_counter()
    traj = dynopt.integrate(system, "leapfrog", Q0, p0=P0, h=0.05, n_steps=1_000_000,
                            record_every=50, seed=0)
    wall = time.perf_counter() - t0
    drift = dg.energy_drift(traj)
    err = traj.energy - traj.energy[:, :1]
    tenth = err.shape[1] // 10
    rows = [[f"{e0[c]:.4f}", f"{np.abs(err[c]).max():.3e}",
             f"{np.abs(err[c, :tenth]).max():.3e}", f"{np.abs(err[c, -tenth:]).max():.3e}"]
            for c in range(len(Q0))]
    table1 = markdown_table(["E(0)", "max abs ΔE, whole run", "first 10%", "last 10%"], rows)
    summary1 = markdown_table(
        ["max abs ΔE", "max abs ΔE / abs E(0)", "slope dE/dt", "slope SE", "slope/SE",
         "RMS ΔE"],
        [[f"{drift.max_abs_error:.3e}", f"{drift.max_rel_error:.3e}", f"{drift.slope:.2e}",
          f"{drift.slope_se:.2e}", f"{drift.slope_z:+.2f}", f"{drift.rms_error:.3e}"]])
    print(f"1. leapfrog, h = 0.05, 8 chains x 10^6 steps ({wall:.2f} s incl. kernel load)")
    print(summary1)
    print(table1)
    fig = Figure(figsize=(9, 3))
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    short = dynopt.integrate(system, "leapfrog", Q0, p0=P0, h=0.05, n_steps=400, seed=0)
    window = 200  # records per window = 10⁴ steps = 500 time units
    n_win = err.shape[1] // window
    env = np.abs(err[:, : n_win * window]).reshape(len(Q0), n_win, window).max(axis=2)
    t_win = traj.t[: n_win * window].reshape(n_win, window).mean(axis=1)
    for c in (0, 2, 4, 6):
        label = f"E(0) = {e0[c]:.3f}"
        ax.plot(short.t, short.energy[c] - short.energy[c, 0], lw=0.8, label=label)
        ax2.semilogy(t_win, env[c], lw=1.0, label=label)
    ax.set_xlabel("t")
    ax.set_ylabel("E(t) − E(0)")
    ax.set_title("first 400 steps (every step)", fontsize=9)
    ax.legend(fontsize=7)
    ax2.set_xlabel("t")
    ax2.set_ylabel("max |E − E(0)| per 10⁴ steps")
    ax2.set_title("10⁶ steps: the error envelope stays flat", fontsize=9)
    save(fig, "energy_error.png")

    # 2. max energy error vs h at fixed T = 1000, every step recorded
    max_err = []
    for h in HS:
        n = round(1000 / h)
        tr = dynopt.integrate(system, "leapfrog", Q0, p0=P0, h=h, n_steps=n, seed=0)
        max_err.append(float(np.abs(tr.energy - tr.energy[:, :1]).max()))
    fit_e = dg.empirical_order(HS, max_err)

    # 3. global error at T = 10 against torchdiffeq
    glob = dg.global_error(system, "leapfrog", Q0, P0, T=10.0, hs=HS)
    fit_g = dg.empirical_order(HS, glob)
    rows = [[h, f"{m:.3e}", f"{g:.3e}"] for h, m, g in zip(HS, max_err, glob, strict=True)]
    table2 = markdown_table(["h", "max abs ΔE over t ≤ 1000", "global error at T = 10"], rows)
    orders = markdown_table(
        ["quantity", "fitted order", "local orders", "asymptotic"],
        [["max energy error", f"{fit_e.order:.3f}", ", ".join(f"{v:.3f}" for v in
                                                            fit_e.local_orders),
          fit_e.asymptotic],
         ["global error vs dopri8 (rtol = atol = 1e-12)", f"{fit_g.order:.3f}",
          ", ".join(f"{v:.3f}" for v in fit_g.local_orders), fit_g.asymptotic]])
    print("\n2./3. h sweep")
    print(table2)
    print(orders)
    fig = Figure(figsize=(5, 3.4))
    ax = fig.add_subplot()
    hs = np.array(HS)
    ax.loglog(hs, max_err, "o-", label=f"max |ΔE|, t ≤ 1000 (order {fit_e.order:.2f})")
    ax.loglog(hs, glob, "s-", label=f"global error, T = 10 (order {fit_g.order:.2f})")
    ax.loglog(hs, max_err[-1] * (hs / hs[-1]) ** 2, "k:", lw=1, label="slope 2")
    ax.set_xticks(hs, [str(h) for h in HS])
    ax.minorticks_off()
    ax.set_xlabel("h")
    ax.set_ylabel("error")
    ax.legend(fontsize=7)
    ax.set_title("leapfrog on the double well", fontsize=9)
    save(fig, "energy_order.png")

    if args.update_docs:
        body = (f"Long run (h = 0.05, 8 chains × 10⁶ steps, every 50th step recorded):\n\n"
                f"{summary1}\n\nPer chain:\n\n{table1}\n\nStep-size sweep:\n\n{table2}\n\n"
                f"{orders}")
        path = update_section(ROOT / "docs" / "studies.md", "energy-study", body)
        print(f"updated {path}")


if __name__ == "__main__":
    main()
