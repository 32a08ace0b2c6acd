"""``dynopt study``: integrate a system on a test potential and report its diagnostics.

With no options it runs the embedded default, Langevin dynamics on the 1-D double well with
BAOAB (h = 0.05, τ = 0.25, 64 chains × 10⁶ steps), prints a table (energy or invariant drift,
kinetic and configurational temperature with standard errors, ESS and R-hat of q, total-variation
distance to the exact Gibbs marginal) and writes ``energy.png``, ``histogram.png``,
``autocorrelation.png`` and ``summary.json`` to ``--out``.

Systems and potentials come from :mod:`dynopt.cli.study_registry` (one entry each).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._files import prepare_output_dir, write_text_atomic
from .._validation import (
    check_int,
    check_nonnegative,
    check_positive,
    check_probability,
    check_real,
)
from ..backends import NO_JIT_REASON, numba_jit_disabled
from ..stepping import NOISES
from . import count
from .study_registry import POTENTIALS, SYSTEMS, build_system, check_scheme

HELP = ("Integrate a system on a test potential (or, with --model, replicas of a network on "
        "its training loss) and report energy drift, temperatures, ESS/R-hat and the distance "
        "to the Gibbs density or λ_max against the stability limit (default: Langevin double "
        "well).")


class _Default(float):
    """A float default that remembers it was not given (``--model`` runs replace it)."""

    is_default = True


class _DefaultInt(int):
    is_default = True


class _DefaultStr(str):
    is_default = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system", default="langevin", choices=sorted(SYSTEMS),
                        help="; ".join(f"{k}: {v.help}" for k, v in SYSTEMS.items()))
    parser.add_argument("--potential", default="double-well", choices=sorted(POTENTIALS))
    dims: dict[int, list[str]] = {}
    for name, entry in POTENTIALS.items():
        dims.setdefault(entry.default_dim, []).append(name)
    parser.add_argument("--dim", type=count, default=None,
                        help="number of coordinates (default: " + "; ".join(
                            f"{d} for {', '.join(names)}" for d, names in sorted(dims.items()))
                        + ")")
    parser.add_argument("--integrator", default=None,
                        help="name (BAOAB, leapfrog, em, lm, ...) or splitting string "
                             "(default: the system's own scheme)")
    parser.add_argument("--h", type=float, default=_Default(0.05),
                        help="step size (default: 0.05; " + "; ".join(
                            f"{e.h:g} for {name}" for name, e in POTENTIALS.items()
                            if e.h != 0.05) + ": stiff at their start)")
    parser.add_argument("--steps", type=count, default=_DefaultInt(1_000_000),
                        help="steps per chain (--model: 2000)")
    parser.add_argument("--chains", type=count, default=_DefaultInt(64),
                        help="independent chains (--model: 8)")
    parser.add_argument("--temperature", type=float, default=_Default(0.25),
                        help="temperature τ = k_BT (--model: 1e-3)")
    parser.add_argument("--gamma", type=float, default=_Default(1.0),
                        help="friction (Langevin), time scale (overdamped), target ⟨ξ⟩ "
                             "(adaptive Langevin) or 1/thermostat period (Nosé–Hoover)")
    parser.add_argument("--seed", type=count, default=0, help="seed of the noise (default: 0)")
    parser.add_argument("--backend", default=_DefaultStr("numba"), choices=["numba", "torch"],
                        help="numba (CPU kernels, default) or torch (CPU/GPU)")
    parser.add_argument("--record-every", type=count, default=None,
                        help="steps between records (default: ceil(steps/20000); with --model: "
                             "max(1, steps // 200))")
    parser.add_argument("--noise", default="gaussian", choices=list(NOISES),
                        help="kind of the noise draws (default: gaussian)")
    parser.add_argument("--q0", type=float, default=None,
                        help="start value of every coordinate (default: per potential)")
    parser.add_argument("--burn-in", type=float, default=0.1,
                        help="fraction of the records excluded from equilibrium statistics")
    parser.add_argument("--out", default="dynopt-out/study", help="output folder")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    parser.add_argument("--model", default=None, choices=["mlp"],
                        help="study replicas of a network on its training loss instead of a "
                             "test potential (see dynopt.cli.study_network)")
    parser.add_argument("--data", default=_DefaultStr("spirals"),
                        choices=["spirals", "digits", "wine"],
                        help="--model data set")
    parser.add_argument("--weight-decay", type=float, default=_Default(1e-3),
                        help="--model: Gaussian prior λ|θ|²/2 added to the mean loss")
    parser.add_argument("--threads", type=count, default=_DefaultInt(1),
                        help="--model: torch intra-op threads during the run")


def _build(args: argparse.Namespace) -> tuple[Any, Any, np.ndarray, int]:
    from ..integrators import resolve

    entry = POTENTIALS[args.potential]
    dim = entry.default_dim if args.dim is None else check_int("--dim", args.dim, minimum=1)
    check_nonnegative("--temperature", args.temperature)
    check_nonnegative("--gamma", args.gamma)
    potential = entry.factory(dim)
    system = build_system(args.system, potential, args)
    integ = resolve(args.integrator if args.integrator is not None else system.default_scheme)
    check_scheme(system, integ)
    start = entry.start if args.q0 is None else check_real("--q0", args.q0)
    q0 = np.full(dim, float(start))
    v0 = getattr(system, "v0", None)
    if v0 is not None and not float(potential.value(q0[None])[0]) > v0:
        raise ValueError(f"--system {args.system} descends from a loss above its floor v0 = {v0}, "
                         f"but U(q0) = {float(potential.value(q0[None])[0]):g} at q0 = {start} "
                         "(the potential's minimum?); pass another --q0")
    steps = check_int("--steps", args.steps, minimum=1)
    return system, integ, q0, steps


def _initial_momenta(system: Any, args: argparse.Namespace, dim: int) -> np.ndarray | None:
    """Deterministic systems start from Maxwell–Boltzmann momenta at --temperature."""
    if not (system.has_momentum and not system.is_stochastic):
        return None
    rng = np.random.default_rng(args.seed)
    return rng.normal(size=(args.chains, dim)) * np.sqrt(args.temperature)


def run(args: argparse.Namespace) -> int:
    from .. import integrate
    from ..errors import DivergenceError, Interrupted
    from ..integrate import check_memory
    from .study_report import default_record_every

    if getattr(args, "model", None) is not None:
        from .study_network import run_network

        return run_network(args)
    try:
        for option in ("data", "weight_decay", "threads"):  # not silently ignored
            value = getattr(args, option, None)
            if value is not None and not getattr(value, "is_default", False):
                raise ValueError(f"--{option.replace('_', '-')} applies only with --model "
                                 f"(got {value!r}); without it the study is of --potential")
        if args.backend == "numba" and numba_jit_disabled():
            raise ValueError(f"--backend numba cannot run with NUMBA_DISABLE_JIT=1 "
                             f"({NO_JIT_REASON}): unset NUMBA_DISABLE_JIT, or pass --backend "
                             "torch")
        if getattr(args.h, "is_default", False):
            args.h = POTENTIALS[args.potential].h
        check_positive("--h", args.h)
        chains = check_int("--chains", args.chains, minimum=1)
        check_int("--seed", args.seed, minimum=0, maximum=2**64 - 1)
        burn = check_probability("--burn-in", args.burn_in, open_right=True)
        steps = check_int("--steps", args.steps, minimum=1)
        every = (default_record_every(steps) if args.record_every is None
                 else check_int("--record-every", args.record_every, minimum=1))
        if steps // every < 4:
            raise ValueError(f"need at least 4 records per chain: steps={steps}, "
                             f"record_every={every}")
        system, integ, q0, steps = _build(args)
        # the size before anything is allocated, the output folder before any work
        check_memory(system, chains, len(q0), steps, every, names=("--chains", "--record-every"))
        out = prepare_output_dir(args.out, "--out")
        p0 = _initial_momenta(system, args, len(q0))
    except (ValueError, TypeError) as err:
        print(f"dynopt study: error: {err}", file=sys.stderr)
        return 2
    print(f"dynopt study: {system!r} with {integ.name}, h = {args.h}")
    print(f"{chains} chains x {steps:,} steps on backend {args.backend} (seed {args.seed}), "
          f"recording every {every} steps")
    interrupted = None
    try:
        t0 = time.perf_counter()
        # A one-step warm-up loads (or compiles) the kernel, so the timing below is the run's.
        integrate(system, integ, q0, h=args.h, n_steps=1, n_chains=1, backend=args.backend,
                  seed=args.seed, p0=None if p0 is None else p0[:1], record_every=1,
                  noise=args.noise, progress=False)
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        traj = integrate(system, integ, q0, h=args.h, n_steps=steps, n_chains=chains,
                         backend=args.backend, seed=args.seed, p0=p0, record_every=every,
                         noise=args.noise, progress=True)
    except DivergenceError as err:
        print(f"dynopt study: {err}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as err:
        print(f"dynopt study: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        interrupted = err
        traj = err.trajectory
        if traj is None or traj.n_draws < 5:
            print("dynopt study: interrupted before 4 records per chain were complete; "
                  "nothing to keep", file=sys.stderr)
            return 130
    except KeyboardInterrupt:
        print("dynopt study: interrupted while loading the kernel; nothing to keep",
              file=sys.stderr)
        return 130
    wall = time.perf_counter() - t0
    return _report(args, traj, out, wall, load, chains, steps, burn, interrupted)


def _report(args: argparse.Namespace, traj: Any, out: Path, wall: float, load: float,
            chains: int, steps: int, burn: float, interrupted: BaseException | None) -> int:
    """Analyze, print, and write summary.json (atomically, before the plots) and the plots."""
    from .study_report import analyze, format_table, make_plots, remove_stale_plots

    done = (traj.n_draws - 1) * traj.record_every
    burn_in = min(int(burn * traj.n_draws), traj.n_draws - 4)
    summary = analyze(traj, burn_in=burn_in)
    summary["wall_time_s"] = wall
    summary["particle_steps_per_s"] = chains * done / wall if wall > 0 else None
    summary["config"] = {k: v for k, v in vars(args).items() if k != "func"}
    summary["kernel_load_s"] = load
    summary["interrupted"] = interrupted is not None
    summary["steps_done"] = done
    path = out / "summary.json"
    if interrupted is not None:
        summary["plots"] = []
        _write_summary(path, summary)
        remove_stale_plots(out, [])
        print(format_table(summary))
        print(f"\ndynopt study: interrupted after {done:,} of {steps:,} steps; kept the "
              f"{traj.n_draws} completed records per chain: wrote {path} (no plots)",
              file=sys.stderr)
        return 130
    print(f"integration: {wall:.2f} s ({chains * steps / wall / 1e6:.3g} M chain-steps/s, after "
          f"{load:.1f} s loading/compiling the kernel); "
          f"statistics over draws {burn_in}..{traj.n_draws - 1} of each chain\n")
    print(format_table(summary))
    _write_summary(path, summary)  # before the plots: Ctrl-C while plotting keeps it
    if not args.no_plots:
        try:
            summary["plots"] = make_plots(traj, summary, out, burn_in=burn_in)
        except KeyboardInterrupt:
            print(f"dynopt study: interrupted while plotting; the results are in {path}",
                  file=sys.stderr)
            return 130
        _write_summary(path, summary, quiet=True)
    remove_stale_plots(out, summary.get("plots", []))
    print(f"\nwrote {path}" + ("" if args.no_plots else " and plots"))
    return 0


def _write_summary(path: Path, summary: dict[str, Any], quiet: bool = False) -> None:
    from .study_report import json_text

    text = json_text(summary, default=_json_default)
    if write_text_atomic(path, text) and not quiet:
        print(f"dynopt study: warning: replaced the existing {path}", file=sys.stderr)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
