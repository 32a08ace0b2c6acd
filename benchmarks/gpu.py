"""GPU: ensemble throughput and optimizer steps vs torch and the device's copy bandwidth.

Side by side in one run on one device:

1. **Ensemble throughput**: BAOAB on DoubleWell(dim=2), 10⁶ chains (``--size full``), dynopt's
   torch backend (``integrate(..., backend="torch", device=...)``, only the start and the end
   recorded) vs a hand-written batched torch loop of the same scheme; float32 and float64;
   million particle-steps per second.
2. **Optimizer steps** on 100M float32 parameters (20 tensors × 5M, fixed gradients, no
   backward): dynopt's Langevin (τ > 0, noise drawn each step), HeavyBall and BBI (loss given
   as a device tensor) on their default path, vs ``torch.optim.SGD(momentum=0.9)`` with
   ``foreach=True`` and with ``fused=True``, and vs the device's copy bandwidth: a plain
   ``torch.clone`` of the same 400 MB. For each: ms per step, the effective bandwidth at
   20 bytes per parameter (read θ, p, ∇L; write θ, p: SGD's minimum), the fraction of the copy
   bandwidth (8 bytes per element) that reaches, and the host synchronisations per step counted by
   :class:`dynopt.backends.torch.host_syncs.HostSyncs`.

Timing: CUDA events around blocks of steps after a warm-up, ``torch.cuda.synchronize()`` before
reading them; variants interleaved within each repeat; median over repeats. Issue-13 targets:
Langevin ≥ 50 % of the copy bandwidth, HeavyBall ≤ 1.2× fused SGD, no host synchronisation per
step except where documented (the finiteness check of ``nonfinite="raise"``; BBI's loss).

    python benchmarks/gpu.py [--device cuda] [--size full|small] [--out FILE] [--quick]
    python benchmarks/gpu.py --device cpu --size small     # seconds, on any machine
    dynopt bench gpu --device cpu --size small
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from _common import (
    ROOT,
    Parser,
    command,
    markdown_table,
    plain_baoab_double_well,
    update_section,
    usage_error,
)

SIZES = {  # chains, integrate steps, parameter tensors, elements per tensor
    "full": {"chains": 1_000_000, "steps": 1000, "tensors": 20, "numel": 5_000_000},
    "small": {"chains": 4096, "steps": 20, "tensors": 4, "numel": 100_000},
}
H, GAMMA, TAU = 0.05, 1.0, 0.25


def parse_args() -> argparse.Namespace:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda; without CUDA the benchmark is "
                             "skipped unless a device is given)")
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="full: 10^6 chains, 100M parameters; small: for a CPU check")
    parser.add_argument("--out", default=None,
                        help="write the tables (markdown) and the numbers (FILE.json) here")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the tables into docs/benchmarks.md (CUDA runs only)")
    parser.add_argument("--from-report", default=None, metavar="FILE.md",
                        help="with --update-docs: put a report written by --out on a GPU "
                             "machine (and fetched from it) into docs/benchmarks.md; runs nothing")
    return parser.parse_args()


class Timer:
    """Wall time of a block on ``device``: CUDA events (synchronised) or perf_counter."""

    def __init__(self, device) -> None:  # type: ignore[no-untyped-def]
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"
        self.device = device

    def __call__(self, fn: Callable[[], object], n: int) -> float:
        torch = self.torch
        if self.cuda:
            torch.cuda.synchronize(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            torch.cuda.synchronize(self.device)
            return start.elapsed_time(end) / 1e3 / n
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n


def ensemble(device, size: dict, repeats: int) -> tuple[list[list[str]], dict]:  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    import dynopt
    from dynopt import potentials, systems

    chains, steps = size["chains"], size["steps"]
    system = systems.Langevin(potentials.DoubleWell(dim=2), gamma=GAMMA, temperature=TAU)
    q0 = np.ones(2)

    def dynopt_run(dtype: str) -> Callable[[], object]:
        return lambda: dynopt.integrate(system, "BAOAB", q0, h=H, n_steps=steps,
                                        n_chains=chains, record_every=steps, seed=0,
                                        backend="torch", device=device, dtype=dtype)

    def plain_loop(dtype: str) -> Callable[[], object]:
        def run() -> None:
            q = plain_baoab_double_well(chains, steps, getattr(torch, dtype), device, h=H,
                                        gamma=GAMMA, tau=TAU)
            q.cpu()  # the result on the host, as integrate() returns it
        return run

    variants = {f"dynopt torch backend ({d})": dynopt_run(d) for d in ("float32", "float64")}
    variants |= {f"plain batched torch loop ({d})": plain_loop(d) for d in ("float32", "float64")}
    timer = Timer(device)
    for fn in variants.values():
        fn()                                         # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timer(fn, 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["plain batched torch loop (float32)"]
    rows = [[k, f"{chains * steps / v / 1e6:.1f}", f"{ref / v:.2f}×"] for k, v in med.items()]
    return rows, {k: chains * steps / v for k, v in med.items()}


def optimizer_steps(device, size: dict, repeats: int, steps: int  # type: ignore[no-untyped-def]
                    ) -> tuple[list[list[str]], dict, dict]:
    import torch

    from dynopt.backends.torch.host_syncs import HostSyncs
    from dynopt.optim import BBI, HeavyBall, Langevin

    n_t, numel = size["tensors"], size["numel"]
    n = n_t * numel
    torch.manual_seed(0)
    lr, mom = 0.01, 0.9
    h = lr**0.5

    def fresh() -> list[torch.Tensor]:
        ps = [torch.randn(numel, device=device) for _ in range(n_t)]
        for p in ps:
            p.grad = torch.randn(numel, device=device) * 1e-3
        return ps

    loss = torch.tensor(1.0, device=device)
    big = torch.randn(n, device=device)
    variants: dict[str, Callable[[], object]] = {
        "torch.clone (copy bandwidth)": lambda: big.clone(),
    }
    sgd_kw = {"lr": lr, "momentum": mom}
    variants["torch.optim.SGD(momentum=0.9, foreach=True)"] = torch.optim.SGD(
        fresh(), foreach=True, **sgd_kw).step
    try:
        variants["torch.optim.SGD(momentum=0.9, fused=True)"] = torch.optim.SGD(
            fresh(), fused=True, **sgd_kw).step
    except (RuntimeError, ValueError) as err:  # fused SGD not built for this device
        print(f"fused SGD unavailable on {device}: {err}")
    lang = Langevin(fresh(), lr=h, gamma=(1 - mom) / h, temperature=1e-6, seed=0)
    variants["Langevin (τ > 0, default path)"] = lang.step
    hb = HeavyBall(fresh(), lr=h, gamma=(1 - mom) / h)
    variants["HeavyBall (default path)"] = hb.step
    bbi = BBI(fresh(), lr=1e-3, t0=None, t1=None, seed=0)
    variants["BBI (default path, loss on the device)"] = lambda: bbi.step(loss=loss)
    timer = Timer(device)
    syncs: dict[str, float] = {}
    for name, fn in variants.items():            # warm-up (state, kernels), then count syncs
        for _ in range(3):
            fn()
        with HostSyncs(device) as s:
            for _ in range(steps):
                fn()
        syncs[name] = s.count / steps
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timer(fn, steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    copy_bw = 8 * n / med["torch.clone (copy bandwidth)"]
    fused = med.get("torch.optim.SGD(momentum=0.9, fused=True)")
    rows = []
    for k, v in med.items():
        moved = 8 * n if k.startswith("torch.clone") else 20 * n
        bw = moved / v
        rows.append([k, f"{1e3 * v:.3f}", f"{bw / 1e9:.3g}", f"{bw / copy_bw:.0%}",
                     "–" if fused is None else f"{v / fused:.2f}×", f"{syncs[k]:g}"])
    numbers = {"ms_per_step": {k: 1e3 * v for k, v in med.items()},
               "copy_bandwidth_GBps": copy_bw / 1e9,
               "fraction_of_copy_bw": {k: (8 * n if k.startswith("torch.clone") else 20 * n)
                                       / v / copy_bw for k, v in med.items()},
               "host_syncs_per_step": syncs}
    verdict = {}
    lang_frac = numbers["fraction_of_copy_bw"]["Langevin (τ > 0, default path)"]
    verdict["langevin_fraction_of_copy_bw"] = lang_frac
    if fused is not None:
        verdict["heavyball_vs_fused_sgd"] = med["HeavyBall (default path)"] / fused
    return rows, numbers, verdict


def report_command(header: str) -> str:
    """The command that made a fetched report, from its first line (``... size SIZE[ (quick)]:
    ...``): ``bash benchmarks/gpu_check.sh`` runs ``--size full`` unless ``SIZE`` is set, and
    never ``--quick``. A report from another size or from ``--quick`` was named as the full run.

    Raises:
        UsageError: If the header names no size (a SystemExit with status 2).
    """
    import re

    m = re.search(r"\bsize (\w+)( \(quick\))?:", header)
    if not m or m.group(1) not in SIZES:
        usage_error(f"the report's first line names no size ({header!r}); docs not updated")
    size, quick = m.group(1), bool(m.group(2))
    run = f"benchmarks/gpu.py --device cuda --size {size}" + (" --quick" if quick else "")
    if quick:
        return f"python {run}"
    return ("" if size == "full" else f"SIZE={size} ") + f"bash benchmarks/gpu_check.sh ({run})"


def _docs_section(report: str, cmd: str) -> None:
    update_section(ROOT / "docs" / "benchmarks.md", "gpu",
                   f"### GPU: ensemble throughput and optimizer steps\n\nMeasured with `{cmd}`"
                   f", {time.strftime('%Y-%m-%d')}:\n\n{report}")
    print("updated docs/benchmarks.md section 'gpu'")


def main() -> None:
    args = parse_args()
    if args.from_report:
        if not args.update_docs:
            usage_error("--from-report needs --update-docs")
        try:
            report = Path(args.from_report).read_text()
        except OSError as err:
            usage_error(f"--from-report {args.from_report}: {err.strerror or err}")
        if not report.strip() or "device cuda" not in report.splitlines()[0]:
            usage_error(f"--from-report {args.from_report} is not a CUDA run; docs not updated")
        _docs_section(report, report_command(report.splitlines()[0]))
        return
    import torch

    if args.device is None and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here, skipped (for a CPU check run it with "
              "--device cpu --size small)")
        return
    args.device = args.device or "cuda"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        usage_error(f"--device {args.device}: CUDA is not available (use --device cpu "
                    "--size small for a CPU check)")
    size = SIZES[args.size]
    repeats = 3 if args.quick or args.size == "small" else 5
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"device {device} ({name}), torch {torch.__version__}, size {args.size}{' (quick)' * args.quick}: "
              f"{size['chains']:,} chains x {size['steps']} steps; "
              f"{size['tensors']} x {size['numel']:,} float32 parameters")
    print(header)
    t0 = time.perf_counter()
    ens_rows, ens = ensemble(device, size, repeats)
    ens_table = markdown_table(["implementation", "M particle-steps/s",
                                "vs plain torch (float32)"], ens_rows)
    print(ens_table)
    opt_rows, opt, verdict = optimizer_steps(device, size, repeats, 5 if args.quick else 10)
    opt_table = markdown_table(["variant", "ms / step", "GB/s (20 B/param; clone 8 B)",
                                "of copy bandwidth", "vs fused SGD", "host syncs / step"],
                               opt_rows)
    print(opt_table)
    lines = [f"Langevin step: {verdict['langevin_fraction_of_copy_bw']:.0%} of the copy "
             "bandwidth (target ≥ 50 %)"]
    if "heavyball_vs_fused_sgd" in verdict:
        lines.append(f"HeavyBall: {verdict['heavyball_vs_fused_sgd']:.2f}× fused SGD "
                     "(target ≤ 1.2×)")
    summary = "; ".join(lines) + f". Wall time of the benchmark: {time.perf_counter() - t0:.0f} s."
    print(summary)
    report = (f"{header}\n\n#### Ensemble throughput (BAOAB, DoubleWell(dim=2))\n\n{ens_table}\n"
              f"\n#### Optimizer steps\n\n{opt_table}\n\n{summary}\n")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        out.with_suffix(".json").write_text(json.dumps(
            {"header": header, "device_name": name, "ensemble_particle_steps_per_s": ens,
             "optimizer": opt, "verdict": verdict}, indent=2))
        print(f"wrote {out} and {out.with_suffix('.json')}")
    if args.update_docs:
        if device.type != "cuda":
            print("--update-docs writes CUDA figures only; nothing written")
        else:
            _docs_section(report, command("gpu", args, f"--device {args.device}",
                                          f"--size {args.size}"))


if __name__ == "__main__":
    main()
