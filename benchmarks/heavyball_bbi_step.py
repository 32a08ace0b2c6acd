"""``HeavyBall``, ``BBI`` and ``ECDSep`` steps on 20M float32 parameters vs ``torch.optim.SGD``.

Side by side in one run (20 tensors of 10⁶ float32 parameters, gradients fixed, no backward):
``torch.optim.SGD(momentum=0.9)`` (its default CPU path, a for-loop over tensors, and
``foreach=True``), a plain torch loop doing the same update, dynopt's HeavyBall and BBI on their
fused numba path (the CPU default) and their foreach path, and ECDSep (foreach: it has no fused
kernel; its rotation normals come from a Philox fill, and one row draws them with
``torch.randn`` from its generator instead, as before that fill). Each variant is timed as the
median over repeats of a block of steps, after a warm-up; variants are interleaved within each
repeat so that load changes on the shared machine hit all of them alike, each on its own copy of
the parameters (dynopt's carried overflow bound holds only while no other optimizer writes
them, as in training). Targets: HeavyBall ≤
1.2× and BBI ≤ 1.5× SGD's time. The thread counts are torch's and numba's defaults (set
``OMP_NUM_THREADS`` / ``NUMBA_NUM_THREADS`` to compare at a fixed count).

    python benchmarks/heavyball_bbi_step.py [--quick] [--update-docs]
"""

