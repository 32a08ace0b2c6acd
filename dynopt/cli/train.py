"""``dynopt train``: train a small model on a built-in dataset with a dynopt optimizer."""

from __future__ import annotations

import argparse

HELP = "Train a small model on built-in data with a dynopt optimizer (see --help)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizer", default="langevin", help="dynopt.optim optimizer name")
    parser.add_argument("--data", default="spirals", choices=["spirals", "digits", "wine"])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="dynopt-out")


def run(args: argparse.Namespace) -> int:
    """User errors (bad option values, unknown optimizer, unwritable --out) are one line on
    stderr and exit status 2; Ctrl-C keeps the epochs completed so far (exit 130)."""
    from ..training import train_from_cli

    return train_from_cli(args)
