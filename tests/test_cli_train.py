"""``dynopt train`` with its training monitor: printed temperatures, limit and saved records."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from dynopt.cli import main


def test_train_prints_monitor_and_limit(tmp_path, capsys):
    """Langevin (h = 0.25) on the spirals: every report line has 4 per-layer T_kin and T_conf
    values and λ_max against the BAOAB limit 4/h² = 64; the final table has one row per
    parameter tensor with n = its size; the JSON holds one record per 5 steps."""
    rc = main(["train", "--optimizer", "langevin", "--epochs", "4", "--record-every", "5",
               "--curvature-every", "8", "--out", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 4
    for ln in lines:
        kin = re.search(r"T_kin \[([^\]]*)\]", ln).group(1).split()
        conf = re.search(r"T_conf \[([^\]]*)\]", ln).group(1).split()
        assert len(kin) == len(conf) == 4
        assert all(float(v) > 0 for v in kin)
    lims = [float(m) for m in re.findall(r"/ limit ([0-9.]+)", text)]
    assert lims and all(v == pytest.approx(64.0) for v in lims)
    rows = {r.split()[0]: int(r.split()[1]) for r in text.splitlines()
            if re.match(r"^[02]\.(weight|bias)\s", r)}
    assert rows == {"0.weight": 200, "0.bias": 100, "2.weight": 100, "2.bias": 1}
    rec = json.loads((tmp_path / "train" / "langevin-spirals.json").read_text())
    steps = 4 * 20  # 500 points / batch 25 = 20 steps per epoch
    assert rec["monitor"]["step"] == list(range(0, steps + 1, 5))
    lam = np.array(rec["monitor"]["lambda_max"], dtype=float)
    assert np.isfinite(lam[::8]).all() and np.isnan(lam[1::8]).all()
    assert (tmp_path / "train" / "langevin-spirals" / "monitor.png").stat().st_size > 5000


@pytest.mark.parametrize("optimizer", ["bbi", "ecdsep", "ddpnopt"])
def test_train_runs_the_optimizers_that_read_the_loss_and_ddpnopt_on_spirals(
        optimizer, tmp_path, capsys):
    """`dynopt train --optimizer bbi/ecdsep` always crashed (the step got no loss), and
    ddpnopt on the default spirals crashed (softmax Hessian on one sigmoid output)."""
    rc = main(["train", "--optimizer", optimizer, "--data", "spirals", "--epochs", "2",
               "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    record = json.loads((tmp_path / "train" / f"{optimizer}-spirals.json").read_text())
    assert np.isfinite(record["train_loss"]).all()


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--record-every", "0"], "--record-every must be >= 1, got 0"),
    (["--epochs", "-1"], "--epochs must be >= 1, got -1"),
    (["--seed", str(2**64)], "--seed must be <= 18446744073709551615"),  # was a traceback
])
def test_train_option_errors_are_one_line_with_status_2(argv, message, tmp_path, capsys):
    rc = main(["train", "--optimizer", "langevin", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_train_report_layers_without_momenta_windows_without_records_and_no_limit(
        tmp_path, capsys):
    """LOL's overdamped layers have no momenta: they were reported as T_kin = 0 ± 0 next to
    "target τ" (now "-"); an epoch with no new record printed NaN and numpy warnings; BBI's
    missing linear limit printed "limit nan"."""
    rc = main(["train", "--optimizer", "lol", "--epochs", "20", "--out", str(tmp_path),
               "--no-plots"])
    assert rc == 0
    text = capsys.readouterr().out
    rows = {r.split()[0]: r.split()[2] for r in text.splitlines()
            if re.match(r"^[02]\.(weight|bias)\s", r)}
    assert rows["2.weight"] == rows["2.bias"] == "-"
    assert float(rows["0.weight"]) > 0 and float(rows["0.bias"]) > 0
    last = [ln for ln in text.splitlines() if ln.startswith("epoch")][-1]
    kin = re.search(r"T_kin \[([^\]]*)\]", last).group(1).split()
    assert kin[2:] == ["-", "-"] and all(float(v) > 0 for v in kin[:2])
    rc = main(["train", "--optimizer", "langevin", "--data", "wine", "--epochs", "3",
               "--record-every", "100", "--out", str(tmp_path), "--no-plots"])
    out = capsys.readouterr()
    assert rc == 0 and "nan" not in out.out and "Mean of empty slice" not in out.err
    assert out.out.count("no new records in this window") == 2
    rc = main(["train", "--optimizer", "bbi", "--epochs", "2", "--curvature-every", "2",
               "--out", str(tmp_path), "--no-plots"])
    text = capsys.readouterr().out
    assert rc == 0 and "(no linear limit)" in text and "limit nan" not in text
