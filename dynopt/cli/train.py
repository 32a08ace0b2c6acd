"""``dynopt train``: train a small model on a built-in dataset with a dynopt optimizer."""

from __future__ import annotations

import argparse
import sys

from . import count

HELP = ("Train a small model on built-in data with a dynopt optimizer, monitoring per-layer "
        "temperatures, thermostat, energy and (optionally) λ_max against the stability limit.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizer", default="langevin",
                        help="dynopt.optim registry name, e.g. langevin, adlala, nose-hoover, "
                             "heavyball, bbi (any case; class names such as NoseHoover work "
                             "too; an unknown name lists them all)")
    parser.add_argument("--data", default="spirals", choices=["spirals", "digits", "wine"],
                        help="data set (default: spirals; digits and wine ship with "
                             "scikit-learn)")
    parser.add_argument("--epochs", type=count, default=100, help="epochs (default: 100)")
    parser.add_argument("--lr", type=float, default=None,
                        help="step size (default: the optimizer's own for the data set)")
    parser.add_argument("--seed", type=count, default=0,
                        help="seed of the data split, the initialization and the optimizer "
                             "(default: 0)")
    parser.add_argument("--out", default="dynopt-out",
                        help="output folder; results go to OUT/train/ (default: dynopt-out)")
    parser.add_argument("--record-every", type=count, default=20,
                        help="optimizer steps between monitor records (loss, energy, per-layer "
                             "temperatures, thermostat)")
    parser.add_argument("--curvature-every", type=count, default=0,
                        help="also record λ_max and the stability limit every this many records "
                             "(0: never)")
    parser.add_argument("--no-plots", action="store_true", help="skip monitor.png")
    parser.add_argument("--threads", type=count, default=1,
                        help="torch intra-op threads during the run (these small models gain "
                             "nothing from more)")


def run(args: argparse.Namespace) -> int:
    """User errors (bad option values, unknown optimizer, unwritable --out) are one line on
    stderr and exit status 2, a divergence one line and exit status 1; Ctrl-C keeps the epochs
    completed so far (exit 130)."""
    import torch

    from .._validation import check_int
    from ..training import train_from_cli

    threads = torch.get_num_threads()
    try:
        want = check_int("--threads", getattr(args, "threads", 1), minimum=1)
    except (ValueError, TypeError) as err:
        print(f"dynopt train: error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(want)
    try:
        return train_from_cli(args)
    finally:
        torch.set_num_threads(threads)
