"""``dynopt reproduce NAME``: rerun a paper's result, print a table, save plots."""

from __future__ import annotations

import argparse
import importlib

from ..reproductions import REGISTRY

HELP = "Reproduce a paper's result: " + ", ".join(REGISTRY) + "."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(REGISTRY), help="which reproduction")
    parser.add_argument("--out", default="dynopt-out", help="output folder for tables and plots")
    parser.add_argument("--quick", action="store_true",
                        help="a reduced run (fewer seeds/epochs) that finishes in minutes")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the "
                        "reproduction's own)")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the measured table into docs/reproductions.md")


def run(args: argparse.Namespace) -> int:
    mod = importlib.import_module(REGISTRY[args.name])
    return int(mod.run(args) or 0)
