"""One optimizer step on a small model: the fixed per-step cost, side by side with torch.optim.

A 64-64-64-10 tanh MLP (8,970 parameters in 6 tensors) with fixed random gradients, no
backward: ``torch.optim.SGD(momentum=0.9)`` (for-loop, foreach, fused) next to dynopt's Langevin (default checks and ``nonfinite="ignore"``), OverdampedLangevin, HeavyBall
(default and unchecked), BBI and ECDSep (default). At this size the work per element is
negligible and what is timed is the per-step Python and dispatch cost, which a small research model pays every
step. Each optimizer steps its own copy of the parameters; rounds are interleaved (one block of
steps of every row per round) so that load changes hit all rows alike; median and minimum over
rounds of the mean µs per step of a block.

    python benchmarks/small_step.py [--quick] [--update-docs]
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from _common import (
    command,
    interleaved_times,
    machine,
    markdown_table,
    own_copy,
    parse_args,
    write_section,
)

WIDTH, DEPTH, OUT = 64, 3, 10


def model_params() -> list[torch.Tensor]:
    """The MLP's parameters as plain tensors with fixed gradients (scale 1e-3)."""
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for k in range(DEPTH):
        layers += [torch.nn.Linear(WIDTH, OUT if k == DEPTH - 1 else WIDTH), torch.nn.Tanh()]
    params = [p.detach().clone() for p in torch.nn.Sequential(*layers[:-1]).parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    return params


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    from dynopt.optim import BBI, ECDSep, HeavyBall, Langevin, OverdampedLangevin

    torch.set_num_threads(2)
    params = model_params()
    n = sum(p.numel() for p in params)
    loss = torch.tensor(1.0)

    def sgd(**kw: object) -> Callable[[], object]:
        return torch.optim.SGD(own_copy(params), lr=1e-3, momentum=0.9, **kw).step

    def with_loss(opt: torch.optim.Optimizer) -> Callable[[], object]:
        return lambda: opt.step(loss=loss)

    rows: dict[str, Callable[[], object]] = {
        "torch SGD momentum=0.9 (for-loop)": sgd(foreach=False),
        "torch SGD momentum=0.9 (foreach)": sgd(foreach=True),
        "torch SGD momentum=0.9 (fused=True)": sgd(fused=True),
        "Langevin (default checks)": Langevin(own_copy(params), lr=1e-3, seed=0).step,
        "Langevin, nonfinite='ignore'": Langevin(own_copy(params), lr=1e-3, seed=0,
                                                 nonfinite="ignore").step,
        "OverdampedLangevin (default checks)": OverdampedLangevin(own_copy(params), lr=1e-3,
                                                                  seed=0).step,
        "HeavyBall (default checks)": with_loss(HeavyBall(own_copy(params), lr=1e-3)),
        "HeavyBall, nonfinite='ignore'": with_loss(HeavyBall(own_copy(params), lr=1e-3,
                                                             nonfinite="ignore")),
        "BBI (default checks)": with_loss(BBI(own_copy(params), lr=1e-3, seed=0, t0=None,
                                              t1=None)),
        "ECDSep (default checks)": with_loss(ECDSep(own_copy(params), lr=1e-3, seed=0)),
    }
    steps, rounds = (50, 5) if args.quick else (200, 15)
    times = interleaved_times(rows, steps=steps, rounds=rounds, warmup=20)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["torch SGD momentum=0.9 (fused=True)"]
    table = markdown_table(
        ["optimizer step, small MLP", "µs / step (median)", "min", "vs SGD fused"],
        [[k, f"{1e6 * v:.1f}", f"{1e6 * min(times[k]):.1f}", f"{v / ref:.2f}×"]
         for k, v in med.items()])
    print(machine())
    print(table)
    if args.update_docs:
        write_section(
            "small-step", f"Optimizer step on a small model ({n:,} parameters, 6 tensors)",
            command("small_step", args), table,
            f"A {WIDTH}-{WIDTH}-{WIDTH}-{OUT} MLP's parameters with fixed gradients, no "
            f"backward, 2 threads; {steps} steps per timing, median and minimum of {rounds} "
            "interleaved rounds, each optimizer on its own copy of the parameters. At this size "
            "a step is its fixed cost: dynopt's is Python (building the per-step buckets, "
            "choosing paths, validating the kernel's buffers, the gradient scan and the "
            "overflow bound); the 'ignore' rows show the share of the checks.")


if __name__ == "__main__":
    main()
