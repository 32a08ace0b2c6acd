"""Shared helpers for the benchmarks: timing, machine description, writing docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynopt.cli import Parser  # noqa: E402
from dynopt.reproductions.report import markdown_table, update_section  # noqa: E402

__all__ = ["ROOT", "Parser", "UsageError", "command", "fixed_gradient_params", "machine",
           "markdown_table", "parse_args", "plain_baoab_double_well", "time_call",
           "update_section", "usage_error", "write_section"]


class UsageError(SystemExit):
    """A benchmark's refusal of its options: exit status 2 (a user error, as everywhere in
    dynopt); ``str()`` is the message, which :func:`usage_error` printed."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def usage_error(message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` on stderr (``PROG`` is ``dynopt bench NAME`` under
    ``dynopt bench``, the script's file name when run directly) and exit with status 2.

    Raises:
        UsageError: Always.
    """
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "benchmark"
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise UsageError(message)


def parse_args(description: str) -> argparse.Namespace:
    parser = Parser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the table into docs/benchmarks.md")
    return parser.parse_args()


def command(script: str, args: argparse.Namespace, *options: str) -> str:
    """The command line that writes a docs section: ``python benchmarks/SCRIPT.py [OPTIONS]
    [--quick] --update-docs``, with ``--quick`` exactly when this run had it (a quick run's
    numbers must not read as those of the full command).

    Args:
        script: The script's name without ``.py``.
        args: The parsed options (``args.quick``).
        *options: Further options of this run, as typed (``"--device cuda"``).
    """
    parts = [f"python benchmarks/{script}.py", *options]
    if getattr(args, "quick", False):
        parts.append("--quick")
    return " ".join([*parts, "--update-docs"])


def fixed_gradient_params(n_tensors: int, numel: int, *, seed: int = 0) -> list:
    """``n_tensors`` float32 parameters of ``numel`` elements with fixed random gradients
    (scale 1e-3): the input of every optimizer-step benchmark."""
    import torch

    torch.manual_seed(seed)
    params = [torch.randn(numel) for _ in range(n_tensors)]
    for p in params:
        p.grad = torch.randn(numel) * 1e-3
    return params


def own_copy(params: list) -> list:
    """Copies of ``params`` that share their (read-only) gradients: one set per optimizer of a
    benchmark, so that no optimizer steps another's parameters. Interleaved rows on shared
    parameters would each see the others' writes, which (rightly) voids dynopt's carried
    overflow bound every step (dynopt.optim.bound); a training loop owns its parameters."""
    out = []
    for p in params:
        q = p.detach().clone()
        q.grad = p.grad
        out.append(q)
    return out


def interleaved_times(rows: dict[str, Callable[[], object]], *, steps: int, rounds: int,
                      warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each row, one value per round: every round runs ``steps`` calls of
    every row in turn (so that load changes of a shared machine hit all rows alike), after
    ``warmup`` calls of each (state, kernels)."""
    for fn in rows.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - t0) / steps)
    return times


def time_call(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    import numba
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"numba {numba.__version__} ({numba.get_num_threads()} threads)")


def write_section(name: str, title: str, command: str, table: str, notes: str = "") -> None:
    body = (f"### {title}\n\nMeasured with `{command}` on {machine()}, "
            f"{time.strftime('%Y-%m-%d')}.\n\n{table}\n")
    if notes:
        body += f"\n{notes}\n"
    update_section(ROOT / "docs" / "benchmarks.md", name, body)
    print(f"updated docs/benchmarks.md section {name!r}")


def plain_baoab_double_well(chains: int, n_steps: int, dtype: object, device: object = "cpu", *,
                            h: float = 0.05, gamma: float = 1.0, tau: float = 0.25) -> object:
    """BAOAB on U(q) = (q² − 1)² per coordinate (DoubleWell, 2 coordinates), written by hand
    with batched torch ops, the gradient reused first-same-as-last: the baseline a user would
    write. Returns q after ``n_steps`` (on the device)."""
    import math

    import torch

    g = torch.Generator(device=device).manual_seed(0)
    q = torch.ones(chains, 2, dtype=dtype, device=device)  # type: ignore[arg-type]
    p = torch.zeros(chains, 2, dtype=dtype, device=device)  # type: ignore[arg-type]
    c = math.exp(-gamma * h)
    d = math.sqrt((1 - c * c) * tau)
    grad = 4 * q * (q * q - 1)
    for _ in range(n_steps):
        p.add_(grad, alpha=-h / 2)
        q.add_(p, alpha=h / 2)
        p.mul_(c).add_(torch.randn(q.shape, generator=g, dtype=dtype, device=device),  # type: ignore[arg-type]
                       alpha=d)
        q.add_(p, alpha=h / 2)
        grad = 4 * q * (q * q - 1)
        p.add_(grad, alpha=-h / 2)
    return q
