"""``dynopt bench [NAME]``: run the side-by-side benchmarks in ``benchmarks/``."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

HELP = "Run the benchmarks in benchmarks/ (needs a source checkout)."


def benchmarks_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "benchmarks"


def available() -> list[str]:
    d = benchmarks_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.py") if not p.stem.startswith("_"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = available()
    parser.add_argument("name", nargs="?", default=None,
                        help="benchmark to run: " + (", ".join(names) if names else
                                                     "none found (needs a source checkout)")
                        + "; 'all' runs every one (default: list them)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the numbers into docs/benchmarks.md")
    parser.add_argument("script_args", nargs=argparse.REMAINDER,
                        help="further arguments for the benchmark script, e.g. "
                             "'dynopt bench gpu --device cpu --size small'")


def run(args: argparse.Namespace) -> int:
    names = available()
    if not names:
        print(f"dynopt bench: error: no benchmarks found in {benchmarks_dir()} (dynopt bench "
              "needs a source checkout)", file=sys.stderr)
        return 1
    if args.name is None:
        print("benchmarks:", ", ".join(names))
        return 0
    todo = names if args.name == "all" else [args.name]
    for name in todo:
        if name not in names:
            print(f"dynopt bench: error: unknown benchmark {name!r}; available: "
                  f"{', '.join(names)}", file=sys.stderr)
            return 2
        argv = [name] + (["--quick"] if args.quick else []) + (
            ["--update-docs"] if args.update_docs else []) + list(args.script_args or [])
        old_argv, old_path = sys.argv, list(sys.path)
        sys.argv = argv
        sys.path.insert(0, str(benchmarks_dir()))  # the scripts import their _common helpers
        try:
            runpy.run_path(str(benchmarks_dir() / f"{name}.py"), run_name="__main__")
        finally:
            sys.argv, sys.path[:] = old_argv, old_path
    return 0
