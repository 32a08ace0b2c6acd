"""``dynopt bench [NAME]``: run the side-by-side benchmarks in ``benchmarks/``.

A script runs as ``dynopt bench NAME`` (its usage and error lines name that command). Its user
errors are one line on stderr with exit status 2, as for every dynopt command: its argparse
errors, its own refusals (``SystemExit("...")`` or ``_common.usage_error``) and a file it
cannot read or write (``--from-report missing.md``), instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
import types
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
        status = _run_script(name, argv[1:])
        if status:
            return status
    return 0


def _run_script(name: str, argv: list[str]) -> int:
    """Run ``benchmarks/NAME.py`` as ``dynopt bench NAME`` with ``argv``; its exit status."""
    prog = f"dynopt bench {name}"
    path = benchmarks_dir() / f"{name}.py"
    # runpy.run_path would set sys.argv[0] to the file, and argparse read "usage: NAME.py"
    module = types.ModuleType("__main__")
    module.__file__ = str(path)
    old_argv, old_path, old_main = sys.argv, list(sys.path), sys.modules.get("__main__")
    sys.argv = [prog, *argv]  # argparse's prog (usage: dynopt bench NAME ...)
    sys.path.insert(0, str(benchmarks_dir()))  # the scripts import their _common helpers
    sys.modules["__main__"] = module
    try:
        exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0  # argparse and usage_error printed their one line
        print(f"{prog}: error: {done.code}", file=sys.stderr)
        return 2
    except OSError as err:
        what = f"{err.strerror}: {err.filename}" if err.filename and err.strerror else str(err)
        print(f"{prog}: error: {what}", file=sys.stderr)
        return 2
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
        if old_main is not None:
            sys.modules["__main__"] = old_main
    return 0
