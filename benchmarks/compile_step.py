"""Eager vs ``torch.compile(opt.step)`` step time for dynopt optimizers (CPU, 2 threads).

Parameters: 10 float32 tensors of 200k elements (2M), gradients fixed, so only the optimizer is
timed. Rows: Langevin (τ > 0) on its default path and on foreach, HeavyBall, BBI, each eager and
compiled (inductor). Under compile the default path is foreach (fused by inductor); the numba
kernel would run eagerly at a graph break. Reported: median and minimum ms per step after
warm-up (20 steps: the compile and dynamo's recompiles for the per-step counters are
excluded), measured in interleaved rounds, and the number of graphs dynamo compiled.

    python benchmarks/compile_step.py [--quick] [--update-docs]
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from _common import ROOT, command, machine, markdown_table, parse_args, update_section
from torch._dynamo.utils import counters

from dynopt.optim import BBI, HeavyBall, Langevin

N_TENSORS, NUMEL = 10, 200_000


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.set_num_threads(2)
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    repeats = 7 if args.quick else 21
    g = torch.Generator().manual_seed(0)
    loss = torch.tensor(1.0)

    def params() -> list[torch.Tensor]:
        ps = [torch.randn(NUMEL, generator=g) for _ in range(N_TENSORS)]
        for p in ps:
            p.grad = 1e-3 * torch.randn(NUMEL, generator=g)
        return ps

    makers: list[tuple[str, Callable[[], torch.optim.Optimizer], bool]] = [
        ("Langevin, default path", lambda: Langevin(params(), lr=1e-3, temperature=1e-6,
                                                    seed=0), False),
        ("Langevin, foreach", lambda: Langevin(params(), lr=1e-3, temperature=1e-6, seed=0,
                                               foreach=True), False),
        ("HeavyBall, default path", lambda: HeavyBall(params(), lr=1e-3, gamma=1.0), False),
        ("BBI, default path", lambda: BBI(params(), lr=1e-3, seed=0), True),
    ]
    rows_in = []
    for label, make, with_loss in makers:
        for compiled in (False, True):
            opt = make()
            fn = opt.step
            kw = {"loss": loss} if with_loss else {}
            graphs = ""
            if compiled:
                torch._dynamo.reset()
                counters.clear()
                fn = torch.compile(opt.step)
            for _ in range(20):  # state, recompiles (ints that change per step), warm-up
                fn(**kw)
            if compiled:
                graphs = str(counters["stats"]["unique_graphs"])
            rows_in.append((f"{label}, {'compiled' if compiled else 'eager'}", fn, kw, graphs))
    times: list[list[float]] = [[] for _ in rows_in]
    for _ in range(repeats):
        for k, (_, fn, kw, _) in enumerate(rows_in):
            t0 = time.perf_counter()
            fn(**kw)
            times[k].append(time.perf_counter() - t0)
    rows = []
    for (label, _, _, breaks), ts in zip(rows_in, times, strict=True):
        med, best = 1e3 * statistics.median(ts), 1e3 * min(ts)
        rows.append([label, f"{med:.2f}", f"{best:.2f}", breaks or "–"])
        print(f"{label:40s} {med:8.2f} ms (min {best:7.2f}) graphs {breaks or '-'}", flush=True)
    table = markdown_table(["step (2M float32 params, 10 tensors, 2 threads)", "median ms",
                            "min ms", "graphs compiled"], rows)
    print()
    print(table)
    if args.update_docs:
        load = os.getloadavg()[0]
        body = ("### Compiled vs eager optimizer step\n\n"
                f"Measured with `{command('compile_step', args)}` on "
                f"{machine()}, {time.strftime('%Y-%m-%d')}, load average {load:.1f} at the end "
                "(compare rows within one run). Warm-up steps per row (compile and recompiles "
                "excluded), then interleaved rounds.\n\n" + table + "\n\n"
                "Under `torch.compile` the default CPU paths keep their numba kernels (run "
                "eagerly behind `torch.compiler.disable`), so a compiled step costs about what "
                "an eager one does; \"graphs compiled\" counts what dynamo captured around "
                "them. The foreach path is what inductor compiles; on this CPU its step is "
                "dominated by the noise draw.\n")
        update_section(ROOT / "docs" / "benchmarks.md", "compile-step", body)
        print("updated docs/benchmarks.md section 'compile-step'")


if __name__ == "__main__":
    main()
