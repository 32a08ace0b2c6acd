"""The ``dynopt`` command line: ``study``, ``train``, ``reproduce NAME``, ``bench`` and ``compile``.

Each subcommand lives in its own module exposing ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; ``COMMANDS`` maps names to modules. Exit status: 0 success, 1 a failed
run (e.g. a divergence), 2 a user error (always one line on stderr; also a missing package,
named with the pip command that installs it), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["COMMANDS", "Parser", "count", "main"]

COMMANDS: dict[str, str] = {
    "study": "dynopt.cli.study",
    "train": "dynopt.cli.train",
    "reproduce": "dynopt.cli.reproduce",
    "bench": "dynopt.cli.bench",
    "compile": "dynopt.cli.compile",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2, as for every user error); also the
    parser of the benchmark scripts that ``dynopt bench`` runs."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")



def count(text: str) -> int:
    """The ``type`` of every integer option: an integer, also written in scientific notation
    (``1e3``, ``3e9``); a fraction (``1.5``), ``inf`` or ``nan`` is refused, and argparse
    names the option and the value (``argument --seed: invalid integer '1.5' (not a whole
    number)``)."""
    import math

    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid integer {text!r} (not finite)")
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"invalid integer {text!r} (not a whole number)")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dynopt",
        description="Neural-network training as continuous-time dynamics.",
    )
    parser.add_argument("--version", action="version", version=_version(),
                        help="print dynopt's version and those of its numeric stack, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP,
                           formatter_class=_DefaultsFormatter)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, with an unknown option reported by its subcommand's parser
    (``dynopt train: error: unrecognized arguments: ... (see dynopt train --help)``)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        owner = sub.choices.get(args.command, parser) if args.command else parser
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _version() -> str:
    """``dynopt X (torch …, numba …, numpy …, Python …)``: what a bug report needs."""
    import platform

    import numba
    import numpy
    import torch

    from .. import __version__

    return (f"dynopt {__version__} (torch {torch.__version__}, numba {numba.__version__}, "
            f"numpy {numpy.__version__}, Python {platform.python_version()})")


#: Import name → distribution name, where they differ.
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "pytorch_lightning": "pytorch-lightning"}


def missing_package(module: str) -> str:
    """One line for a package a command needs that is not installed: its pip name and whether
    it is one of dynopt's requirements (an incomplete install) or in which extra it is."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    dist = _DISTRIBUTIONS.get(module, module)
    where = f"pip install {dist}"
    try:
        reqs = requires("dynopt") or []
    except PackageNotFoundError:  # run from a source tree that was never installed
        reqs = []
    for req in reqs:
        name = re.match(r"[A-Za-z0-9_.-]*", req).group(0)
        if name.lower().replace("_", "-") == dist.lower():
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", req)
            where = (f"pip install 'dynopt[{extra.group(1)}]'" if extra else
                     f"pip install {dist} (a requirement of dynopt: this install is incomplete)")
            break
    return f"the package {dist} is not installed (import {module!r} failed): {where}"


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: ...)" to an option's help unless the help already says its default, or
    the default says nothing (a flag's False, an unset option's None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if not top or top == "dynopt":
            raise
        print(f"dynopt {args.command}: error: {missing_package(top)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # commands that can keep partial results catch this themselves and say what they kept
        print(f"dynopt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
