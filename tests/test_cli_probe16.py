"""Session 16's new-user probe of the ``dynopt`` command line: what a first user met.

Each test names the old behaviour it replaces.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from dynopt.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _strict_json(text: str) -> object:
    """``json.loads`` that refuses NaN and ±Infinity, as RFC 8259 (and JSON.parse) do."""
    def refuse(token: str) -> float:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


# --- NUMBA_DISABLE_JIT=1: one line and exit 2, not a traceback -------------------------------
# In fresh interpreters with the real variable: numba reads it when a function is decorated,
# so patching numba.config here would leave pure-Python kernels behind in this test process.

_NO_JIT_SCRIPT = """
import contextlib, io, sys
from dynopt.cli import main
for argv in sys.argv[1:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv.split())
    print("rc", rc, err.getvalue().strip().replace(chr(10), " | "))
"""


def _no_jit(tmp_path: Path, *argvs: str) -> list[str]:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", _NO_JIT_SCRIPT, *argvs], capture_output=True,
                         text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    return [ln[3:] for ln in res.stdout.splitlines() if ln.startswith("rc ")]


def test_commands_under_numba_disable_jit_are_one_line_with_status_2(tmp_path):
    """Before: dynopt study printed its header, then a RuntimeError traceback from get_backend
    (exit 1); dynopt compile the same traceback; dynopt train failed at the first optimizer
    step deep in numba ("NotImplementedError: <intrinsic address_as_pointer> is not usable in
    pure-python"), for every optimizer. Now study and compile say so in one line, exit 2,
    before any output folder; train runs, since the optimizers step on their torch paths
    under the variable (tests/test_faults_probe16.py), and BBI's shell keeps its history."""
    lines = _no_jit(tmp_path, f"study --steps 100 --chains 2 --out {tmp_path / 's'}",
                    "compile --only integrate",
                    f"train --optimizer bbi --epochs 2 --record-every 5 --no-plots "
                    f"--out {tmp_path / 't'}")
    assert lines[:2] == [
        "2 dynopt study: error: --backend numba cannot run with NUMBA_DISABLE_JIT=1 (its "
        "kernels use numba intrinsics and compiled function pointers, which have no "
        "pure-Python form): unset NUMBA_DISABLE_JIT, or pass --backend torch",
        "2 dynopt compile: error: NUMBA_DISABLE_JIT=1 turns numba's compiler off, so there is "
        "nothing to compile (and dynopt's numba kernels cannot run): unset NUMBA_DISABLE_JIT"]
    assert lines[2].startswith("0 ")
    assert not (tmp_path / "s").exists()
    rec = _strict_json((tmp_path / "t" / "train" / "bbi-spirals.json").read_text())
    assert len(rec["train_loss"]) == 2 and all(math.isfinite(v) for v in rec["train_loss"])


def test_study_backend_torch_runs_under_numba_disable_jit(tmp_path):
    """The way out the message names works: the torch backend and the study's statistics do
    not need numba's compiler."""
    out = tmp_path / "o"
    lines = _no_jit(tmp_path, f"study --backend torch --steps 400 --chains 2 --no-plots "
                              f"--out {out}")
    assert lines[0].startswith("0 ")
    assert _strict_json((out / "summary.json").read_text())["backend"] == "torch"


# --- dynopt train writes standard JSON ------------------------------------------------------

def test_train_json_is_standard_json_with_null_for_undefined(tmp_path, capsys):
    """Before: the record 0 per-layer kinetic energies (no momenta yet) were written as the
    bare token NaN (json.dumps), which RFC 8259 and JSON.parse reject; dynopt study already
    wrote null. Now null, and every other number unchanged."""
    assert main(["train", "--epochs", "1", "--record-every", "5", "--no-plots",
                 "--out", str(tmp_path)]) == 0
    rec = _strict_json((tmp_path / "train" / "langevin-spirals.json").read_text())
    kin = rec["monitor"]["kinetic:0.weight"]
    assert kin[0] is None  # the first record: no momenta yet
    assert all(isinstance(v, float) and math.isfinite(v) for v in kin[1:])
    assert rec["epoch"] == [1] and math.isfinite(rec["test_loss"][0])


# --- dynopt study --model records the values it ran with -------------------------------------

def test_network_study_config_records_the_model_defaults_it_used(tmp_path, capsys):
    """Before: summary.json's "config" of a --model run held the potential study's defaults
    (chains 64, temperature 0.25, steps 10⁶, backend numba) for every option not given, while
    the run used 8 replicas, τ = 1e-3 on torch. Now the config holds the values used."""
    assert main(["study", "--model", "mlp", "--steps", "16", "--chains", "2", "--no-plots",
                 "--out", str(tmp_path)]) == 0
    s = _strict_json((tmp_path / "summary.json").read_text())
    cfg = s["config"]
    assert (cfg["steps"], cfg["chains"], cfg["temperature"], cfg["backend"]) == (
        16, 2, 1e-3, "torch")
    assert (s["chains"], s["temperature"]) == (2, 1e-3)
    assert cfg["record_every"] is None and s["record_every"] == 1


def test_network_study_keeps_its_summary_when_plotting_is_interrupted_and_warns_on_replace(
        tmp_path, capsys, monkeypatch):
    """Before: the --model study wrote summary.json only after its plots, so Ctrl-C while
    plotting lost the computed statistics (the generic "interrupted", nothing written), and a
    rerun replaced an earlier summary silently, where the plain study writes the summary
    first and warns (docs/diagnostics.md). Now both behave like the plain study."""
    from dynopt.cli import study_network

    argv = ["study", "--model", "mlp", "--steps", "16", "--chains", "2", "--out", str(tmp_path)]
    assert main([*argv, "--no-plots"]) == 0
    first = (tmp_path / "summary.json").read_text()
    assert "replaced" not in capsys.readouterr().err

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study_network, "network_plots", interrupt)
    assert main(argv) == 130
    path = tmp_path / "summary.json"
    assert capsys.readouterr().err.splitlines() == [
        f"dynopt study: warning: replaced the existing {path}",
        f"dynopt study: interrupted while plotting; the results are in {path}"]
    again = _strict_json(path.read_text())
    assert again["loss"] == _strict_json(first)["loss"]  # the same seed: the same statistics
    assert "plots" not in again
