"""``dynopt study --model mlp``: a replica study of a network, table content and errors."""

from __future__ import annotations

import json

import pytest

from dynopt.cli import build_parser, main


def test_model_defaults_do_not_change_the_potential_study():
    args = build_parser().parse_args(["study"])
    assert args.model is None and (args.steps, args.chains, args.temperature) == (
        1_000_000, 64, 0.25)
    args = build_parser().parse_args(["study", "--model", "mlp"])
    assert args.steps.is_default and args.temperature.is_default
    assert not hasattr(build_parser().parse_args(["study", "--steps", "5"]).steps, "is_default")


def test_langevin_mlp_study_table(tmp_path, capsys):
    """Per-layer T_kin of Langevin BAOAB equals τ within 5 SE (Maxwell–Boltzmann momenta are
    invariant under O and the run is short); one T_kin and one T_conf row per parameter tensor
    with its size; λ_max against BAOAB's 4/h² = 1600; loss ESS/R-hat reported."""
    out = tmp_path / "s"
    rc = main(["study", "--model", "mlp", "--steps", "200", "--chains", "4", "--record-every",
               "4", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for name, n in (("0.weight", 200), ("0.bias", 100), ("2.weight", 100), ("2.bias", 1)):
        assert f"T_kin  {name} (n={n})" in text and f"T_conf {name} (n={n})" in text
    s = json.loads((out / "summary.json").read_text())
    assert s["chains"] == 4 and s["draws"] == 51 and s["dim"] == 401
    for name in ("0.weight", "0.bias", "2.weight"):
        kin = s["layers"][name]["kinetic"]
        assert kin["target"] == pytest.approx(1e-3)
        assert abs(kin["z"]) < 5 and kin["se"] < 0.1 * 1e-3
    assert s["curvature"]["limit"] == pytest.approx(1600.0, rel=1e-12)
    assert len(s["curvature"]["lambda_max"]) == 4 and all(v > 0 for v in
                                                          s["curvature"]["lambda_max"])
    assert s["loss"]["rhat"] >= 1.0 and "ESS / R-hat of train loss" in text
    assert len(s["projections"]["rhat"]) == 4
    assert (out / "loss.png").stat().st_size > 3000
    assert (out / "temperatures.png").stat().st_size > 3000


def test_hamiltonian_mlp_study_reports_energy_drift(tmp_path, capsys):
    """NVE leapfrog on the wine MLP: the table has the energy error and drift rows and no
    mean-energy row; the energy error is small compared with the kinetic energy τ·d/2."""
    out = tmp_path / "h"
    rc = main(["study", "--model", "mlp", "--data", "wine", "--system", "hamiltonian",
               "--h", "0.01", "--steps", "200", "--chains", "2", "--record-every", "5",
               "--out", str(out), "--no-plots"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "max |Δenergy|" in text and "energy drift d/dt" in text and "mean energy" not in text
    s = json.loads((out / "summary.json").read_text())
    assert s["conservation"]["max_abs_error"] < 0.05 * 1e-3 * s["dim"] / 2


def test_bbi_mlp_study_has_no_kinetic_temperatures(tmp_path, capsys):
    """BBI's Π is no Maxwell–Boltzmann momentum: no T_kin row, the invariant rows stay."""
    rc = main(["study", "--model", "mlp", "--system", "born-infeld", "--h", "0.01", "--steps",
               "80", "--chains", "2", "--record-every", "5", "--out", str(tmp_path),
               "--no-plots"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "max |Δinvariant|" in text and "T_conf 0.weight" in text
    assert "T_kin  0" not in text
    s = json.loads((tmp_path / "summary.json").read_text())
    assert all(layer["kinetic"] is None for layer in s["layers"].values())


@pytest.mark.parametrize("argv, message", [
    (["--steps", "20", "--record-every", "5"], "at least 8 records"),
    (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (["--threads", "0"], "threads"),
    (["--potential", "harmonic"], "--potential does not apply with --model"),
    (["--dim", "3"], "--dim does not apply with --model"),
    (["--q0", "0.5"], "--q0 does not apply with --model"),
    # a noise-free scheme drops Langevin's thermostat: its temperature targets were printed
    (["--integrator", "BAB"], "--integrator BAB draws no noise"),
])
def test_bad_inputs(tmp_path, capsys, argv, message):
    rc = main(["study", "--model", "mlp", "--out", str(tmp_path), *argv])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_table_flags_curvature_past_the_limit():
    from dynopt.cli.study_network import format_network_table

    est = {"value": 1e-3, "se": 1e-5, "target": 1e-3, "z": 0.0}
    s = {"energy": est, "layers": {"w": {"n": 3, "kinetic": est, "configurational": None}},
         "loss": {**est, "ess": 10.0, "rhat": 1.2}, "heldout_loss": {**est, "ess": 9.0,
                                                                      "rhat": 1.3},
         "projections": {"ess": [5.0, 6.0], "rhat": [1.5, 2.0]},
         "curvature": {"lambda_max": [3.0, 4.4], "limit": 4.0, "ratio_max": 1.1}}
    text = format_network_table(s)
    assert "ratio 1.1 UNSTABLE" in text and "T_conf w" not in text
    s["curvature"].update(lambda_max=[3.0], ratio_max=0.75)
    assert "ratio 0.75" in format_network_table(s) and "UNSTABLE" not in format_network_table(s)


def test_an_unwritable_out_is_refused_before_the_run(tmp_path, capsys):
    """--out was checked only after the whole run (a traceback, 20-30 s of work lost)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["study", "--model", "mlp", "--steps", "200", "--chains", "2", "--out",
               str(blocker / "sub")])
    err = capsys.readouterr()
    assert rc == 2 and "--out" in err.err and "replicas" not in err.out


def test_the_network_study_honours_noise(tmp_path, capsys):
    """--noise was recorded in summary.json but not used (discrete and Gaussian runs were
    bit-identical)."""
    runs = {}
    for noise in ("gaussian", "discrete"):
        out = tmp_path / noise
        rc = main(["study", "--model", "mlp", "--steps", "40", "--chains", "2",
                   "--record-every", "4", "--noise", noise, "--no-plots", "--out", str(out)])
        assert rc == 0
        runs[noise] = json.loads((out / "summary.json").read_text())
    assert runs["gaussian"]["loss"] != runs["discrete"]["loss"]


def test_a_dissipative_system_has_no_conservation_target(tmp_path, capsys):
    """port-hamiltonian with γ > 0 was reported as an energy-conservation check (target 0,
    z = -4.2); its energy change is printed without target, marked dissipative."""
    rc = main(["study", "--model", "mlp", "--system", "port-hamiltonian", "--steps", "400",
               "--chains", "2", "--record-every", "10", "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "energy change d/dt (dissipative)" in out and "energy drift d/dt" not in out
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["conservation"]["conservative"] is False
    rc = main(["study", "--system", "port-hamiltonian", "--gamma", "0", "--steps", "2000",
               "--chains", "2", "--out", str(tmp_path), "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0 and "energy drift d/dt" in out  # γ = 0: Hamiltonian, conservative
