"""``dynopt train``: train a small model on a built-in dataset with a dynopt optimizer."""

from __future__ import annotations

import argparse

HELP = ("Train a small model on built-in data with a dynopt optimizer, monitoring per-layer "
        "temperatures, thermostat, energy and (optionally) λ_max against the stability limit.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizer", default="langevin", help="dynopt.optim optimizer name")
    parser.add_argument("--data", default="spirals", choices=["spirals", "digits", "wine"])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="dynopt-out")
    parser.add_argument("--record-every", type=int, default=20,
                        help="optimizer steps between monitor records (loss, energy, per-layer "
                             "temperatures, thermostat)")
    parser.add_argument("--curvature-every", type=int, default=0,
                        help="also record λ_max and the stability limit every this many records "
                             "(0: never)")
    parser.add_argument("--no-plots", action="store_true", help="skip monitor.png")


def run(args: argparse.Namespace) -> int:
    from ..training import train_from_cli

    return train_from_cli(args)
