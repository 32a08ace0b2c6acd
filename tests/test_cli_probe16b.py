"""Session 16's second probe of the command line: ``dynopt bench`` errors, the braking
reproduction's output, integer options, the precision of the study tables and stale plots.

Each test names the old behaviour it replaces.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from dynopt.cli import build_parser, count, main

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, prefix: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


# --- 1. dynopt bench: script errors are one line with status 2, usage names the command -----

def test_bench_from_report_of_a_missing_file_is_one_line_with_status_2(tmp_path, capsys):
    """Before: a FileNotFoundError traceback out of benchmarks/gpu.py."""
    missing = tmp_path / "missing.md"
    assert main(["bench", "gpu", "--from-report", str(missing), "--update-docs"]) == 2
    line = _one_line_error(capsys, "dynopt bench gpu: error: --from-report ")
    assert str(missing) in line and "No such file" in line


def test_bench_script_refusal_exits_2_not_1(tmp_path, capsys):
    """Before: ``raise SystemExit("--from-report needs --update-docs")`` went through dynopt
    bench as exit status 1 with the bare message; now status 2 and a line naming the command."""
    report = tmp_path / "r.md"
    report.write_text("device cuda (H200), torch 2.5, size small: ...\n")
    assert main(["bench", "gpu", "--from-report", str(report)]) == 2
    assert _one_line_error(capsys, "dynopt bench gpu: error: ") == (
        "dynopt bench gpu: error: --from-report needs --update-docs")


def test_bench_script_usage_and_argparse_errors_name_dynopt_bench(capsys):
    """Before: ``usage: gpu.py ...`` and ``gpu.py: error: ...`` (two lines) under dynopt bench."""
    assert main(["bench", "gpu", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: dynopt bench gpu [-h]")
    assert main(["bench", "gpu", "--size", "huge"]) == 2
    _one_line_error(capsys, "dynopt bench gpu: error: argument --size: invalid choice: 'huge'")


def test_bench_turns_a_string_exit_and_a_file_error_of_a_script_into_one_line(
        tmp_path, capsys, monkeypatch):
    from dynopt.cli import bench

    (tmp_path / "refuses.py").write_text("raise SystemExit('no such size')\n")
    (tmp_path / "reads.py").write_text(f"open({str(tmp_path / 'nope.txt')!r})\n")
    monkeypatch.setattr(bench, "benchmarks_dir", lambda: tmp_path)
    argv0 = sys.argv[0]
    assert main(["bench", "refuses"]) == 2
    assert _one_line_error(capsys, "dynopt") == "dynopt bench refuses: error: no such size"
    assert main(["bench", "reads"]) == 2
    assert _one_line_error(capsys, "dynopt") == (
        f"dynopt bench reads: error: No such file or directory: {tmp_path / 'nope.txt'}")
    assert sys.argv[0] == argv0 and str(tmp_path) not in sys.path  # restored


def test_benchmark_script_run_directly_exits_2_on_a_usage_error(tmp_path):
    """Before: ``python benchmarks/gpu.py --from-report x`` exited 1."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--from-report",
                          str(tmp_path / "x.md")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == "gpu.py: error: --from-report needs --update-docs"


# --- 2. dynopt reproduce braking: labelled progress, warns when it replaces results ----------

def _fake_run(spec, seed, epochs, n_train):
    goal = "goal" in spec
    return {"acc": [0.5, 0.7], "train_loss": [1.0, 0.5], "final": 0.7 + 0.01 * seed,
            "epochs_to_target": None if seed == 0 else 2, "brake_epoch": 1.5 if goal else None,
            "ema": []}


def test_braking_progress_lines_say_what_each_list_is():
    """Before: ``HB brake at f = 0.6 [0.7, 0.71] [None, 2] [1.5, 1.5]``."""
    from dynopt.reproductions import braking

    runs = [_fake_run({"goal": 0.6}, s, 2, 10) for s in range(2)]
    assert braking.progress_line("HB brake at f = 0.6", runs) == (
        "HB brake at f = 0.6: final test acc % [70.00, 71.00]; epochs to 76% test acc "
        "[never, 2]; braking epoch [1.50, 1.50]")
    const = [_fake_run({}, s, 2, 10) for s in range(2)]
    assert braking.progress_line("SGD lr = 0.2", const) == (
        "SGD lr = 0.2: final test acc % [70.00, 71.00]; epochs to 76% test acc [never, 2]")


