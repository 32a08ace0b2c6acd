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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynopt.reproductions.report import markdown_table, update_section  # noqa: E402

__all__ = ["ROOT", "machine", "markdown_table", "parse_args", "time_call", "write_section"]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the table into docs/benchmarks.md")
    return parser.parse_args()


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
