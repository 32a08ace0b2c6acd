"""Ergodicity study (docs/studies.md, part b).

    python examples/ergodicity_study.py                 # print tables, write docs/img/*.png
    python examples/ergodicity_study.py --update-docs   # also rewrite the tables in the doc

1. Langevin BAOAB on the double well at τ = 0.25 (γ = 1, h = 0.05, 64 chains × 10⁶ steps, all
   started in the right well): histogram vs the Gibbs density, time fraction with q > 0, well
   crossings, ESS / R-hat, kinetic and configurational temperature.
2. Step-size sweep h = 0.05 … 0.3 (256 chains × 5·10⁴ time units each): the discretization bias of
   T_conf, T_kin and ⟨q²⟩ (the bias allowances of tests/test_invariant_measures.py).
3. Nosé–Hoover vs Nosé–Hoover chain (M = 3) on the 1-D harmonic oscillator (kT = 1, ω = 1,
   thermostat period 1, h = 0.05, 16 chains × 2·10⁵ steps, Maxwell–Boltzmann initial momenta).
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
from dynopt.potentials import DoubleWell, Harmonic
from dynopt.reproductions.report import markdown_table, update_section

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
TAU = 0.25


def save(fig: Figure, name: str) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / name, dpi=80)
    print(f"wrote {IMG / name}")


def fmt(est: dg.Estimate, digits: int = 4) -> str:
    return f"{float(est.value):.{digits}f} ± {float(est.se):.1g}"


def langevin_double_well() -> str:
    pot = DoubleWell()
    system = dynopt.systems.Langevin(pot, gamma=1.0, temperature=TAU)
    t0 = time.perf_counter()
    traj = dynopt.integrate(system, "BAOAB", [1.0], h=0.05, n_steps=1_000_000, n_chains=64,
                            seed=0, record_every=50)
    print(f"1. BAOAB, 64 chains x 10^6 steps: {time.perf_counter() - t0:.2f} s")
    burn = 2000  # records = 5000 time units
    q = traj.q[:, burn:, 0]
    right = dg.estimate_mean((q > 0).astype(float))
    q2 = dg.estimate_mean(q**2)
    q2_exact = dg.gibbs_moment(pot, TAU, lambda x: x * x)
    tk = dg.kinetic_temperature(traj, burn_in=burn)
    tc = dg.configurational_temperature(traj, burn_in=burn)
    tv = dg.gibbs_distance(traj, burn_in=burn)
    tv_chain = dg.gibbs_distance(traj, burn_in=burn, per_chain=True)
    cross = dg.barrier_crossings(traj.q[..., 0])
    t_total = traj.t[-1]
    ess = dg.effective_sample_size(q)
    ess_bulk = dg.effective_sample_size(q, method="bulk")
    rh, rh_rank = dg.rhat(q), dg.rhat(q, method="rank")
    iat = dg.integrated_autocorrelation_time(q) * traj.record_every * traj.h
    rows = [
        ["⟨q²⟩", fmt(q2), f"{q2_exact:.6f} (quadrature)", f"{q2.z(q2_exact):+.1f}"],
        ["P(q > 0)", fmt(right), "0.5", f"{right.z(0.5):+.1f}"],
        ["T_conf = ⟨U′²⟩/⟨U″⟩", fmt(tc), "0.25", f"{tc.z(TAU):+.1f}"],
        ["T_kin = ⟨p²⟩", fmt(tk), "0.25 (BAOAB: O(h²) low)", f"{tk.z(TAU):+.1f}"],
        ["TV(histogram, Gibbs), pooled, 50 bins", f"{tv.value:.4f}",
         f"noise floor {tv.noise_floor:.4f}", "-"],
        ["TV per chain (median)", f"{np.median(tv_chain.value):.4f}",
         f"noise floor {np.median(tv_chain.noise_floor):.4f}", "-"],
        ["well crossings per chain (mean, min)", f"{cross.mean():.1f}, {cross.min()}",
         f"rate {cross.mean() / t_total:.5f} per unit time", "-"],
        ["ESS of q (mean / bulk)", f"{ess:.0f} / {ess_bulk:.0f}",
         f"of {q.size} draws; IAT = {iat:.1f} time units", "-"],
        ["split R-hat / rank R-hat", f"{rh:.4f} / {rh_rank:.4f}", "< 1.01", "-"],
    ]
    table = markdown_table(["quantity", "estimate ± SE", "exact / reference", "z"], rows)
    print(table)
    # plots: histogram vs Gibbs; cumulative crossings vs time (linear growth); ACF
    m = dg.gibbs_marginal(pot, TAU, (0,))
    fig = Figure(figsize=(9.5, 3))
    ax1, ax2, ax3 = (fig.add_subplot(1, 3, k) for k in (1, 2, 3))
    ax1.hist(q.ravel(), bins=100, density=True, alpha=0.5, label="64 chains")
    ax1.plot(m.axes[0], m.density, "k", lw=1, label="exp(−U/τ)/Z")
    ax1.set_xlabel("q")
    ax1.set_title(f"histogram, TV = {tv.value:.4f}", fontsize=9)
    ax1.legend(fontsize=7)
    counts = np.array([dg.barrier_crossings(traj.q[:, : k + 1, 0]).mean()
                       for k in range(0, traj.n_draws, 500)])
    ax2.plot(traj.t[::500], counts, lw=1.2)
    ax2.set_xlabel("t")
    ax2.set_ylabel("crossings per chain")
    ax2.set_title("well crossings grow linearly", fontsize=9)
    lag = 400
    acf = dg.autocorrelation(q, lag)
    ax3.plot(np.arange(lag + 1) * traj.record_every * traj.h, acf, lw=1)
    ax3.axhline(0, color="k", lw=0.5)
    ax3.set_xlabel("lag (time)")
    ax3.set_title(f"ACF of q, IAT = {iat:.0f}", fontsize=9)
    save(fig, "ergodicity_double_well.png")
    return table


def bias_sweep() -> str:
    pot = DoubleWell()
    system = dynopt.systems.Langevin(pot, gamma=1.0, temperature=TAU)
    q2_exact = dg.gibbs_moment(pot, TAU, lambda x: x * x)
    rows = []
    for h in (0.05, 0.1, 0.2, 0.3):
        n = round(50_000 / h)
        traj = dynopt.integrate(system, "BAOAB", [1.0], h=h, n_steps=n, n_chains=256, seed=3,
                                record_every=max(1, n // 20_000))
        burn = 200
        tc = dg.configurational_temperature(traj, burn_in=burn)
        tk = dg.kinetic_temperature(traj, burn_in=burn)
        q2 = dg.estimate_mean(traj.q[:, burn:, 0] ** 2)
        rows.append([h, f"{float(tc.value) - TAU:+.5f} ± {float(tc.se):.1g}",
                     f"{float(tk.value) - TAU:+.5f} ± {float(tk.se):.1g}",
                     f"{-TAU * h * h * 8 / 4:+.5f}",
                     f"{float(q2.value) - q2_exact:+.5f} ± {float(q2.se):.1g}"])
    table = markdown_table(["h", "T_conf − τ", "T_kin − τ", "−τh²U″(±1)/4", "⟨q²⟩ − exact"],
                           rows)
    print("\n2. bias sweep (256 chains x 5e4 time units, seed 3)")
    print(table)
    return table


def nose_hoover() -> str:
    pot = Harmonic(1.0)
    kT = 1.0
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(16, 1)) * np.sqrt(kT)
    rows, trajs = [], {}
    for name, system in (("Nosé–Hoover (single)", dynopt.systems.NoseHoover(pot, temperature=kT,
                                                                           tau=1.0)),
                         ("Nosé–Hoover chain, M = 3",
                          dynopt.systems.NoseHooverChain(pot, temperature=kT, tau=1.0,
                                                         chain_length=3))):
        t0 = time.perf_counter()
        traj = dynopt.integrate(system, None, [0.0], p0=p0, h=0.05, n_steps=200_000,
                                n_chains=16, seed=0, record_every=10)
        wall = time.perf_counter() - t0
        trajs[name] = traj
        burn = 1000
        q = traj.q[:, burn:, 0]
        tv = dg.gibbs_distance(traj, burn_in=burn)
        per = dg.gibbs_distance(traj, burn_in=burn, per_chain=True)
        kurt = (q**4).mean(axis=1) / (q**2).mean(axis=1) ** 2
        drift = dg.energy_drift(traj)
        rows.append([name, f"{float(dg.kinetic_temperature(traj, burn_in=burn).value):.4f}",
                     f"{tv.value:.4f} ({tv.noise_floor:.4f})",
                     f"{np.median(per.value):.3f} ({np.median(per.noise_floor):.4f})",
                     f"{kurt.min():.2f} – {kurt.max():.2f}",
                     f"{drift.max_abs_error:.1e}", f"{wall:.1f} s"])
    table = markdown_table(
        ["thermostat", "T_kin (target 1)", "TV pooled (floor)", "TV per chain, median (floor)",
         "⟨q⁴⟩/⟨q²⟩² per chain (Gaussian: 3)", "max abs Δ invariant", "run time"], rows)
    print("\n3. Nosé–Hoover vs chain, 1-D harmonic oscillator")
    print(table)
    fig = Figure(figsize=(9.5, 3))
    x = np.linspace(-4, 4, 400)
    for k, (name, traj) in enumerate(trajs.items()):
        ax = fig.add_subplot(1, 3, k + 1)
        for c in (0, 1, 2):
            ax.hist(traj.q[c, 1000:, 0], bins=80, density=True, histtype="step", lw=1,
                    label=f"chain {c}")
        ax.plot(x, np.exp(-x * x / 2) / np.sqrt(2 * np.pi), "k", lw=1.2, label="N(0, kT/ω²)")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("q")
        ax.legend(fontsize=6)
    ax = fig.add_subplot(1, 3, 3)
    nh = trajs["Nosé–Hoover (single)"]
    ax.plot(nh.q[0, 1000:, 0], nh.p[0, 1000:, 0], ",", alpha=0.3)
    ax.set_xlabel("q")
    ax.set_ylabel("p")
    ax.set_title("single NH, chain 0: (q, p) of a torus, not a Gaussian", fontsize=9)
    save(fig, "nose_hoover_ergodicity.png")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    t1 = langevin_double_well()
    t2 = bias_sweep()
    t3 = nose_hoover()
    if args.update_docs:
        body = (f"Langevin BAOAB, double well, τ = 0.25 (64 chains × 10⁶ steps, statistics after "
                f"5000 time units):\n\n{t1}\n\nStep-size sweep:\n\n{t2}\n\n"
                f"Nosé–Hoover on the 1-D harmonic oscillator:\n\n{t3}")
        path = update_section(ROOT / "docs" / "studies.md", "ergodicity-study", body)
        print(f"updated {path}")


if __name__ == "__main__":
    main()