def test_braking_rerun_warns_that_it_replaced_the_results(tmp_path, capsys, monkeypatch):
    """Before: a rerun with the same --out overwrote braking.json and braking.md silently
    (dynopt study warns); the progress lines printed bare lists with None."""
    import torch

    from dynopt.reproductions import braking

    monkeypatch.setattr(braking, "train_one", _fake_run)
    monkeypatch.setattr(braking, "_plot", lambda results, out: None)
    threads = torch.get_num_threads()
    try:
        argv = ["reproduce", "braking", "--quick", "--out", str(tmp_path)]
        assert main(argv) == 0
        first = capsys.readouterr()
        assert first.err == ""
        assert "None" not in first.out and "final test acc % [" in first.out
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "braking"
    assert capsys.readouterr().err.splitlines() == [
        f"dynopt reproduce braking: warning: replaced the existing {out / 'braking.json'}, "
        f"{out / 'braking.md'}"]


# --- 3. every integer option: one parser, 1e3 accepted, 1.5 refused with flag and value ------

INT_OPTIONS = [
    (["study"], "--dim"), (["study"], "--seed"), (["study"], "--record-every"),
    (["study"], "--steps"), (["study"], "--chains"), (["study"], "--threads"),
    (["train"], "--epochs"), (["train"], "--seed"), (["train"], "--record-every"),
    (["train"], "--curvature-every"), (["train"], "--threads"),
    (["reproduce", "braking"], "--seeds"),
]


@pytest.mark.parametrize(("prefix", "flag"), INT_OPTIONS)
def test_integer_options_accept_scientific_notation_and_name_a_fraction(prefix, flag, capsys):
    """Before: ``--steps 1e3`` worked but ``--seed 1e3`` (and --dim, --epochs, --seeds,
    --record-every) was refused as an invalid int value."""
    args = build_parser().parse_args([*prefix, flag, "1e3"])
    assert getattr(args, flag[2:].replace("-", "_")) == 1000
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*prefix, flag, "1.5"])
    assert exc.value.code == 2
    _one_line_error(capsys, f"dynopt {prefix[0]}: error: argument {flag}: invalid integer "
                            "'1.5' (not a whole number)")


def test_no_cli_option_is_typed_plain_int():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    plain = [(name, a.dest) for name, p in sub.choices.items() for a in p._actions
             if a.type is int]
    assert plain == []
    named = {(name, a.option_strings[0]) for name, p in sub.choices.items()
             for a in p._actions if a.type is count}
    assert {(p[0], f) for p, f in INT_OPTIONS} <= named


@pytest.mark.parametrize(("text", "message"), [
    ("1.5", "not a whole number"), ("inf", "not finite"), ("nan", "not finite"),
    ("ten", "invalid integer 'ten'")])