from __future__ import annotations

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


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    import torch

    from dynopt.optim import BBI, ECDSep, HeavyBall

    params = fixed_gradient_params(N_TENSORS, NUMEL)
    loss = torch.tensor(1.0)
    lr, mom = 0.01, 0.9
    h = lr**0.5
    bufs = [torch.zeros(NUMEL) for _ in range(N_TENSORS)]

    def plain_loop() -> None:
        with torch.no_grad():
            for p, b in zip(params, bufs, strict=True):
                b.mul_(mom).add_(p.grad)
                p.add_(b, alpha=-lr)

    def stepper(opt: torch.optim.Optimizer, with_loss: bool) -> Callable[[], None]:
        return (lambda: opt.step(loss=loss)) if with_loss else opt.step

    class RandnECDSep(ECDSep):
        """ECDSep drawing its CPU rotation normals with torch.randn from its generator."""

        _philox_bucket = staticmethod(lambda *args: False)

    variants: dict[str, Callable[[], None]] = {
        "torch.optim.SGD(momentum=0.9)": stepper(
            torch.optim.SGD(own_copy(params), lr=lr, momentum=mom), False),
        "torch.optim.SGD(momentum=0.9, foreach=True)": stepper(
            torch.optim.SGD(own_copy(params), lr=lr, momentum=mom, foreach=True), False),
        "plain torch loop (mul_, add_, add_)": plain_loop,
        "HeavyBall (fused numba, default on CPU)": stepper(
            HeavyBall(own_copy(params), lr=h, gamma=(1 - mom) / h), True),
        "HeavyBall (fused, nonfinite='ignore')": stepper(
            HeavyBall(own_copy(params), lr=h, gamma=(1 - mom) / h, nonfinite="ignore"), True),
        "HeavyBall (foreach)": stepper(HeavyBall(own_copy(params), lr=h, gamma=(1 - mom) / h,
                                                 foreach=True), True),
        "BBI (fused numba, default on CPU)": stepper(
            BBI(own_copy(params), lr=1e-3, t0=None, t1=None, seed=0), True),
        "BBI (fused, nonfinite='ignore')": stepper(
            BBI(own_copy(params), lr=1e-3, t0=None, t1=None, seed=0, nonfinite="ignore"), True),
        "BBI (foreach)": stepper(BBI(own_copy(params), lr=1e-3, t0=None, t1=None, seed=0,
                                     foreach=True), True),
        "ECDSep (foreach, default)": stepper(ECDSep(own_copy(params), lr=1e-3, seed=0), True),
        "ECDSep (nonfinite='ignore')": stepper(
            ECDSep(own_copy(params), lr=1e-3, seed=0, nonfinite="ignore"), True),
        "ECDSep (ν = 0: no rotation noise)": stepper(
            ECDSep(own_copy(params), lr=1e-3, seed=0, nu=0.0), True),
        "ECDSep (rotation normals from torch.randn, as before)": stepper(
            RandnECDSep(own_copy(params), lr=1e-3, seed=0), True),
    }
    steps = 5 if args.quick else 10
    repeats = 5 if args.quick else 9
    times = interleaved_times(variants, steps=steps, rounds=repeats, warmup=3)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["torch.optim.SGD(momentum=0.9)"]
    loop = med["plain torch loop (mul_, add_, add_)"]
    rows = [[k, f"{1e3 * v:.2f}", f"{v / ref:.2f}×", f"{v / loop:.2f}×",
             f"{4 * N_TENSORS * NUMEL / v / 1e9 * 5:.1f}"] for k, v in med.items()]
    table = markdown_table(["variant", "ms / step (median)", "vs SGD", "vs plain loop",
                            "GB/s (at 20 B/param)"], rows)
    print(machine())
    print(table)
    hb = med["HeavyBall (fused numba, default on CPU)"] / ref
    bbi = med["BBI (fused numba, default on CPU)"] / ref
    ecd = med["ECDSep (foreach, default)"] / ref
    ecd0 = med["ECDSep (ν = 0: no rotation noise)"] / ref
    ecd_randn = med["ECDSep (rotation normals from torch.randn, as before)"] / ref
    verdict = (f"HeavyBall: {hb:.2f}× SGD (target ≤ 1.2×: {'met' if hb <= 1.2 else 'missed'}); "
               f"BBI: {bbi:.2f}× SGD (target ≤ 1.5×: {'met' if bbi <= 1.5 else 'missed'}); "
               f"ECDSep: {ecd:.2f}× SGD ({ecd0:.2f}× at ν = 0, {ecd_randn:.2f}× with "
               "torch.randn normals; no target).")
    print(verdict)
    if args.update_docs:
        import os

        env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")
                       if k in os.environ)
        cmd = (env + " " if env else "") + command("heavyball_bbi_step", args)
        write_section(
            "heavyball-bbi-step",
            "HeavyBall, BBI and ECDSep step vs torch.optim.SGD (20M float32)", cmd,
            table,
            f"{N_TENSORS} tensors × {NUMEL:,} float32 parameters, fixed gradients, {steps} "
            f"steps per timing, median of {repeats} interleaved repeats. {verdict} The fused "
            "kernels read θ, p and ∇L once and write θ and p once (20 bytes per parameter); "
            "torch's SGD for-loop path makes three passes. Under the default `nonfinite='raise'` "
            "dynopt optimizers also guarantee that no step writes a non-finite value: one read "
            "of ∇L (finite gradients, and its largest |∇L|), and a bound on the result carried "
            "over from the previous step while nothing else wrote θ and p (else one read of "
            "them; a snapshot if the bound fails, and on BBI's bounces; see the result-check "
            "section). The `nonfinite='ignore'` rows show the "
            "update alone. BBI adds its "
            "global |Π|² (accumulated in the same pass) and a few scalar operations per step; "
            "it needs the loss value on the host (one synchronisation per step on CUDA). "
            "ECDSep makes three foreach passes (kick; drift with the global |p|² after the "
            "kick; rotation direction), draws one normal per parameter for its rotation and "
            "rescales p; it has no result bound, so the default checks take a snapshot every "
            "step. Its rotation normals come from a parallel numba Philox fill into a buffer "
            "kept between steps (counter = position and step, float32 Box–Muller); the "
            "torch.randn row draws them from the optimizer's CPU generator instead, as before "
            "that fill (compare both with the ν = 0 row, which draws none).")


if __name__ == "__main__":
    main()
