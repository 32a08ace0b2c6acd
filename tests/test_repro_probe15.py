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
