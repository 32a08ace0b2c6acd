"""``dynopt study --model mlp --data spirals|digits|wine``: a replica study of a real network.

The network's full-batch training loss (plus ``--weight-decay`` λ|θ|²/2, a Gaussian prior) is
the potential (:class:`~dynopt.potentials.NetworkLoss`); ``--chains`` replicas start from
independent initializations (torch seeds ``seed + c``) and are integrated together by the torch
backend with the chosen system and scheme, recording observables instead of θ: train and
held-out loss, per-layer kinetic energy and configurational-temperature terms, and 4 fixed
random projections of θ. The table reports the energy or invariant drift (deterministic
systems) or the mean energy, per-layer kinetic and configurational temperatures with
batch-means standard errors against τ, ESS and R-hat of the loss and of the projections, and
λ_max of the Hessian at the final state of each replica against the scheme's linear stability
limit (:func:`dynopt.diagnostics.stability_limit`). Plots: ``loss.png``, ``temperatures.png``.

Defaults for ``--model`` runs (when the option is not given): τ = 1e-3, 2000 steps, 8 chains,
a record every 10 steps; float64; one torch thread (``--threads``: these small models gain
nothing from intra-op threads, and on a shared machine a second thread made each step up to
18× slower in our measurements).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import diagnostics as dg
from .._validation import check_int, check_nonnegative, check_positive, check_probability
from .study_report import (
    NETWORK_PLOTS,
    align,
    drift_row,
    fmt_estimate,
    json_text,
    remove_stale_plots,
)
from .study_report import fmt_number as _fmt

__all__ = ["MODEL_DEFAULTS", "analyze_network", "run_network"]

#: Defaults that replace the potential study's when ``--model`` is given and the option is not.
MODEL_DEFAULTS = {"temperature": 1e-3, "steps": 2000, "chains": 8}


def _build_model(data: str, seed: int) -> tuple[Any, torch.nn.Module, Any]:
    from ..data import load_digits_split, load_wine_split, make_spirals
    from ..training import loss_function, mlp

    if data == "spirals":
        split = make_spirals(seed=seed)
        make = lambda: mlp(2, 1, (100,), sigmoid_output=True)  # noqa: E731
    elif data == "digits":
        split = load_digits_split(seed=seed)
        make = lambda: mlp(split.n_features, split.n_classes, (32,))  # noqa: E731
    elif data == "wine":
        split = load_wine_split(seed=seed)
        make = lambda: mlp(split.n_features, split.n_classes, (32,))  # noqa: E731
    else:
        raise ValueError(f"data must be 'spirals', 'digits' or 'wine', got {data!r}")
    return split, make, loss_function(split)


def _value(args: argparse.Namespace, name: str) -> Any:
    v = getattr(args, name)
    return MODEL_DEFAULTS[name] if getattr(v, "is_default", False) else v


def run_network(args: argparse.Namespace) -> int:
    """The ``--model`` branch of ``dynopt study`` (torch intra-op threads: ``--threads``)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(check_int("--threads", getattr(args, "threads", 1), minimum=1))
    except (ValueError, TypeError) as err:
        print(f"dynopt study: error: {err}", file=sys.stderr)
        return 2
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    from .. import integrate
    from .._files import prepare_output_dir, write_text_atomic
    from ..errors import DivergenceError, Interrupted
    from ..integrators import resolve
    from ..observables import Projections
    from ..potentials import NetworkLoss
    from .study_registry import build_system, check_scheme

    try:
        if args.model != "mlp":
            raise ValueError(f"model must be 'mlp', got {args.model!r}")
        for option, value, default in (("--potential", args.potential, "double-well"),
                                       ("--dim", args.dim, None), ("--q0", args.q0, None)):
            if value != default:  # the network's loss is the potential, θ its coordinates
                raise ValueError(f"{option} does not apply with --model (got {value!r}): the "
                                 "potential is the network's training loss")
        if args.backend == "numba" and not getattr(args.backend, "is_default", False):
            raise ValueError("--backend numba cannot run --model: the fused kernel cannot call "
                             "a network, so network studies run on torch (--backend torch)")
        out = prepare_output_dir(args.out, "--out")  # before the run, not after it
        h = check_positive("--h", args.h)
        tau = check_nonnegative("--temperature", _value(args, "temperature"))
        steps = check_int("--steps", _value(args, "steps"), minimum=1)
        chains = check_int("--chains", _value(args, "chains"), minimum=1)
        seed = check_int("--seed", args.seed, minimum=0, maximum=2**64 - 1)
        wd = check_nonnegative("--weight-decay", args.weight_decay)
        burn = check_probability("--burn-in", args.burn_in, open_right=True)
        every = (max(1, steps // 200) if args.record_every is None
                 else check_int("--record-every", args.record_every, minimum=1))
        if steps // every < 8:
            raise ValueError(f"need at least 8 records per chain: steps={steps}, "
                             f"record_every={every}")
        split, make, loss_fn = _build_model(args.data, seed)
        thetas = []
        for c in range(chains):
            torch.manual_seed((seed + c) % 2**64)  # (torch takes 64 bits)
            model = make()
            thetas.append(torch.nn.utils.parameters_to_vector(model.parameters()).detach())
        q0 = torch.stack(thetas).to(torch.float64)
        potential = NetworkLoss(model, loss_fn, (split.x_train, split.y_train), weight_decay=wd,
                                heldout=(split.x_test, split.y_test))
        ns = argparse.Namespace(**{**vars(args), "temperature": tau})
        system = build_system(args.system, potential, ns)
        integ = resolve(args.integrator if args.integrator is not None else system.default_scheme)
        check_scheme(system, integ)
    except (ValueError, TypeError) as err:
        print(f"dynopt study: error: {err}", file=sys.stderr)
        return 2
    p0 = None
    if system.has_momentum and not system.is_stochastic:
        g = torch.Generator().manual_seed(seed)
        p0 = torch.randn(q0.shape, generator=g, dtype=torch.float64) * math.sqrt(tau)
    obs = ["loss", "heldout_loss", "layer_configurational", Projections(4, seed=seed)]
    if system.has_momentum and system.has_kinetic_temperature:
        obs.insert(2, "layer_kinetic")
    print(f"dynopt study: {type(system).__name__} with {integ.name}, h = {h}, τ = {tau} on an MLP "
          f"({potential.dim} parameters) for {split.name}, weight decay {wd}")
    print(f"{chains} replicas (independent initializations) x {steps:,} steps, recording every "
          f"{every} steps (torch, float64, {args.noise} noise, seed {seed})")
    t0 = time.perf_counter()
    interrupted = False
    try:
        traj = integrate(system, integ, q0, h=h, n_steps=steps, backend="torch", seed=seed,
                         p0=p0, record_every=every, dtype=torch.float64, observables=obs,
                         noise=args.noise)
    except DivergenceError as err:
        print(f"dynopt study: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:  # Ctrl-C: keep the records completed so far, as the plain study
        traj = err.trajectory
        if traj is None or traj.n_draws < 9:
            print("dynopt study: interrupted before 8 records per chain were complete; "
                  "nothing to keep", file=sys.stderr)
            return 130
        interrupted = True
    wall = time.perf_counter() - t0
    burn_in = min(int(burn * traj.n_draws), traj.n_draws - 8)
    summary = analyze_network(traj, system, integ, h, tau, make, loss_fn, split, wd,
                              burn_in=burn_in)
    summary["wall_time_s"] = wall
    summary["interrupted"] = interrupted
    # the options as run: --model's own defaults (MODEL_DEFAULTS) and the torch backend, not
    # the potential study's defaults that argparse filled in
    used = {**vars(args), "temperature": tau, "steps": steps, "chains": chains,
            "backend": "torch"}
    summary["config"] = {k: (float(v) if isinstance(v, float) else v)
                         for k, v in used.items() if k != "func"}
    print(f"integration: {wall:.1f} s; statistics over draws {burn_in}..{traj.n_draws - 1}\n")
    print(format_network_table(summary))
    path = out / "summary.json"
    if write_text_atomic(path, json_text(summary)):  # before the plots: Ctrl-C there keeps it
        print(f"dynopt study: warning: replaced the existing {path}", file=sys.stderr)
    if not args.no_plots:
        try:
            summary["plots"] = network_plots(traj, summary, out, burn_in)
        except KeyboardInterrupt:
            print(f"dynopt study: interrupted while plotting; the results are in {path}",
                  file=sys.stderr)
            return 130
        write_text_atomic(path, json_text(summary))
    remove_stale_plots(out, summary.get("plots", []))
    print(f"\nwrote {path}" + ("" if args.no_plots else " and plots"))
    if interrupted:
        print(f"dynopt study: interrupted after {(traj.n_draws - 1) * every:,} of {steps:,} "
              f"steps; kept the statistics of the records completed so far", file=sys.stderr)
        return 130
    return 0


def _est(e: dg.Estimate, target: float | None) -> dict[str, Any]:
    z = None if target is None or not e.se > 0 else float((e.value - target) / e.se)
    return {"value": float(e.value), "se": float(e.se), "target": target, "z": z}


def analyze_network(traj: Any, system: Any, integ: Any, h: float, tau: float, make: Any,
                    loss_fn: Any, split: Any, wd: float, *, burn_in: int) -> dict[str, Any]:
    """The study's numbers (a JSON-ready dict)."""
    from ..observables import layer_temperatures

    ex = traj.extras
    out: dict[str, Any] = {"system": type(system).__name__, "integrator": integ.name, "h": h,
                           "temperature": tau, "chains": traj.n_chains, "draws": traj.n_draws,
                           "record_every": traj.record_every, "burn_in_draws": burn_in,
                           "dim": system.potential.dim}
    target = tau if getattr(system, "temperature", None) is not None and tau > 0 else None
    if not system.is_stochastic:
        quantity = "invariant" if "invariant" in ex else "energy"
        out["conservation"] = {"quantity": quantity, "conservative": system.is_conservative,
                               **dg.energy_drift(traj).as_dict()}
    else:
        out["energy"] = _est(dg.estimate_mean(traj.energy[:, burn_in:]), None)
    temps = layer_temperatures(traj, burn_in=burn_in)
    out["layers"] = {
        name: {"n": t.n,
               "kinetic": None if t.kinetic is None else _est(t.kinetic, target),
               "configurational": (None if t.configurational is None
                                   else _est(t.configurational, target))}
        for name, t in temps.items()}
    for key in ("loss", "heldout_loss"):
        x = ex[key][:, burn_in:]
        out[key] = {**_est(dg.estimate_mean(x), None),
                    "ess": float(dg.effective_sample_size(x)), "rhat": float(dg.rhat(x))}
    proj = ex["projections"][:, burn_in:]
    out["projections"] = {"ess": np.atleast_1d(dg.effective_sample_size(proj)).tolist(),
                          "rhat": np.atleast_1d(dg.rhat(proj)).tolist()}
    out["curvature"] = _curvature(traj, system, integ, h, make, loss_fn, split, wd)
    return out


def _curvature(traj: Any, system: Any, integ: Any, h: float, make: Any, loss_fn: Any,
               split: Any, wd: float) -> dict[str, Any]:
    """λ_max at each replica's final θ against the scheme's limit."""
    try:
        limit = dg.stability_limit(system, integ, h).lam
    except ValueError as err:
        limit = None
        reason = str(err)
    else:
        reason = None
    if traj.final_state is None:  # interrupted: the final θ was not recorded
        return {"lambda_max": [], "limit": limit, "limit_reason": reason, "ratio_max": None}
    model = make().double()
    q = traj.final_state.q
    lams = []
    for c in range(q.shape[0]):
        torch.nn.utils.vector_to_parameters(q[c].detach().to(torch.float64), model.parameters())
        lams.append(dg.model_top_eigenvalue(model, loss_fn, (split.x_train.double(),
                                                             _target(split.y_train)),
                                            weight_decay=wd, tol=1e-6).value)
    return {"lambda_max": lams, "limit": limit, "limit_reason": reason,
            "ratio_max": None if not limit else float(max(lams) / limit)}


def _target(y: torch.Tensor) -> torch.Tensor:
    return y.double() if y.dtype.is_floating_point else y


def format_network_table(s: dict[str, Any]) -> str:
    """The summary as an aligned text table (quantity, value ± SE, target, z)."""
    rows: list[tuple[str, str, str, str]] = []

    def est(label: str, e: dict[str, Any] | None) -> None:
        if e is None:
            return
        z = "-" if e["z"] is None else f"{e['z']:+.1f}"
        rows.append((label, fmt_estimate(e["value"], e["se"]), _fmt(e["target"]), z))

    if "conservation" in s:
        c = s["conservation"]
        rows.append((f"max |Δ{c['quantity']}|", _fmt(c["max_abs_error"]), "-", "-"))
        rows.append(drift_row(c))
    if "energy" in s:
        est("mean energy <H>", s["energy"])
    for name, t in s["layers"].items():
        est(f"T_kin  {name} (n={t['n']})", t["kinetic"])
        est(f"T_conf {name} (n={t['n']})", t["configurational"])
    for key, label in (("loss", "train loss"), ("heldout_loss", "held-out loss")):
        est(label, s[key])
        rows.append((f"  ESS / R-hat of {label}", f"{s[key]['ess']:.0f} / {s[key]['rhat']:.3f}",
                     "R-hat < 1.01", "-"))
    p = s["projections"]
    rows.append(("ESS of projections (min)", f"{min(p['ess']):.0f}", "-", "-"))
    rows.append(("R-hat of projections (max)", f"{max(p['rhat']):.3f}", "< 1.01", "-"))
    cv = s["curvature"]
    lam = max(cv["lambda_max"], default=None)
    if lam is None:
        rows.append(("λ_max at the end (max over replicas)", "-", "interrupted: no final θ",
                     "-"))
    elif cv["limit"] is None:
        rows.append(("λ_max at the end (max over replicas)", f"{lam:.4g}", "no linear limit",
                     "-"))
    else:  # λ_max and the limit 4/h² (or the like) to 4 significant digits, as the ratio
        verdict = " UNSTABLE" if cv["ratio_max"] >= 1 else ""
        rows.append(("λ_max at the end (max over replicas)", f"{lam:.4g}",
                     f"< {cv['limit']:.4g} (limit)", f"ratio {cv['ratio_max']:.3g}{verdict}"))
    out = align(rows)
    out.append("T_kin = 2<K_L>/n_L, T_conf = <|∇_L U|²>/<Δ_L U> (Hutchinson); z = (value − "
               "target)/SE with batch-means SEs, discretization bias not included.")
    return "\n".join(out)


def network_plots(traj: Any, s: dict[str, Any], out: Path, burn_in: int) -> list[str]:
    """``loss.png`` (train and held-out loss per replica) and ``temperatures.png``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    for c in range(traj.n_chains):
        ax.plot(traj.t, traj.extras["loss"][c], lw=0.6, color=f"C{c % 10}")
        ax.plot(traj.t, traj.extras["heldout_loss"][c], lw=0.6, ls=":", color=f"C{c % 10}")
    ax.set_xlabel("t")
    ax.set_ylabel("loss (solid: train, dotted: held-out)")
    ax.set_title(f"{s['system']} {s['integrator']}, h = {s['h']}, τ = {s['temperature']}: "
                 f"R-hat(loss) = {s['loss']['rhat']:.3f}", fontsize=9)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(out / NETWORK_PLOTS[0], dpi=80)
    paths.append(str(out / NETWORK_PLOTS[0]))
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    names = list(s["layers"])
    x = np.arange(len(names))
    for k, (key, off) in enumerate((("kinetic", -0.15), ("configurational", 0.15))):
        vals = [s["layers"][n][key] for n in names]
        ok = [i for i, v in enumerate(vals) if v is not None]
        if ok:
            ax.errorbar(x[ok] + off, [vals[i]["value"] for i in ok],
                        yerr=[2 * vals[i]["se"] for i in ok], fmt="os"[k], ms=4, capsize=3,
                        label=f"T_{key[:4]} ± 2 SE")
    if s["temperature"]:
        ax.axhline(s["temperature"], color="k", lw=0.8, ls="--", label="τ")
    ax.set_xticks(x, names, fontsize=7)
    ax.set_ylabel("temperature")
    ax.legend(fontsize=7)
    ax.set_title("per-layer temperatures (after burn-in)", fontsize=9)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(out / NETWORK_PLOTS[1], dpi=80)
    paths.append(str(out / NETWORK_PLOTS[1]))
    return paths
