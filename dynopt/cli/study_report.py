"""Analysis, table and plots of one ``dynopt study`` run (also usable from scripts).

:func:`analyze` turns a :class:`~dynopt.Trajectory` into a JSON-ready summary built only from
:mod:`dynopt.diagnostics`; :func:`format_table` prints it; :func:`make_plots` writes PNGs with
matplotlib's Agg canvas (no GUI backend is touched).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import diagnostics as dg
from .._files import json_text  # noqa: F401  (re-exported: the study's JSON writer)
from ..trajectory import Trajectory

__all__ = ["analyze", "format_table", "make_plots"]

#: Lags shown in the autocorrelation plot, at most.
MAX_PLOT_LAG = 400


def _estimate(est: dg.Estimate, target: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": float(est.value), "se": float(est.se), "target": target}
    out["z"] = None if target is None or not est.se > 0 else float(est.z(target))
    return out


def _try(fn: Any) -> Any:
    """Run ``fn``; a ValueError becomes ``{"unavailable": reason}``."""
    try:
        return fn()
    except ValueError as err:
        return {"unavailable": str(err)}


def analyze(traj: Trajectory, *, burn_in: int = 0) -> dict[str, Any]:
    """Diagnostics of a run as a dict (energy, temperatures, ESS/R-hat, Gibbs distances).

    Args:
        traj: The run.
        burn_in: Leading draws excluded from the equilibrium statistics (not from the
            conservation check, which uses the whole run).
    """
    system = traj.system
    tau = getattr(system, "temperature", None)
    canonical = tau is not None and tau > 0  # a Gibbs target exists
    q = traj.q[:, burn_in:]
    out: dict[str, Any] = {
        "system": repr(system),
        "integrator": traj.integrator.name,
        "h": traj.h,
        "chains": traj.n_chains,
        "draws": traj.n_draws,
        "record_every": traj.record_every,
        "burn_in_draws": burn_in,
        "seed": traj.seed,
        "backend": traj.backend,
        "temperature": tau,
    }
    if not system.is_stochastic:
        quantity = "invariant" if "invariant" in traj.extras else "energy"
        out["conservation"] = {"quantity": quantity, "conservative": system.is_conservative,
                               **dg.energy_drift(traj).as_dict()}
        if tau is not None and tau > 0:  # a thermostat's scale: d·k_BT per chain
            out["conservation"]["thermal_scale"] = traj.dim * float(tau)
    else:
        target = None
        if canonical:
            u = _try(lambda: dg.gibbs_mean_potential(system.potential, tau))
            if isinstance(u, float):
                target = u + (0.5 * traj.dim * tau if system.has_momentum else 0.0)
        out["energy"] = _estimate(dg.estimate_mean(traj.energy[:, burn_in:]), target)
    if traj.p is not None and system.has_kinetic_temperature:
        out["kinetic_temperature"] = _estimate(
            dg.kinetic_temperature(traj, burn_in=burn_in), tau if canonical else None)
    out["configurational_temperature"] = _estimate(
        dg.configurational_temperature(traj, burn_in=burn_in), tau if canonical else None)
    ess = np.atleast_1d(dg.effective_sample_size(q))
    rh = np.atleast_1d(dg.rhat(q))
    out["ess_q"] = {"min": _nan_extreme(np.nanmin, ess), "per_coord": ess.tolist()}
    out["rhat_q"] = {"max": _nan_extreme(np.nanmax, rh), "per_coord": rh.tolist()}
    if canonical:
        out["gibbs_tv_q0"] = _try(lambda: _distance(q, system.potential, tau, (0,)))
        if traj.n_chains > 1:
            out["gibbs_tv_q0_per_chain"] = _try(lambda: _per_chain(q, system.potential, tau))
        if traj.dim >= 2:
            out["gibbs_tv_q0q1"] = _try(lambda: _distance(q, system.potential, tau, (0, 1),
                                                          bins=30))
    return out


def _nan_extreme(reduce: Any, values: np.ndarray) -> float:
    """``np.nanmin``/``np.nanmax`` of ``values``; NaN (no warning) when all are NaN (q at rest)."""
    return float("nan") if np.isnan(values).all() else float(reduce(values))


def _distance(q: np.ndarray, potential: Any, tau: float, coords: tuple[int, ...],
              bins: int = 50) -> dict[str, Any]:
    d = dg.gibbs_distance(q, potential, tau, coords, bins=bins)
    return {"value": d.value, "noise_floor": d.noise_floor, "bins": bins}


def _per_chain(q: np.ndarray, potential: Any, tau: float) -> dict[str, Any]:
    d = dg.gibbs_distance(q, potential, tau, (0,), bins=50, per_chain=True)
    return {"median": float(np.median(d.value)), "max": float(np.max(d.value)),
            "median_noise_floor": float(np.median(d.noise_floor)), "bins": 50}


def fmt_number(x: float | None, digits: int = 4) -> str:
    """Fixed point in [1e-3, 1e5), scientific otherwise, "-" for None."""
    if x is None:
        return "-"
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.{digits}f}"
    return f"{x:.{digits - 1}e}"


_fmt = fmt_number


def fmt_estimate(value: float | None, se: float | None, digits: int = 4) -> str:
    """``value ± SE``, the SE to 2 significant digits and the value to the SE's second
    significant digit (at least ``digits`` decimals, as :func:`fmt_number`), so the deviation
    that the z-score reports shows in the value: ``0.001021 ± 1.1e-05``, not
    ``0.0010 ± 1.1e-05``. Scientific values get as many mantissa digits:
    ``2.50123e-05 ± 1.1e-09``."""
    if value is None:
        return "-"
    if se is None or not math.isfinite(se) or se <= 0 or not math.isfinite(value):
        return f"{fmt_number(value, digits)} ± {'-' if se is None else f'{se:.2g}'}"
    last = math.floor(math.log10(float(f"{se:.2g}"))) - 1  # decimal exponent of SE's 2nd digit
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.{max(digits, -last)}f} ± {se:.2g}"
    lead = math.floor(math.log10(abs(value)))
    return f"{value:.{max(digits - 1, lead - last)}e} ± {se:.2g}"


def align(rows: list[tuple[str, str, str, str]]) -> list[str]:
    """Rows under the header (quantity, value, target, z), padded to common column widths."""
    head = ("quantity", "value", "target", "z")
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(4)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return [line.format(*head), line.format(*("-" * w for w in widths)),
            *(line.format(*r) for r in rows)]


def relative_row(c: dict[str, Any]) -> tuple[str, str, str, str]:
    """max |ΔH| relative to |H(0)|, or, for a thermostat whose |H(0)| is below its thermal
    scale d·k_BT (a run started at a minimum: H(0) ≈ 0 makes the ratio to it meaningless), to
    that scale."""
    name, err, rel = c["quantity"], c["max_abs_error"], c["max_rel_error"]
    scale = c.get("thermal_scale")
    h0 = err / rel if rel > 0 else math.inf
    if scale is not None and h0 < scale:
        return (f"max |Δ{name}|/(d·k_BT)", _fmt(err / scale), "-", "-")
    return (f"max |Δ{name}|/|{name}(0)|", _fmt(rel), "-", "-")


def drift_row(c: dict[str, Any]) -> tuple[str, str, str, str]:
    """The drift row: a conservation check (target 0, z) for a conservative flow; for a
    dissipative one (PortHamiltonian with γ > 0) the rate of change, with no target."""
    name = c["quantity"]
    value = fmt_estimate(c["slope"], c["slope_se"])
    if not c.get("conservative", True):
        return (f"{name} change d/dt (dissipative)", value, "-", "-")
    z = "-" if not c["slope_se"] > 0 else f"{c['slope'] / c['slope_se']:+.1f}"
    return (f"{name} drift d/dt", value, "0", z)


def format_table(summary: dict[str, Any]) -> str:
    """The summary as an aligned text table."""
    rows: list[tuple[str, str, str, str]] = []

    def est_row(label: str, e: dict[str, Any]) -> None:
        z = "-" if e["z"] is None else f"{e['z']:+.1f}"
        rows.append((label, fmt_estimate(e["value"], e["se"]), _fmt(e["target"]), z))

    if "conservation" in summary:
        c = summary["conservation"]
        name = c["quantity"]
        rows.append((f"max |Δ{name}|", _fmt(c["max_abs_error"]), "-", "-"))
        rows.append(relative_row(c))
        rows.append(drift_row(c))
    if "energy" in summary:
        est_row("mean energy <H>", summary["energy"])
    if "kinetic_temperature" in summary:
        est_row("kinetic temperature", summary["kinetic_temperature"])
    est_row("configurational temperature", summary["configurational_temperature"])
    rows.append(("ESS of q (min over coords)", f"{summary['ess_q']['min']:.0f}", "-", "-"))
    rows.append(("R-hat of q (max over coords)", f"{summary['rhat_q']['max']:.4f}", "< 1.01",
                 "-"))
    labels = (("gibbs_tv_q0", "TV to Gibbs, q0"),
              ("gibbs_tv_q0_per_chain", "TV to Gibbs, q0, per chain (median)"),
              ("gibbs_tv_q0q1", "TV to Gibbs, (q0,q1)"))
    for key, label in labels:
        if key not in summary:
            continue
        g = summary[key]
        if "unavailable" in g:
            rows.append((label, "n/a", "-", g["unavailable"].split(":")[0]))
        elif "median" in g:
            rows.append((label, _fmt(g["median"]), f"~{_fmt(g['median_noise_floor'])} (noise)",
                         "-"))
        else:
            rows.append((label, _fmt(g["value"]), f"~{_fmt(g['noise_floor'])} (noise)", "-"))
    out = align(rows)
    out.append("z = (value − target)/SE with batch-means SEs; discretization bias is not "
               "included\n(e.g. BAOAB's integer-step kinetic temperature is low by O(h²): "
               "τ·h²ω²/4 on a harmonic mode).")
    return "\n".join(out)


#: The plots of a potential study and of a network study (``--model``), by file name. A run
#: removes those of an earlier run into the same ``--out`` that it did not write itself.
STUDY_PLOTS = ("energy.png", "histogram.png", "autocorrelation.png")
NETWORK_PLOTS = ("loss.png", "temperatures.png")


def remove_stale_plots(out: Path, written: list[str], command: str = "dynopt study") -> None:
    """Remove the study plots in ``out`` that this run did not write (``--no-plots``, an
    interrupted run, the other kind of study) and say so on stderr, as for a replaced
    summary."""
    from .._files import remove_stale

    removed = remove_stale(out, STUDY_PLOTS + NETWORK_PLOTS, keep=written)
    if removed:
        print(f"{command}: warning: removed the plots of an earlier run that do not show this "
              f"one: {', '.join(map(str, removed))}", file=sys.stderr)


def make_plots(traj: Trajectory, summary: dict[str, Any], out: Path, *,
               burn_in: int = 0) -> list[str]:
    """Write energy.png, histogram.png and autocorrelation.png to ``out``; return the paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig: Figure, name: str) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=90)
        paths.append(str(path))

    system = traj.system
    tau = summary.get("temperature")
    t = traj.t
    # 1. energy or invariant against time
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    if "conservation" in summary:
        e = traj.conserved - traj.conserved[:, :1]
        for c in range(min(4, traj.n_chains)):
            ax.plot(t, e[c], lw=0.6, label=f"chain {c}")
        ax.set_ylabel(f"{summary['conservation']['quantity']}(t) − value at t=0")
        ax.set_title(f"conservation: {summary['integrator']}, h = {traj.h}")
    else:
        mean = traj.energy.mean(axis=0)
        ax.plot(t, traj.energy[0], lw=0.4, alpha=0.6, label="chain 0")
        ax.plot(t, mean, lw=1.0, color="k", label=f"mean of {traj.n_chains} chains")
        target = summary["energy"]["target"]
        if target is not None:
            ax.axhline(target, color="C3", ls="--", lw=1, label=r"Gibbs $\langle H\rangle$")
        ax.set_ylabel("energy H")
        ax.set_title(f"energy: {summary['integrator']}, h = {traj.h}")
    ax.set_xlabel("t")
    ax.legend(fontsize=7, loc="upper right")
    save(fig, STUDY_PLOTS[0])
    # 2. histogram against the exact density
    q = traj.q[:, burn_in:]
    two = traj.dim >= 2
    fig = Figure(figsize=(9 if two else 5, 3.6))
    ax = fig.add_subplot(1, 2 if two else 1, 1)
    ax.hist(q[..., 0].ravel(), bins=80, density=True, alpha=0.5, label="samples")
    if tau and tau > 0 and "unavailable" not in summary.get("gibbs_tv_q0", {"unavailable": 1}):
        m = dg.gibbs_marginal(system.potential, tau, (0,))
        ax.plot(m.axes[0], m.density, color="k", lw=1.2, label=f"Gibbs, τ = {tau}")
    ax.set_xlabel("q0")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    if two:
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.hist2d(q[..., 0].ravel(), q[..., 1].ravel(), bins=60, cmap="Blues")
        if tau and tau > 0 and "unavailable" not in summary.get("gibbs_tv_q0q1",
                                                                {"unavailable": 1}):
            lims = (ax2.get_xlim(), ax2.get_ylim())
            m2 = dg.gibbs_marginal(system.potential, tau, (0, 1),
                                  grid=(np.linspace(*lims[0], 120), np.linspace(*lims[1], 120)))
            ax2.contour(m2.axes[0], m2.axes[1], m2.density.T, levels=6, colors="k",
                        linewidths=0.7)
        ax2.set_xlabel("q0")
        ax2.set_ylabel("q1")
        ax2.set_title("2-D histogram, exact contours", fontsize=9)
    save(fig, STUDY_PLOTS[1])
    # 3. autocorrelation of q
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    n = q.shape[1]
    lag = max(1, min(n - 1, MAX_PLOT_LAG))
    acf = dg.autocorrelation(q, lag)
    lags = np.arange(lag + 1) * traj.record_every * traj.h
    for i in range(min(traj.dim, 4)):
        ax.plot(lags, acf[:, i], lw=1, label=f"q{i}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("lag (time)")
    ax.set_ylabel("autocorrelation")
    ax.set_title(f"chain-averaged ACF, ESS(q) ≥ {summary['ess_q']['min']:.0f}", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, STUDY_PLOTS[2])
    return paths


def default_record_every(steps: int, target: int = 20_000) -> int:
    """Records stay at or below ``target`` (+1) per chain."""
    return max(1, math.ceil(steps / target))
