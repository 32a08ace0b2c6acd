"""The command line under user errors and Ctrl-C (issue 10, item 7).

Every user error is one line on stderr with exit status 2 and comes before any work; results
are written atomically; Ctrl-C keeps the completed work, says so and exits with 130.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re

import numpy as np
import pytest

import dynopt
from dynopt._files import prepare_output_dir, write_text_atomic
from dynopt.backends.numba.runner import NumbaBackend
from dynopt.cli import main
from dynopt.errors import Interrupted
from dynopt.reproductions.report import update_section

integrate_module = importlib.import_module("dynopt.integrate")
SMALL = ["--steps", "4000", "--chains", "4", "--no-plots"]


def _one_line_error(capsys, prefix: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


def _no_integration(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("integrate() ran before the user error was reported")

    monkeypatch.setattr(dynopt, "integrate", fail)


# --- user errors: one line, exit 2, before any work ----------------------------------------

@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["study", "--out", "/dev/null/x", *SMALL],
         "dynopt study: error: --out folder '/dev/null/x' cannot be written"),
        (["study", "--chains", "3e9", "--steps", "1000"],
         r"dynopt study: error: --chains=3000000000 x 1001 records"),
        (["study", "--chains", "0"], "dynopt study: error: --chains must be >= 1, got 0"),
        (["study", "--h", "-1"], "dynopt study: error: --h must be > 0, got -1.0"),
        (["study", "--temperature", "nan"], "dynopt study: error: --temperature must be finite"),
    ],
)
def test_study_user_errors_come_first_in_one_line(argv, message, capsys, monkeypatch):
    _no_integration(monkeypatch)
    assert main(argv) == 2
    line = _one_line_error(capsys, "dynopt study: error:")
    assert re.match(message, line), line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["study", "--chains", "abc"], "dynopt study: error: argument --chains: invalid integer"),
        (["study", "--chains", "2.5"], "dynopt study: error: argument --chains: invalid integer"),
        (["study", "--system", "nope"], "dynopt study: error: argument --system: invalid choice"),
        (["reproduce", "nope"], "dynopt reproduce: error: argument name: invalid choice"),
        (["train", "--epochs", "x"], "dynopt train: error: argument --epochs: invalid int"),
    ],
)
def test_parse_errors_are_one_line_with_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert _one_line_error(capsys, message)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "-1"], "dynopt train: error: --epochs must be >= 1, got -1"),
        (["train", "--optimizer", "nope"], "dynopt train: error: unknown optimizer 'nope'"),
        (["train", "--lr", "-1"], "dynopt train: error: --lr must be > 0, got -1.0"),
        (["train", "--seed", "-5"], "dynopt train: error: --seed must be >= 0, got -5"),
        (["train", "--out", "/dev/null/x"], "dynopt train: error: --out folder"),
    ],
)
def test_train_user_errors_are_one_line_with_status_2(argv, message, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started before the user error was reported")

    monkeypatch.setattr("dynopt.training.fit", fail)
    assert main(argv) == 2
    _one_line_error(capsys, message)


@pytest.mark.parametrize("seeds", ["-2", "0"])
def test_reproduce_refuses_a_seed_count_below_one(seeds, capsys, monkeypatch, tmp_path):
    import dynopt.reproductions.adlala as adlala

    def fail(args):
        raise AssertionError("the reproduction ran")

    monkeypatch.setattr(adlala, "run", fail)
    assert main(["reproduce", "adlala", "--seeds", seeds, "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, f"dynopt reproduce: error: --seeds must be >= 1, got {seeds}")


def test_docs_writer_never_writes_nan_rows(tmp_path):
    doc = tmp_path / "reproductions.md"
    doc.write_text("# Reproductions\n")
    update_section(doc, "x", "| a | b |\n|---|---|\n| 1.5 | 2 |")
    before = doc.read_text()
    for bad in ("| nan | 2 |", "| 0.5 | NaN |", "| -inf | 1 |", "| 3 | inf |"):
        with pytest.raises(ValueError, match="refusing to write .* into"):
            update_section(doc, "x", f"| a | b |\n|---|---|\n{bad}")
        assert doc.read_text() == before
    update_section(doc, "x", "| infinity-norm | nano |\n|---|---|\n| 1 | 2 |")  # words pass


# --- files: checked folders, atomic writes ---------------------------------------------------

def test_output_folder_is_created_and_checked(tmp_path):
    assert prepare_output_dir(tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"--out folder '.*file/sub' cannot be written"):
        prepare_output_dir(blocker / "sub", "--out")


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    assert write_text_atomic(target, "old") is False
    assert write_text_atomic(target, "new") is True and target.read_text() == "new"

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(target, "newer")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temp files


def test_study_warns_when_it_replaces_a_summary(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["study", *SMALL, "--out", str(out)]) == 0
    assert "replaced" not in capsys.readouterr().err
    assert main(["study", *SMALL, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: replaced the existing {out / 'summary.json'}" in err
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


# --- Ctrl-C ----------------------------------------------------------------------------------

def _interrupt_on_call(monkeypatch, n: int):
    """Make the numba backend's n-th advance() raise KeyboardInterrupt (as Ctrl-C would)."""
    real = NumbaBackend.advance
    calls = {"n": 0}

    def advance(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(NumbaBackend, "advance", advance)


def test_integrate_interrupted_keeps_the_completed_records(monkeypatch):
    monkeypatch.setattr(integrate_module, "CHUNK_WORK", 40)  # 10 steps per chunk of 4 chains
    _interrupt_on_call(monkeypatch, 4)  # three chunks = 30 steps complete
    system = dynopt.systems.Langevin(dynopt.potentials.Harmonic(), temperature=0.5)
    with pytest.raises(Interrupted, match="keeps the 16 records up to step 30") as info:
        dynopt.integrate(system, "BAOAB", [0.0], h=0.1, n_steps=100, n_chains=4,
                         record_every=2, seed=3)
    assert isinstance(info.value, KeyboardInterrupt)
    part = info.value.trajectory
    full = dynopt.integrate(system, "BAOAB", [0.0], h=0.1, n_steps=30, n_chains=4,
                            record_every=2, seed=3)
    np.testing.assert_array_equal(part.q, full.q)  # the kept records are the run's own
    np.testing.assert_allclose(part.t, full.t)
    assert part.final_state is None


def test_study_interrupted_writes_the_completed_part_and_says_so(tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr(integrate_module, "CHUNK_WORK", 4000)  # 1000 steps per chunk
    _interrupt_on_call(monkeypatch, 4)  # warm-up call, then two chunks of the run complete
    out = tmp_path / "s"
    assert main(["study", *SMALL, "--record-every", "10", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted after 2,000 of 4,000 steps; kept the 201 completed records" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["steps_done"] == 2000
    assert summary["draws"] == 201


def test_train_interrupted_keeps_the_evaluated_epochs(tmp_path, capsys, monkeypatch):
    import dynopt.training as training

    real = training.batches
    calls = {"n": 0}

    def batches(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # during epoch 5; epochs 2 and 4 were evaluated
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "batches", batches)
    rc = main(["train", "--data", "wine", "--epochs", "20", "--out", str(tmp_path)])
    assert rc == 130
    err = capsys.readouterr().err
    path = tmp_path / "train" / "langevin-wine.json"
    assert f"interrupted after epoch 4 of 20; kept the metrics evaluated so far in {path}" in err
    saved = json.loads(path.read_text())
    assert saved["epoch"] == [2, 4] and saved["interrupted"] is True
    # the run time so far and the monitor's records up to the interrupt (they were 0.0 and
    # dropped); wine: 142 training points, batches of 25 → 6 steps per epoch, a record every 20
    assert saved["seconds"] > 0
    assert saved["monitor"]["step"] == [0, 20]
    assert len(saved["monitor"]["loss"]) == 2


def test_bench_unknown_name_is_one_line_with_status_2(capsys):
    assert main(["bench", "nope"]) == 2
    _one_line_error(capsys, "dynopt bench: error: unknown benchmark 'nope'; available: ")


def test_result_files_get_an_ordinary_files_mode(tmp_path):
    """mkstemp creates 0600 files: results written atomically were unreadable by the group and
    others whatever the umask."""
    import os
    import stat

    from dynopt._files import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o644


def test_system_repr_has_no_dangling_separator():
    from dynopt import potentials, systems

    assert repr(systems.Hamiltonian(potentials.DoubleWell(1))) == "Hamiltonian(DoubleWell(dim=1))"
    assert repr(systems.Langevin(potentials.Harmonic(), gamma=1.0, temperature=0.5)).startswith(
        "Langevin(Harmonic(")


def test_network_study_interrupted_keeps_the_completed_records(tmp_path, capsys, monkeypatch):
    """Ctrl-C during `dynopt study --model` kept nothing; it now reports the statistics of the
    records completed so far and marks the summary interrupted, as the plain study does (the
    per-layer temperatures of such a trajectory divided by n = 0: it has no final state and,
    recorded with observables=, no θ)."""
    from dynopt.backends.torch.runner import TorchBackend

    monkeypatch.setattr(integrate_module, "CHUNK_WORK", 40)  # 20 steps per chunk of 2 chains
    real = TorchBackend.advance
    calls = {"n": 0}

    def advance(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # three chunks (60 steps) complete
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TorchBackend, "advance", advance)
    out = tmp_path / "n"
    rc = main(["study", "--model", "mlp", "--steps", "200", "--chains", "2", "--record-every",
               "4", "--no-plots", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 130
    assert "interrupted after 60 of 200 steps" in captured.err
    assert "interrupted: no final θ" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["layers"]["0.weight"]["n"] == 200
    for layer in summary["layers"].values():
        assert math.isfinite(layer["kinetic"]["value"])


def test_version_names_dynopt_and_its_stack_and_exits_0(capsys):
    import importlib.metadata

    import numba
    import torch

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"dynopt {dynopt.__version__} (torch {torch.__version__}, "
                          f"numba {numba.__version__}, ")
    # one source of truth: setup.cfg reads the version from dynopt/__init__.py (the installed
    # metadata alone would also agree with a literal "0.1.0" left in setup.cfg)
    import configparser
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg", encoding="utf-8")
    assert cfg["metadata"]["version"] == "attr: dynopt.__version__"
    assert importlib.metadata.version("dynopt") == dynopt.__version__
