"""Probe of the reproductions' reports and the benchmarks' docs sections (session 15).

Each test here failed before its fix: a quick run's header printed its wall time in whole
minutes, so ``dynopt reproduce braking --quick`` (12 s) read "(0 min on 2 shared CPU cores)";
most benchmarks named their full command in the docs section that a ``--quick`` run wrote, and
``gpu.py --from-report`` named ``--size full`` whatever the report's size.
"""

from __future__ import annotations

import argparse
import importlib
import math
import pathlib
import re
import sys

import pytest

from dynopt.reproductions import braking as rb
from dynopt.reproductions.report import duration


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "< 1 s"), (0.4, "< 1 s"), (1.0, "1 s"), (12.3, "12 s"), (59.4, "59 s"),
    (59.6, "1 min"), (89.0, "1 min"), (91.0, "2 min"), (300.0, "5 min"), (1260.0, "21 min")])
def test_duration_prints_seconds_under_a_minute_and_minutes_after(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "12"])
def test_duration_names_a_bad_value(bad):
    with pytest.raises(ValueError, match=re.escape(f"seconds must be a finite number >= 0, "
                                                   f"got {bad!r}")):
        duration(bad)


def _fake_results() -> dict:
    run = {"acc": [0.5, 0.7], "train_loss": [1.0, 0.8], "final": 0.7,
           "epochs_to_target": None, "brake_epoch": None, "ema": [1.0]}
    return {name: [dict(run, final=0.7 + 0.01 * s) for s in range(2)]
            for name in rb.variants(rb.QUICK_GOALS)}


def test_braking_quick_header_does_not_read_zero_minutes():
    """The quick braking table's header read "(0 min on 2 shared CPU cores)" for a 12 s run."""
    body = rb.report(_fake_results(), 2, 8, 1000, 12.0, "dynopt reproduce braking --quick")
    first = body.splitlines()[0]
    assert "(12 s on 2 shared CPU cores)" in first, first
    assert "0 min" not in body
    body = rb.report(_fake_results(), 5, 25, 4000, 300.0, "dynopt reproduce braking")
    assert "(5 min on 2 shared CPU cores)" in body.splitlines()[0]


def test_no_reproduction_formats_its_wall_time_in_whole_minutes_itself():
    """bbi, braking, ddpnopt and surfing each printed ``{seconds / 60:.0f} min``; they now share
    :func:`duration` (one source of the format)."""
    for name in ("adlala", "bbi", "braking", "ddpnopt", "surfing"):
        src = pathlib.Path(__import__(f"dynopt.reproductions.{name}",
                                      fromlist=["x"]).__file__).read_text()
        assert not re.search(r"/ ?60\b", src), name
        assert ":.0f} min" not in src, name


BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """The benchmarks' helpers (the scripts import ``_common`` from their own folder)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("_common"), importlib.import_module("gpu")
    finally:
        sys.path.remove(str(BENCH))


def test_a_quick_benchmark_names_quick_in_the_command_it_writes(bench):
    common, _ = bench
    quick, full = argparse.Namespace(quick=True), argparse.Namespace(quick=False)
    assert common.command("noise_kinds", full) == "python benchmarks/noise_kinds.py --update-docs"
    assert (common.command("noise_kinds", quick)
            == "python benchmarks/noise_kinds.py --quick --update-docs")
    assert (common.command("ddpnopt_cost", quick, "--device cuda")
            == "python benchmarks/ddpnopt_cost.py --device cuda --quick --update-docs")


def test_every_benchmark_builds_its_docs_command_from_the_run():
    """cold_start, ensemble_sizes, ensemble_throughput, langevin_step, network_replicas,
    noise_generators, noise_kinds and ddpnopt_cost wrote a fixed command without ``--quick``
    into docs/benchmarks.md, also from a ``--quick --update-docs`` run."""
    for path in sorted(BENCH.glob("[a-z]*.py")):
        src = path.read_text()
        assert not re.search(r"[\"'`]python benchmarks/", src), path.name
        if "write_section(" in src or "update_section(" in src:
            assert "command(" in src, path.name


@pytest.mark.parametrize(("header", "cmd"), [
    ("device cuda (H200), torch 2.5, size full: 1,000,000 chains x 1000 steps; ...",
     "bash benchmarks/gpu_check.sh (benchmarks/gpu.py --device cuda --size full)"),
    ("device cuda (H200), torch 2.5, size small: 4,096 chains x 20 steps; ...",
     "SIZE=small bash benchmarks/gpu_check.sh (benchmarks/gpu.py --device cuda --size small)"),
    ("device cuda:0 (H200), torch 2.5, size full (quick): 1,000,000 chains x 1000 steps",
     "python benchmarks/gpu.py --device cuda --size full --quick"),
])
def test_gpu_from_report_names_the_size_and_quick_of_the_report(bench, header, cmd):
    assert bench[1].report_command(header) == cmd


def test_gpu_from_report_without_a_size_is_refused(bench):
    with pytest.raises(SystemExit, match="names no size"):
        bench[1].report_command("device cuda (H200), torch 2.5")


def test_bench_help_lists_every_benchmark():
    """``dynopt bench --help`` named no benchmark; only a run without NAME listed them."""
    from dynopt.cli import bench as cli_bench
    from dynopt.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["bench"].format_help().split())
    names = sorted(p.stem for p in BENCH.glob("[a-z]*.py"))
    assert names == cli_bench.available() and "gpu" in names
    assert "benchmark to run: " + ", ".join(names) + "; 'all' runs every one" in text


_DOCS_RUN = {"final": {"AdLaLa": 89.7, "LOL": 92.0, "Langevin": 62.0, "SGD-HB": 50.0,
                       "Adam": 73.8},
             "first": {"AdLaLa": 79.4, "LOL": 61.4}, "hb_loss": 0.696,
             "digits": {"AdLaLa": 94.0, "Adam": 97.5}}


def test_adlala_notes_keep_the_docs_claims_where_the_numbers_make_them():
    from dynopt.reproductions.adlala import _notes

    d = _DOCS_RUN
    text = _notes(4000, d["final"], d["first"], 500, 83.7, 1000, d["hb_loss"], d["digits"])
    assert text.startswith("AdLaLa meets the targets")
    assert ("LOL ends at 92.0% but learns more slowly (61.4% against AdLaLa's 79.4% at epoch "
            "500)") in text
    assert "reaches only 62.0%" in text and "50.0% (a near-constant output" in text
    assert "consistent with h = 0.25 being usable only with the adaptive friction" in text
    assert "On digits these spiral settings do not beat Adam (AdLaLa 94.0%, Adam 97.5%)" in text


def test_adlala_notes_do_not_claim_what_a_quick_run_contradicts():
    """A --quick run (LOL 61.4 % below AdLaLa's 73.1 %, SGD-HB 57.5 % at test loss 0.677)
    printed the full run's fixed text: "LOL ends at 61.4% but learns more slowly" and "SGD-HB
    57.5% (a near-constant output, test loss ≈ ln 2)"; on digits "do not beat Adam" whatever
    the numbers."""
    from dynopt.reproductions.adlala import _notes

    final = {"AdLaLa": 73.1, "LOL": 61.4, "Langevin": 57.4, "SGD-HB": 57.5, "Adam": 60.5}
    text = _notes(300, final, {"AdLaLa": 73.1, "LOL": 61.4}, 300, 73.1, 300, 0.677,
                  {"AdLaLa": 97.9, "Adam": 97.6})
    assert "AdLaLa misses the targets" in text
    assert "LOL ends at 61.4%, below AdLaLa." in text and "more slowly" not in text
    assert "57.5% (test loss 0.677)" in text and "near-constant" not in text
    assert "these spiral settings match or beat Adam (AdLaLa 97.9%, Adam 97.6%)" in text
    final = dict(final, Langevin=80.0)
    text = _notes(300, final, {"AdLaLa": 73.1, "LOL": 61.4}, 300, 73.1, 300, 0.677,
                  {"AdLaLa": 94.0, "Adam": 97.6})
    assert "reaches 80.0%" in text and "usable only with" not in text
    assert "this run does not show that h = 0.25 needs AdLaLa's adaptive friction" in text


def _bbi_result(**over):
    res = {
        "seconds": 120.0,
        "ackley": {"starts": 20, "tries": 5, "steps": 5000, "bbi_first_try": 1,
                   "bbi_any_try": 13, "bbi_run_rate": 0.15, "bbi_median_steps": 2624.0,
                   "gdm": 0},
        "zakharov": {"steps": 10000, "bbi_final": 3e-8, "bbi_best": 2e-10,
                     "bbi_floor_step": None, "bbi_at_1000": 1e-3, "gdm_final": 2.31e-9,
                     "gdm_best": 3.96e-13},
        "basins": [{"direction": "cube", "runs": 200, "basin1": 128, "basin2": 71,
                    "undecided": 1, "ratio": 1.803, "ratio_se": 0.267, "predicted": 1.926}],
        "energy": {"steps": 2000, "chains": 8, "h": 0.00965, "max_V_over_E0": 0.97,
                   "H_pre_projection_max_rel_dev": 0.25,
                   "H_pre_projection_median_rel_dev": 3.2e-4,
                   "H_post_projection_max_rel_dev": 6.7e-16, "max_speed_over_sqrtV": 1.24,
                   "max_speed_over_bound": 0.995, "bounces_per_chain": 19.2},
        "digits": {"SGD + momentum (lr 0.01, μ 0.95)": {"test_acc": [0.97, 0.96]}},
    }
    for k, v in over.items():
        res[k] = dict(res[k], **v)
    return res


def test_bbi_zakharov_best_column_is_the_best_value_not_the_final_one():
    """The BBI row's "best U along the run" printed the final U."""
    from dynopt.reproductions.bbi import report

    text = report(_bbi_result(), "dynopt reproduce bbi --quick", True)
    row = next(line for line in text.splitlines() if line.startswith("| BBI (lr 0.0026"))
    assert row.split(" | ")[1:3] == ["3e-08", "2e-10"], row


def test_bbi_ackley_prose_compares_the_rate_with_the_paper_and_names_short_runs():
    """The quick run (13/20 within 5000 iterations) read "the paper's 83/100 ... is
    reproduced", whatever its rate and length."""
    from dynopt.reproductions.bbi import _ackley_prose

    quick = _ackley_prose(_bbi_result()["ackley"])
    assert "the paper's ordering (83/100 within 5 tries vs 0/100) is reproduced" in quick
    assert "the success rate 65% is consistent with the paper's 83 % (-1.7 SE)" in quick
    assert quick.endswith("with 5000 iterations per try instead of the paper's 30000.")
    low = _ackley_prose(dict(_bbi_result()["ackley"], starts=100, bbi_any_try=50, steps=30000))
    assert "the success rate 50% is below the paper's 83 % (-6.6 SE)." in low
    assert "instead of" not in low


def test_bbi_energy_prose_states_a_broken_invariant():
    """The energy study's reading was fixed text ("the loss never exceeds its ceiling", ...)
    whatever the measured table said."""
    from dynopt.reproductions.bbi import _energy_prose

    ok = _energy_prose(_bbi_result()["energy"])
    assert ("the projection restores the shell to rounding; the loss never exceeds its ceiling; "
            "the discrete speed exceeds √V by the kick's Δt|∇V| term only.") in ok
    bad = _energy_prose(dict(_bbi_result()["energy"], max_V_over_E0=1.02,
                             H_post_projection_max_rel_dev=1e-6, max_speed_over_bound=1.1))
    assert "does NOT restore the shell to rounding (1e-06)" in bad
    assert "the loss exceeds its ceiling (max V/E0 = 1.020000)" in bad
    assert "exceeds even √V + Δt|∇V| (ratio 1.100000)" in bad


def _ddp_run(base: str, lr: float) -> dict:
    curve = {"acc": [0.5, 0.6], "train_loss": [1.0, 0.9]}
    better = {"acc": [0.55, 0.62], "train_loss": [0.9, 0.85]}
    return {"dataset": "digits", "base_name": base, "lr": lr, "base": [curve, curve],
            "ddpnopt": [better, better]}


@pytest.mark.parametrize(("lrs", "columns"), [
    ({"sgd": [1.0], "adam": [0.03]}, 1),               # --quick: the largest rates only
    ({"sgd": [0.1, 0.3, 1.0], "adam": [0.001, 0.01, 0.03]}, 3),
])
def test_ddpnopt_plot_has_no_empty_panels(tmp_path, lrs, columns):
    """A --quick run's paired_diff.png had three columns, two of them empty (only the largest
    learning rate runs there); one column is drawn 6 inches wide, so the title fits."""
    import matplotlib.image

    from dynopt.reproductions.ddpnopt import _plot

    _plot({"sweep": [_ddp_run(b, lr) for b, grid in lrs.items() for lr in grid]}, tmp_path)
    height, width = matplotlib.image.imread(tmp_path / "paired_diff.png").shape[:2]
    assert (width, height) == (max(4 * columns, 6) * 110, 6 * 110)


def test_ddpnopt_ablation_header_names_a_real_epoch_span():
    """The --quick ablation table (2 epochs) had a column "lowest acc, any seed, ep 2–2 %"."""
    from dynopt.reproductions.ddpnopt import ablation_header

    assert ablation_header(2)[6] == "lowest acc, any seed, ep 2 %"
    assert ablation_header(6)[4:7] == ["acc ep 6 %", "worst seed ep 6 %",
                                       "lowest acc, any seed, ep 2–6 %"]
