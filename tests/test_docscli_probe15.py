"""A newcomer's probe of the command line and the docs (session 15).

Each test here failed before its fix: optimizer names were case-sensitive (``--optimizer
Langevin`` refused although the class is ``Langevin``), a diverging ``dynopt train`` ended in a
traceback, ``--out ""`` wrote into the current folder, ``dynopt study --seed 2**64`` and the
memory check named API arguments instead of the options, a lowercase splitting string got a
letter-by-letter error, and ``--help`` showed a wrong ``--dim`` default and "(default: False)" /
"(default: None)" on flags and unset options, and an unknown option of a subcommand was
reported as the top-level command's. The last test keeps the documented command lines
parseable (a guard: they all parsed before).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest
import torch

import dynopt
from dynopt import optim
from dynopt.cli import build_parser, main
from dynopt.cli.study_registry import POTENTIALS
from dynopt.integrators import resolve
from dynopt.optim import registry

ROOT = Path(__file__).resolve().parents[1]


def _one_line(capsys, prefix: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


# --- optimizer names: any case, one place (optim.registry.canonical_name) -------------------

@pytest.mark.parametrize(("given", "registered"), [
    ("langevin", "langevin"), ("Langevin", "langevin"), ("LANGEVIN", "langevin"),
    ("NoseHoover", "nose-hoover"), ("nose_hoover", "nose-hoover"), ("Nose-Hoover", "nose-hoover"),
    ("OverdampedLangevin", "overdamped-langevin"), ("AdLaLa", "adlala"),
    ("HeavyBall", "heavyball"), ("ECDSep", "ecdsep"), ("DDPNOpt", "ddpnopt"),
    ("AdaptiveLangevin", "adaptive-langevin"), ("BBI", "bbi"), ("LOL", "lol"),
])
def test_optimizer_names_resolve_in_any_case_to_the_registered_name(given, registered):
    assert registry.canonical_name(given) == registered


def test_every_class_name_of_a_registered_optimizer_resolves_to_it():
    p = torch.nn.Parameter(torch.zeros(3))
    for name in sorted(optim.REGISTRY):
        if name in ("adlala", "lol", "ddpnopt"):  # need a module of layers
            continue
        cls = type(optim.make(name, [p]))
        if cls.__name__ == "OverdampedLangevin" and name == "sgld":
            continue  # an alias of overdamped-langevin
        assert registry.canonical_name(cls.__name__) == name, cls.__name__


def test_make_takes_any_case_and_unknown_names_list_the_registered_ones():
    p = torch.nn.Parameter(torch.zeros(3))
    assert type(optim.make("NoseHoover", [p])) is optim.NoseHoover
    assert type(optim.make("LANGEVIN", [p], lr=0.1)) is optim.Langevin
    with pytest.raises(ValueError, match=r"unknown optimizer 'Langevinn'; known: "
                                         r"adaptive-langevin, adlala, .*, langevin, "):
        optim.make("Langevinn", [p])
    with pytest.raises(TypeError, match="optimizer name must be a string, got 3 of type int"):
        optim.make(3, [p])


def test_a_name_that_differs_from_a_registered_one_only_in_case_is_refused():
    before = dict(optim.REGISTRY)
    with pytest.raises(ValueError, match="'Nose_Hoover' differs from the registered "
                                         "'nose-hoover' only in case"):
        registry.register("Nose_Hoover")
    assert before == optim.REGISTRY


@pytest.mark.parametrize("given", ["Langevin", "NoseHoover"])
def test_train_accepts_a_class_name_and_writes_under_the_registered_name(given, tmp_path, capsys):
    rc = main(["train", "--optimizer", given, "--epochs", "1", "--out", str(tmp_path),
               "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0
    registered = registry.canonical_name(given)
    record = json.loads((tmp_path / "train" / f"{registered}-spirals.json").read_text())
    assert record["epoch"] == [1]
    assert out.startswith(f"dynopt train: {type(optim.make(registered, [torch.zeros(1)])).__name__}"
                          " on spirals")


# --- dynopt train: a divergence is a failed run (status 1, one line), not a traceback -------

def test_train_divergence_is_one_line_with_status_1(tmp_path, capsys):
    rc = main(["train", "--data", "wine", "--lr", "1e38", "--epochs", "2",
               "--out", str(tmp_path), "--no-plots"])
    assert rc == 1
    _one_line(capsys, "dynopt train: Langevin: step 1 would write a non-finite value")


# --- --out "" is refused by every command, before any work ----------------------------------

def _fail(*args, **kwargs):
    raise AssertionError("work started before the user error was reported")


@pytest.mark.parametrize("argv", [
    ["train", "--out", ""],
    ["study", "--out", "", "--steps", "400", "--chains", "2"],
    ["study", "--out", " ", "--model", "mlp"],
    ["reproduce", "adlala", "--out", ""],
])
def test_an_empty_out_is_refused(argv, capsys, monkeypatch):
    import dynopt.reproductions.adlala as adlala

    monkeypatch.setattr("dynopt.training.fit", _fail)
    monkeypatch.setattr(dynopt, "integrate", _fail)
    monkeypatch.setattr(adlala, "run", _fail)
    assert main(argv) == 2
    value = argv[argv.index("--out") + 1]
    _one_line(capsys, f"dynopt {argv[0]}: error: --out must name a folder, got {value!r} "
                      "(use '.' for the current folder)")


# --- dynopt study names its options ---------------------------------------------------------

def test_study_names_its_seed_option_above_64_bits(capsys, monkeypatch):
    monkeypatch.setattr(dynopt, "integrate", _fail)
    assert main(["study", "--seed", str(2**64), "--steps", "400", "--chains", "2"]) == 2
    _one_line(capsys, "dynopt study: error: --seed must be <= 18446744073709551615, got "
                      "18446744073709551616")


def test_study_memory_hint_names_the_options(capsys, monkeypatch):
    monkeypatch.setattr(dynopt, "integrate", _fail)
    assert main(["study", "--steps", str(10**9), "--record-every", "1", "--chains", "64"]) == 2
    line = _one_line(capsys, "dynopt study: error: --chains=64 x 1000000001 records")
    assert re.search(r"raise --record-every to at least \d+ \(got 1\)", line), line
    assert "n_chains" not in line and "record_every" not in line


# --- integrator names: a lowercase string is a name, and the error lists the names ----------

def test_a_lowercase_splitting_is_an_unknown_name_with_a_hint():
    with pytest.raises(ValueError, match=r"unknown integrator 'bab' \(the splitting 'BAB'\? its "
                                         r"letters are capitals\); names: aboba, baoab, em, "):
        resolve("bab")
    with pytest.raises(ValueError, match=r"unknown integrator 'verlett'; names: .*leapfrog.*; or "
                                         r"a splitting string over the letters ABO"):
        resolve("verlett")
    assert resolve("BAB").name == "BAB" and resolve("Verlet").name == "Leapfrog"


# --- an unknown option is reported by its subcommand -----------------------------------------

@pytest.mark.parametrize(("argv", "line"), [
    (["train", "--bogus", "1"],
     "dynopt train: error: unrecognized arguments: --bogus 1 (see dynopt train --help)"),
    (["study", "--steps", "5", "extra"],
     "dynopt study: error: unrecognized arguments: extra (see dynopt study --help)"),
    (["--bogus"], "dynopt: error: unrecognized arguments: --bogus (see dynopt --help)"),
])
def test_an_unknown_option_names_its_subcommand(argv, line, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert _one_line(capsys, line) == line


# --- --help says what the code does ---------------------------------------------------------

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_study_help_gives_each_potentials_default_dim():
    dim = next(a for a in _subparsers()["study"]._actions if "--dim" in a.option_strings)
    clauses = dim.help.removeprefix("number of coordinates (default: ").rstrip(")").split("; ")
    stated = {name: int(clause.split(" for ")[0])
              for clause in clauses for name in clause.split(" for ")[1].split(", ")}
    assert stated == {name: entry.default_dim for name, entry in POTENTIALS.items()}


def test_help_shows_no_empty_defaults():
    for name, sub in _subparsers().items():
        text = sub.format_help()
        assert "(default: False)" not in text and "(default: None)" not in text, name
    assert "(default: 0.1)" in _subparsers()["study"].format_help()  # real defaults stay


# --- the documented command lines parse -----------------------------------------------------

_COMMAND = re.compile(r"(?:^ {4}|`|&& )(?:\.venv/bin/|python -m )?dynopt "
                      r"((?:study|train|reproduce|bench|compile)\b[^`#\n]*)")
_PLACEHOLDERS = ("[", "…", "NAME", "τ", "|")


def _documented_commands() -> list[tuple[str, str]]:
    """(file, command) for each ``dynopt ...`` line or span of the docs that is a command, not
    a template (``dynopt reproduce NAME``) or a bare mention of ``dynopt reproduce``."""
    found = []
    for doc in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in doc.read_text(encoding="utf-8").splitlines():
            for m in _COMMAND.finditer(line):
                command = m.group(1).strip()
                if command != "reproduce" and not any(p in command for p in _PLACEHOLDERS):
                    found.append((doc.name, command))
    return found


def test_the_documented_command_lines_parse():
    commands = _documented_commands()
    assert len(commands) >= 30, commands  # the scan finds them
    parser = build_parser()
    for doc, command in commands:
        argv = shlex.split(command)
        if "--help" in argv:
            continue
        args = parser.parse_args(argv)  # an unknown option or value exits 2 here
        assert args.command == argv[0], (doc, command)
