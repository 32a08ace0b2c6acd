"""Cost of the non-finite result check: bound (no snapshot) vs snapshot vs no check (20M float32).

Side by side in one run (20 tensors of 10⁶ float32 parameters, gradients fixed, no backward):
the fused Langevin and HeavyBall steps (and Langevin's foreach path, CUDA's default, whose
torch normals have a bound of their own) with ``nonfinite="raise"`` as shipped (ordinary steps are
proven finite by :mod:`dynopt.optim.bound` and take no snapshot; θ and p are not scanned while the
previous step's carried bound holds), the same with the carried bound dropped before every step
(θ and p scanned every step: the behaviour before carried bounds), with the bound switched
off (every step snapshots and scans its result: the behaviour before the bound), and
``nonfinite="ignore"`` (no check at all), next to ``torch.optim.SGD(momentum=0.9, fused=True)``.
Variants are interleaved within each round so that load changes hit all of them alike; median
over rounds.

    python benchmarks/result_check.py [--quick] [--update-docs]
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

from _common import (
    command,
    fixed_gradient_params,
    interleaved_times,
    machine,
    markdown_table,
    own_copy,
    parse_args,
    write_section,
)

N_TENSORS = 20
NUMEL = 1_000_000


def _without_carry(opt: object) -> Callable[[], object]:
    """``opt.step`` with the carried bound dropped first, so the step scans θ and p."""
    from dynopt.optim import bound

    def step() -> object:
        opt.__dict__.pop(bound._CARRY, None)
        return opt.step()

    return step


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    import torch

    from dynopt.optim import HeavyBall, Langevin

    params = fixed_gradient_params(N_TENSORS, NUMEL)
    variants: dict[str, Callable[[], object]] = {}
    opts = {}
    for name, cls in (("Langevin", Langevin), ("HeavyBall", HeavyBall)):
        opts[f"{name}, nonfinite='raise' (bound, carried)"] = cls(own_copy(params), lr=0.01,
                                                                  seed=0)
        opts[f"{name}, nonfinite='raise', bound scanned every step"] = cls(own_copy(params),
                                                                          lr=0.01, seed=0)
        snap = cls(own_copy(params), lr=0.01, seed=0)
        snap._result_bounded = lambda *_: False  # the snapshot on every step
        opts[f"{name}, nonfinite='raise', bound off (snapshot)"] = snap
        opts[f"{name}, nonfinite='ignore'"] = cls(own_copy(params), lr=0.01, seed=0,
                                                 nonfinite="ignore")
    # the foreach path (CUDA's default) draws torch's normals: bounded by TORCH_NORMAL_BOUND
    for label, kw in (("(bound, carried)", {}), ("bound off (snapshot)", {}),
                      ("nonfinite='ignore'", {"nonfinite": "ignore"})):
        opt = Langevin(own_copy(params), lr=0.01, seed=0, foreach=True, **kw)
        if "snapshot" in label:
            opt._result_bounded = lambda *_: False
        opts[f"Langevin foreach path, {label}"] = opt
    opts["torch.optim.SGD(momentum=0.9, fused=True)"] = torch.optim.SGD(
        own_copy(params), lr=0.01, momentum=0.9, fused=True)
    for k, o in opts.items():
        variants[k] = o.step
        if "scanned every step" in k:
            variants[k] = _without_carry(o)
    steps, rounds = (3, 5) if args.quick else (5, 9)
    times = interleaved_times(variants, steps=steps, rounds=rounds, warmup=2)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["torch.optim.SGD(momentum=0.9, fused=True)"]
    rows = [[k, f"{1e3 * v:.1f}", f"{1e3 * min(times[k]):.1f}", f"{v / ref:.2f}×",
             str(getattr(opts[k], "result_checks", "–"))] for k, v in med.items()]
    table = markdown_table(["variant", "ms / step (median)", "min", "vs SGD fused",
                            "result checks (bound / snapshot)"], rows)
    load = os.getloadavg()[0]
    print(machine(), f"load average {load:.1f}")
    print(table)
    if args.update_docs:
        write_section(
            "result-check", "Cost of the non-finite result check (20M float32)",
            command("result_check", args), table,
            f"{N_TENSORS} tensors × {NUMEL:,} float32 parameters, fixed gradients, {steps} steps "
            f"per timing, median of {rounds} interleaved rounds, each optimizer on its own copy "
            f"of the parameters, load average {load:.1f} at the "
            "end (a shared machine). The bound reads ∇L once (an integer max-scan) and, when "
            "the previous step's carried bound does not hold, θ and p once each, instead of "
            "copying θ and p and scanning the result; see docs/architecture.md.")


if __name__ == "__main__":
    main()
