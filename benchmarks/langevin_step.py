"""One Langevin optimizer step on 20M float32 parameters (20 tensors of 1M), side by side with
torch.optim.SGD(momentum=0.9) in the same run, 2 threads.

Rows: SGD-momentum (for-loop default, foreach, fused=True), and dynopt.optim.Langevin (BAOAB,
τ > 0) on its single-tensor, foreach and fused paths, the fused path with Gaussian and with
discrete noise, with and without the finite-gradient check, and at τ = 0 with and without
it (the noise draw skipped); the floors ``torch.Tensor.normal_()`` on the same 20M floats and a plain numba kernel
of the noise-free step; and the optional peers posteriors (``sgmcmc.baoa``, ``sgmcmc.sghmc``)
and devinterp (``optim.SGLD``), skipped with a note when absent (``pip install -e .[peers]``;
not dynopt dependencies, CI does not install them), see :mod:`_optim_peers`. Reported: median
and minimum ms per ``step()`` (gradients fixed, so only the optimizer is timed), the ratio to
torch's fused SGD-momentum (issue 14's target: Langevin ≤ 1.5× it), the state as a multiple of
the parameter memory, and the bytes the step allocates: torch allocations from the torch
profiler (``profile_memory=True``) plus numpy allocations from tracemalloc (the fused kernel
itself allocates nothing: its noise workspace, one BLOCK per thread, is created once).

    python benchmarks/langevin_step.py [--quick] [--update-docs]
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numba
import torch
from _common import (
    ROOT,
    command,
    fixed_gradient_params,
    markdown_table,
    own_copy,
    parse_args,
    update_section,
)
from _optim_peers import Row, devinterp_rows, normal_row, numba_row, posteriors_rows

from dynopt.optim import Langevin

N_TENSORS, NUMEL = 20, 1_000_000
LR, GAMMA, TEMPERATURE = 1e-3, 1.0, 1e-6
TARGET = 1.5  # issue 14: Langevin step ≤ 1.5× torch.optim.SGD(momentum=0.9, fused=True)
FUSED_SGD = "torch SGD momentum=0.9 (fused=True)"
TARGET_ROWS = {"Langevin fused path (Gaussian, default)": "Gaussian default",
               "Langevin fused path (discrete)": "discrete",
               "Langevin fused path (Gaussian), nonfinite='ignore'": "Gaussian nonfinite='ignore'",
               "Langevin fused path (discrete), nonfinite='ignore'": "discrete nonfinite='ignore'"}


def step_allocations(step: Callable[[], object]) -> int:
    """Bytes allocated during one step: the sum of torch's allocations (profiler, positive
    self memory of every op) + the peak of numpy/Python allocations (tracemalloc)."""
    from torch.profiler import ProfilerActivity, profile

    tracemalloc.start()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    _, peak_py = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    torch_bytes = sum(e.self_cpu_memory_usage for e in prof.events()
                      if e.self_cpu_memory_usage > 0)
    return int(torch_bytes + peak_py)


def optimizer_row(label: str, opt: torch.optim.Optimizer) -> Row:
    return Row(label, opt.step, lambda: sum(v.numel() * v.element_size()
                                            for s in opt.state.values() for v in s.values()
                                            if isinstance(v, torch.Tensor)))


def verdict(ratio: dict[str, float]) -> str:
    parts = [f"{name} {ratio[label]:.2f}× ({'met' if ratio[label] <= TARGET else 'missed'})"
             for label, name in TARGET_ROWS.items()]
    return (f"Issue 14 target, Langevin fused path ≤ {TARGET}× torch SGD momentum=0.9 "
            f"(fused=True), median: " + ", ".join(parts) + ".")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.set_num_threads(2)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    repeats = 5 if args.quick else 15
    params = fixed_gradient_params(N_TENSORS, NUMEL)

    def langevin(**kw: object) -> torch.optim.Optimizer:
        kw = {"temperature": TEMPERATURE, **kw}
        return Langevin(own_copy(params), lr=LR, gamma=GAMMA, seed=0, **kw)

    def sgd(**kw: object) -> torch.optim.Optimizer:
        return torch.optim.SGD(own_copy(params), lr=LR, momentum=0.9, **kw)

    rows = [optimizer_row(label, make()) for label, make in [
        ("torch SGD momentum=0.9 (for-loop default)", lambda: sgd(foreach=False)),
        ("torch SGD momentum=0.9 (foreach)", lambda: sgd(foreach=True)),
        (FUSED_SGD, lambda: sgd(fused=True)),
        ("Langevin single-tensor path (Gaussian)", lambda: langevin(foreach=False)),
        ("Langevin foreach path (Gaussian)", lambda: langevin(foreach=True)),
        ("Langevin foreach path (discrete)", lambda: langevin(foreach=True, noise="discrete")),
        ("Langevin fused path (Gaussian, default)", langevin),
        ("Langevin fused path (discrete)", lambda: langevin(noise="discrete")),
        ("Langevin fused path (Gaussian), nonfinite='ignore'",
         lambda: langevin(nonfinite="ignore")),
        ("Langevin fused path (discrete), nonfinite='ignore'",
         lambda: langevin(noise="discrete", nonfinite="ignore")),
        ("Langevin fused path, temperature=0 (noise skipped)", lambda: langevin(temperature=0.0)),
        ("Langevin fused path, temperature=0, nonfinite='ignore'",
         lambda: langevin(temperature=0.0, nonfinite="ignore")),
    ]]
    rows += [normal_row(params), numba_row(params, lr=LR, gamma=GAMMA)]
    skipped = []
    for more, notes in (posteriors_rows(params, lr=LR, gamma=GAMMA, temperature=TEMPERATURE),
                        devinterp_rows(params, lr=LR)):
        rows += more
        skipped += notes
    for note in skipped:
        print(note)
    for row in rows:
        row.step()  # creates the state (and compiles/loads the kernel)
        row.step()
    # interleaved rounds: slow drifts of the shared machine affect every row alike
    times: list[list[float]] = [[] for _ in rows]
    for _ in range(repeats):
        for k, row in enumerate(rows):
            t0 = time.perf_counter()
            row.step()
            times[k].append(time.perf_counter() - t0)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    results = []
    for row, ts in zip(rows, times, strict=True):
        med, best = statistics.median(ts), min(ts)
        alloc = step_allocations(row.step)
        state = "—" if row.state is None else f"{row.state() / param_bytes:.2f}"
        results.append((row.label, 1e3 * med, 1e3 * best, state, alloc))
        print(f"{row.label:55s} {1e3 * med:8.2f} ms/step (min {1e3 * best:7.2f})  state "
              f"{state}x params  alloc/step {alloc / 2**20:8.2f} MiB", flush=True)
    ref = {label: (med, best) for label, med, best, _, _ in results}[FUSED_SGD]
    table = markdown_table(["optimizer step (20M float32 params, 20 tensors, 2 threads)",
                            "median ms", "× fused SGD", "min ms", "× fused SGD (min)",
                            "state / params", "allocated per step (MiB)"],
                           [[label, f"{med:.2f}", f"{med / ref[0]:.2f}", f"{best:.2f}",
                             f"{best / ref[1]:.2f}", state, f"{alloc / 2**20:.2f}"]
                            for label, med, best, state, alloc in results])
    verdict_line = verdict({label: med / ref[0] for label, med, _, _, _ in results})
    print()
    print(table)
    print(verdict_line)
    if args.update_docs:
        import platform

        cpu = platform.machine()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        body = (
            "### Langevin optimizer step\n\n"
            f"Measured with `{command('langevin_step', args)}` on {cpu}, torch "
            f"{torch.__version__}, numba {numba.__version__}, 2 threads, "
            f"{time.strftime('%Y-%m-%d')}; median and minimum of {repeats} steps after warm-up, "
            "measured in interleaved rounds (one step of every row per round), "
            "gradients fixed, each optimizer on its own copy of the parameters. Ratios are to torch.optim.SGD(momentum=0.9, fused=True). Target "
            f"(issue 14): the Langevin step ≤ {TARGET}× that fused SGD step; one "
            "parameter-sized state buffer (the momentum); no per-step allocation beyond one "
            "noise chunk.\n\n"
            f"{table}\n\n{verdict_line}\n\n"
            "Allocated per step = torch allocations (torch profiler, profile_memory) + numpy "
            "allocations (tracemalloc). The fused kernel allocates nothing itself: its noise "
            "workspace (one 2048-element block per thread) and work tables are created once; "
            "the foreach and single paths draw one parameter-sized flat noise buffer per O step "
            "(the foreach path also keeps torch's foreach temporaries). The default "
            "nonfinite='raise' checks that every gradient is finite before anything is updated "
            "(one extra read of the gradients, dynopt.optim.finite: a parallel integer scan of "
            "the exponent bits for CPU models above 2¹⁸ elements, torch._foreach_norm "
            "otherwise) and that the step cannot write a non-finite value (the overflow bound "
            "of dynopt.optim.bound, carried over from the previous step while nothing else "
            "wrote θ and p, else from one read of them; a snapshot if the bound fails); the "
            "nonfinite='ignore' rows "
            "show the step without these checks; the temperature=0 row is the default step "
            "(checks on) without its noise draw (dynopt skips the draw of an op whose amplitude "
            "is exactly 0), and with nonfinite='ignore' the update alone without its noise, to "
            "compare with the plain kernel below. Floors: "
            "torch.Tensor.normal_() into preallocated buffers of the same 20M floats (the "
            "noise alone), and a plain numba kernel of the noise-free step (one parallel pass "
            "reading θ, p, g and writing θ, p). Optional peers (`pip install -e .[peers]`; "
            "rows missing here were not installed): posteriors' sgmcmc.baoa and sgmcmc.sghmc "
            "with inplace=True (σ = 1, α = γ); posteriors computes the gradient itself "
            "(torch.func.grad_and_value), so they run on the linear log posterior ⟨−g, θ⟩ "
            "whose gradient is the fixed −g, and the row 'gradient pass alone' gives that "
            "pass's share of their time; devinterp's optim.SGLD (nβ = 1, no localization; its "
            "state is the initial parameters it keeps). SGD-momentum's own time varies from "
            "run to run on this machine, so compare ratios within one run."
            + ("" if not skipped else " " + " ".join(skipped)) + "\n")
        update_section(ROOT / "docs" / "benchmarks.md", "langevin-step", body)
        print("updated docs/benchmarks.md section 'langevin-step'")


if __name__ == "__main__":
    main()
