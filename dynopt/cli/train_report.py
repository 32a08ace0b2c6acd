"""What ``dynopt train`` prints and plots from its :class:`~dynopt.monitor.TrainingMonitor`.

:func:`window_summary` condenses the records of one evaluation window (per-layer kinetic
temperature 2⟨K_L⟩/n_L, configurational temperature Σ|∇_L U|²/ΣΔ̂U_L, mean ξ, mean energy);
:func:`final_table` gives per-layer temperatures with batch-means standard errors over the
second half of the run; :func:`make_plots` writes ``monitor.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..trajectory import Trajectory

__all__ = ["final_table", "layer_names", "make_plots", "window_summary"]


def layer_names(traj: Trajectory) -> list[str]:
    """The recorded blocks, in parameter order."""
    ex = traj.extras
    return [n for n in traj.system.potential.layers
            if f"kinetic:{n}" in ex or f"grad2:{n}" in ex]


def _sizes(traj: Trajectory) -> dict[str, int]:
    return {n: sl.stop - sl.start for n, sl in traj.system.potential.layers.items()}


def window_summary(traj: Trajectory, start: int) -> dict[str, Any]:
    """Means over records ``start:`` (one chain): per-layer T_kin and T_conf, ξ, energy."""
    ex = traj.extras
    sizes = _sizes(traj)
    out: dict[str, Any] = {"t_kin": {}, "t_conf": {}, "records": traj.n_draws - start}
    if start >= traj.n_draws:  # no record in this window (record_every > its steps)
        return out
    for name in layer_names(traj):
        if f"kinetic:{name}" in ex:
            k = ex[f"kinetic:{name}"][0, start:]  # all NaN: the layer has no momenta
            out["t_kin"][name] = (float("nan") if np.isnan(k).all() else
                                  float(np.nanmean(2 * k) / sizes[name]))
        if f"grad2:{name}" in ex:
            num = float(np.sum(ex[f"grad2:{name}"][0, start:]))
            den = float(np.sum(ex[f"laplacian:{name}"][0, start:]))
            out["t_conf"][name] = num / den if den != 0 else float("nan")
    xis = [float(np.nanmean(v[0, start:])) for k, v in ex.items() if k.startswith("xi:")]
    out["xi"] = float(np.mean(xis)) if xis else None
    out["energy"] = float(np.mean(traj.energy[0, start:]))
    lam = ex.get("lambda_max")
    if lam is not None and np.any(np.isfinite(lam[0, start:])):
        k = np.flatnonzero(np.isfinite(lam[0]))
        k = k[k >= start][-1] if np.any(k >= start) else k[-1]
        out["lambda_max"] = float(lam[0, k])
        out["stability_limit"] = float(ex["stability_limit"][0, k])
    return out


def format_window(s: dict[str, Any]) -> str:
    """One line: T_kin and T_conf per layer, ξ, energy, λ_max/λ_c."""
    def fmt(d: dict[str, float]) -> str:
        return " ".join(f"{v:.2e}" if np.isfinite(v) else "-" for v in d.values())

    if s.get("records", 1) <= 0:
        return "(no new records in this window: lower --record-every)"
    parts = []
    if s["t_kin"]:
        parts.append(f"T_kin [{fmt(s['t_kin'])}]")
    if s["t_conf"]:
        parts.append(f"T_conf [{fmt(s['t_conf'])}]")
    if s["xi"] is not None:
        parts.append(f"xi {s['xi']:.3e}")
    parts.append(f"H {s['energy']:.4f}")
    if "lambda_max" in s:
        if np.isfinite(s["stability_limit"]):
            past = " (past the limit)" if s["lambda_max"] >= s["stability_limit"] else ""
            parts.append(f"lam_max {s['lambda_max']:.3g} / limit {s['stability_limit']:.3g}"
                         f"{past}")
        else:  # BBI, ECDSep, DDPNOpt: no linear stability limit
            parts.append(f"lam_max {s['lambda_max']:.3g} (no linear limit)")
    return "  ".join(parts)


def final_table(traj: Trajectory, temperature: float | None) -> str:
    """Per-layer temperatures with standard errors over the second half of the records."""
    from ..observables import layer_temperatures

    burn = traj.n_draws // 2
    if traj.n_draws - burn < 8:
        return "(too few records for standard errors)"
    temps = layer_temperatures(traj, burn_in=burn)
    rows = [("layer", "n", "T_kin ± SE", "T_conf ± SE")]
    for name, t in temps.items():
        kin = "-" if t.kinetic is None else f"{t.kinetic.value:.3e} ± {t.kinetic.se:.1e}"
        conf = ("-" if t.configurational is None
                else f"{t.configurational.value:.3e} ± {t.configurational.se:.1e}")
        rows.append((name, str(t.n), kin, conf))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    target = "" if temperature is None else f" (target τ = {temperature:g})"
    return (f"per-layer temperatures over records {burn}..{traj.n_draws - 1}{target}:\n"
            + "\n".join(lines))


def make_plots(traj: Trajectory, out: Path, title: str, temperature: float | None) -> Path:
    """``monitor.png``: loss and energy, per-layer T_kin and T_conf (window means), λ_max."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ex = traj.extras
    steps = traj.t
    has_lam = "lambda_max" in ex and np.any(np.isfinite(ex["lambda_max"]))
    fig = Figure(figsize=(12 if has_lam else 9, 3.4))
    n = 3 if has_lam else 2
    ax = fig.add_subplot(1, n, 1)
    ax.plot(steps, ex["loss"][0], lw=1, label="train loss (full batch)")
    ax.plot(steps, traj.energy[0], lw=1, ls="--", label="energy H = U + K")
    ax.set_xlabel("optimizer step")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    ax = fig.add_subplot(1, n, 2)
    w = max(1, traj.n_draws // 20)
    sizes = _sizes(traj)
    for i, name in enumerate(layer_names(traj)):
        if f"kinetic:{name}" in ex:
            k = 2 * ex[f"kinetic:{name}"][0] / sizes[name]
            ax.plot(steps, _smooth(k, w), color=f"C{i}", lw=1, label=f"T_kin {name}")
        if f"grad2:{name}" in ex:
            num = _smooth(ex[f"grad2:{name}"][0], w)
            den = _smooth(ex[f"laplacian:{name}"][0], w)
            with np.errstate(divide="ignore", invalid="ignore"):
                ax.plot(steps, num / den, color=f"C{i}", lw=0.8, ls=":", label=f"T_conf {name}")
    if temperature:
        ax.axhline(temperature, color="k", lw=0.8, ls="--", label="τ")
    ax.set_yscale("symlog", linthresh=max(temperature or 1e-6, 1e-12))
    ax.set_xlabel("optimizer step")
    ax.set_title(f"per-layer temperatures (running means over {w} records)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    if has_lam:
        ax = fig.add_subplot(1, n, 3)
        ok = np.isfinite(ex["lambda_max"][0])
        ax.plot(steps[ok], ex["lambda_max"][0, ok], "o-", ms=3, label="λ_max")
        ax.plot(steps[ok], ex["stability_limit"][0, ok], "r--", label="stability limit")
        ax.set_xlabel("optimizer step")
        ax.legend(fontsize=7)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "monitor.png"
    fig.savefig(path, dpi=80)
    return path


def _smooth(x: np.ndarray, w: int) -> np.ndarray:
    c = np.cumsum(np.insert(x, 0, 0.0))
    out = np.empty_like(x)
    for i in range(len(x)):
        lo = max(0, i - w + 1)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out
