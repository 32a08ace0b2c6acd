"""``dynopt reproduce NAME``: rerun a paper's result, print a table, save plots."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..reproductions import REGISTRY
from . import count

HELP = "Reproduce a paper's result: " + ", ".join(REGISTRY) + "."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(REGISTRY), help="which reproduction")
    parser.add_argument("--out", default="dynopt-out", help="output folder for tables and plots")
    parser.add_argument("--quick", action="store_true",
                        help="a reduced run (fewer seeds/epochs) that finishes in minutes")
    parser.add_argument("--seeds", type=count, default=None, help="number of seeds (default: the "
                        "reproduction's own)")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the measured table into docs/reproductions.md")


def run(args: argparse.Namespace) -> int:
    """Options are checked (``--seeds`` >= 1, a writable ``--out``, with ``--update-docs`` a
    source checkout's docs/reproductions.md) before any work. On Ctrl-C,
    reproductions that cache their runs (``RESUMABLE = True``) keep every finished one."""
    from .._files import prepare_output_dir
    from ..reproductions.report import docs_path, seed_count

    try:
        seed_count(args, 1)
        prepare_output_dir(args.out, "--out")
    except (ValueError, TypeError) as err:
        print(f"dynopt reproduce: error: {err}", file=sys.stderr)
        return 2
    if args.update_docs and not docs_path().is_file():
        # checked before the run: otherwise an installed dynopt ran for minutes to hours and
        # then failed writing into site-packages/docs/
        print(f"dynopt reproduce: error: --update-docs rewrites {docs_path()}, which does not "
              "exist (it needs a source checkout, e.g. pip install -e .); run without "
              "--update-docs to get the table and plots under --out", file=sys.stderr)
        return 2
    mod = importlib.import_module(REGISTRY[args.name])
    try:
        return int(mod.run(args) or 0)
    except KeyboardInterrupt:
        kept = (f"finished runs are kept under {args.out} and a rerun with the same options "
                "continues from them" if getattr(mod, "RESUMABLE", False)
                else "this reproduction does not cache its runs; nothing was written")
        print(f"dynopt reproduce: interrupted; {kept}", file=sys.stderr)
        return 130