def test_count_refuses_non_integers(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        count(text)


def test_adlala_module_entry_point_uses_the_same_integer_parser(capsys):
    from dynopt.reproductions import adlala

    with pytest.raises(SystemExit) as exc:
        adlala.main(["--seeds", "2.5"])
    assert exc.value.code == 2
    assert "argument --seeds: invalid integer '2.5' (not a whole number)" in (
        capsys.readouterr().err)


# --- 4. table precision: the value shows the deviation its z-score reports -------------------

@pytest.mark.parametrize(("value", "se", "text"), [
    (0.0010213, 1.1e-5, "0.001021 ± 1.1e-05"),
    (0.2487, 0.0003, "0.24870 ± 0.0003"),
    (0.25003, 0.04, "0.2500 ± 0.04"),          # never fewer than 4 decimals (as before)
    (2.50123e-5, 1.1e-9, "2.50123e-05 ± 1.1e-09"),
    (-6.97e-6, 9.1e-6, "-6.970e-06 ± 9.1e-06"),
])
def test_estimates_print_to_the_precision_of_their_se(value, se, text):
    """Before: ``0.0010 ± 1.1e-05`` (z = +1.9 reported a deviation the value hid)."""
    from dynopt.cli.study_report import fmt_estimate

    assert fmt_estimate(value, se) == text
    shown = float(text.split(" ± ")[0])
    assert abs(shown - value) <= se / 20  # rounded at the SE's second significant digit


def _network_summary() -> dict:
    est = {"value": 0.0010213, "se": 1.1e-5, "target": 0.001, "z": 1.94}
    loss = {"value": 0.5, "se": 0.01, "target": None, "z": None, "ess": 50.0, "rhat": 1.0}
    return {"layers": {"0.weight": {"n": 10, "kinetic": est, "configurational": est}},
            "loss": loss, "heldout_loss": loss,
            "projections": {"ess": [40.0], "rhat": [1.0]},
            "curvature": {"lambda_max": [800.0], "limit": 1600.0, "ratio_max": 0.5}}


def test_network_table_shows_the_deviation_and_an_unpadded_limit():
    """Before: ``T_kin  0.weight (n=10)  0.0010 ± 1.1e-05 ... +1.9`` and ``< 1600.0000
    (limit)``."""
    from dynopt.cli.study_network import format_network_table

    table = format_network_table(_network_summary())
    row = next(line for line in table.splitlines() if line.startswith("T_kin"))
    assert "0.001021 ± 1.1e-05" in row and row.rstrip().endswith("+1.9")
    lam = next(line for line in table.splitlines() if line.startswith("λ_max"))
    assert "  800  " in lam and "< 1600 (limit)" in lam and "1600.0000" not in lam


def test_study_table_shows_the_deviation():
    from dynopt.cli.study_report import format_table

    table = format_table({"configurational_temperature": {"value": 0.0010213, "se": 1.1e-5,
                                                          "target": 0.001, "z": 1.94},
                          "ess_q": {"min": 100.0}, "rhat_q": {"max": 1.001}})
    row = next(line for line in table.splitlines() if line.startswith("configurational"))
    assert "0.001021 ± 1.1e-05" in row


# --- 5. a run that writes no plots removes the plots of an earlier one ------------------------

def test_no_plots_rerun_removes_the_earlier_plots_and_says_so(tmp_path, capsys):
    """Before: ``dynopt study --no-plots`` into a folder with plots of an earlier run left them
    next to the new summary.json, which they do not show."""
    old = [tmp_path / n for n in ("loss.png", "temperatures.png", "energy.png")]
    for path in old:
        path.write_bytes(b"old plot")
    (tmp_path / "notes.png").write_bytes(b"the user's own")
    assert main(["study", "--model", "mlp", "--steps", "16", "--chains", "2", "--no-plots",
                 "--out", str(tmp_path)]) == 0
    assert not any(p.exists() for p in old)
    assert (tmp_path / "notes.png").read_bytes() == b"the user's own"
    warning = [ln for ln in capsys.readouterr().err.splitlines() if "removed" in ln]
    assert warning == ["dynopt study: warning: removed the plots of an earlier run that do not "
                       f"show this one: {old[2]}, {old[0]}, {old[1]}"]


def test_train_without_a_plot_removes_the_earlier_monitor_png(tmp_path, capsys):
    from dynopt.training import _remove_stale_plot

    (tmp_path / "monitor.png").write_bytes(b"old")
    _remove_stale_plot(tmp_path)
    assert not (tmp_path / "monitor.png").exists()
    assert capsys.readouterr().err.startswith(
        f"dynopt train: warning: removed {tmp_path / 'monitor.png'} of an earlier run")
    _remove_stale_plot(tmp_path)  # nothing there: nothing said
    assert capsys.readouterr().err == ""


def test_remove_stale_keeps_what_this_run_wrote(tmp_path):
    from dynopt._files import remove_stale

    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale(tmp_path, ["a.png", "b.png", "c.png"], keep=[str(tmp_path / "b.png")]
                        ) == [tmp_path / "a.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png"]
