"""``dynopt study``: defaults, outputs, numbers and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dynopt.cli import build_parser, main
from dynopt.cli.study_registry import POTENTIALS, SYSTEMS


def test_defaults_are_the_documented_run():
    args = build_parser().parse_args(["study"])
    assert (args.system, args.potential, args.integrator) == ("langevin", "double-well", None)
    assert (args.h, args.temperature, args.steps, args.chains) == (0.05, 0.25, 1_000_000, 64)
    assert args.out == "dynopt-out/study" and args.backend == "numba"
    assert set(SYSTEMS) == {"hamiltonian", "langevin", "overdamped", "adaptive-langevin",
                            "nose-hoover", "nose-hoover-chain", "born-infeld", "ecdsep",
                            "port-hamiltonian"}
    assert set(POTENTIALS) == {"harmonic", "double-well", "ackley", "rastrigin", "rosenbrock",
                               "ackley-bbi", "zakharov", "multi-basin"}


def test_small_langevin_study_writes_summary_and_plots(tmp_path, capsys):
    out = tmp_path / "study"
    rc = main(["study", "--steps", "40000", "--chains", "32", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "configurational temperature" in text and "TV to Gibbs, q0" in text
    summary = json.loads((out / "summary.json").read_text())
    for name in ("energy.png", "histogram.png", "autocorrelation.png"):
        assert (out / name).stat().st_size > 1000
    assert summary["draws"] == 20_001 and summary["record_every"] == 2
    tc = summary["configurational_temperature"]
    assert abs(tc["value"] - 0.25) < 4 * tc["se"] + 2e-4  # bias allowance as in the tests
    # SE against independent draws (per-draw SD of T_conf 0.428 by the delta method on the
    # double well at τ = 0.25), 2× the measured correlation factor 3.2
    assert tc["se"] < 6.5 * 0.428 / (32 * 18_001) ** 0.5, tc
    assert summary["energy"]["target"] == pytest.approx(0.144829 + 0.125, abs=1e-5)
    assert summary["rhat_q"]["max"] < 1.1
    assert summary["gibbs_tv_q0"]["value"] < 3 * summary["gibbs_tv_q0"]["noise_floor"]


def test_deterministic_study_reports_conservation(tmp_path):
    out = tmp_path / "nh"
    rc = main(["study", "--system", "nose-hoover", "--potential", "harmonic", "--steps", "20000",
               "--chains", "16", "--out", str(out), "--no-plots"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    cons = summary["conservation"]
    assert cons["quantity"] == "invariant"
    assert abs(cons["slope"]) < 4 * cons["slope_se"]
    # the slope's SE against independent residuals, rms·√(12/n)/T, 2× the measured factor 15
    # (the invariant's error oscillates slowly)
    assert cons["slope_se"] < 30 * cons["rms_error"] * (12 / (16 * 20_001)) ** 0.5 / 1000.0
    # A single Nosé–Hoover thermostat is not ergodic on the harmonic oscillator: every chain's
    # histogram is far from the Gaussian even though the pooled one is closer.
    per = summary["gibbs_tv_q0_per_chain"]
    assert per["median"] > 5 * per["median_noise_floor"]
    assert not (out / "energy.png").exists()


def test_non_normalizable_gibbs_is_reported_not_crashed(tmp_path):
    rc = main(["study", "--potential", "ackley", "--steps", "4000", "--chains", "4",
               "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "not normalizable" in summary["gibbs_tv_q0"]["unavailable"]


@pytest.mark.parametrize("argv, message", [
    (["--h", "-1"], "h must be > 0, got -1.0"),
    (["--chains", "0"], "chains must be >= 1, got 0"),
    (["--potential", "rosenbrock", "--dim", "1"], "Rosenbrock needs dim >= 2"),
    (["--system", "nose-hoover", "--temperature", "0"], "temperature must be > 0"),
    (["--system", "overdamped", "--integrator", "BAOAB"], "OverdampedLangevin"),
    (["--integrator", "BXB"], "unknown letter"),
    (["--burn-in", "1.5"], "--burn-in must be in [0, 1)"),
    (["--integrator", "BAB"], "draws no noise, so it drops Langevin's thermostat"),
    (["--system", "born-infeld"], "descends from a loss above its floor v0 = 0.0, but U(q0) = 0"),
    # the flags, not the constructors' parameter names
    (["--q0", "nan"], "--q0 must be finite, got nan"),
    (["--system", "nose-hoover", "--gamma", "0"], "--gamma must be > 0, got 0"),
    (["--system", "overdamped", "--gamma", "0"], "--gamma must be > 0, got 0"),
])
def test_bad_options_give_clear_errors(tmp_path, capsys, argv, message):
    rc = main(["study", *argv, "--steps", "100", "--out", str(tmp_path)])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_unknown_choice_exits_with_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["study", "--system", "nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_divergence_is_reported_with_exit_code_1(tmp_path, capsys):
    rc = main(["study", "--system", "hamiltonian", "--potential", "harmonic", "--h", "2.5",
               "--steps", "2000", "--chains", "2", "--integrator", "leapfrog",
               "--out", str(tmp_path)])
    assert rc == 1
    assert "diverged at step" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dynopt", "study", "--steps", "2000",
                           "--chains", "4", "--no-plots", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("system", ["born-infeld", "ecdsep"])
def test_energy_conserving_study_reports_no_kinetic_temperature(tmp_path, system):
    # Π of BBI/ECDSep is no Maxwell–Boltzmann momentum (H is not U + |Π|²/2): its
    # "temperature" reached 3e30 near the floor, so the study must not print one.
    rc = main(["study", "--system", system, "--potential", "ackley", "--q0", "0.5",
               "--steps", "2000", "--chains", "2", "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "kinetic_temperature" not in summary
    assert "configurational_temperature" in summary


def test_port_hamiltonian_study_keeps_its_kinetic_temperature(tmp_path):
    rc = main(["study", "--system", "port-hamiltonian", "--potential", "harmonic",
               "--steps", "2000", "--chains", "2", "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    assert "kinetic_temperature" in json.loads((tmp_path / "summary.json").read_text())


# At h = 0.05 Rosenbrock's chains reach curvature ~1200 q² beyond BAOAB's limit (diverged at
# step 130 with the default seed), and Zakharov diverged in the first steps from (1, ..., 1)
# (curvature 8.7e5 there): each entry carries a stable default, and an explicit --h still wins.
@pytest.mark.parametrize(("potential", "h", "steps", "chains"), [
    ("rosenbrock", 0.005, "3000", "4"), ("zakharov", 0.001, "4000", "2")])
def test_stiff_potentials_run_at_their_own_default_step(potential, h, steps, chains, tmp_path,
                                                        capsys):
    common = ["--steps", steps, "--chains", chains, "--out", str(tmp_path), "--no-plots"]
    rc = main(["study", "--potential", potential, *common])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "summary.json").read_text())["h"] == h
    rc = main(["study", "--potential", potential, "--h", "0.05", *common])
    assert rc == 1 and "diverged at step" in capsys.readouterr().err


def test_relative_invariant_row_uses_the_thermal_scale_when_h0_is_below_it():
    """A Nosé–Hoover run started at the minimum has |H(0)| ≈ 0: max |ΔH|/|H(0)| came out in the
    thousands (true and meaningless). Below the thermostat's scale d·k_BT the row divides by
    that scale; an NVE run (no temperature) and a thermostat with a large |H(0)| keep |H(0)|."""
    from dynopt.cli.study_report import relative_row

    small = {"quantity": "invariant", "max_abs_error": 0.02, "max_rel_error": 20.0,
             "thermal_scale": 0.25}
    assert relative_row(small) == ("max |Δinvariant|/(d·k_BT)", "0.0800", "-", "-")
    large = {**small, "max_rel_error": 0.002}  # |H(0)| = 10 > 0.25
    assert relative_row(large) == ("max |Δinvariant|/|invariant(0)|", "0.0020", "-", "-")
    nve = {"quantity": "energy", "max_abs_error": 0.02, "max_rel_error": 20.0}
    assert relative_row(nve) == ("max |Δenergy|/|energy(0)|", "20.0000", "-", "-")
