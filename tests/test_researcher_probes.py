"""Regressions found by a researcher's probes of integrate(), the diagnostics and the CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import dynopt
from dynopt import diagnostics as dg
from dynopt import potentials, systems
from dynopt.cli import main


def _strict_json(text: str) -> dict:
    """json.loads that refuses the non-standard NaN/Infinity literals (RFC 8259)."""
    def refuse(const: str) -> float:
        raise ValueError(f"non-standard JSON constant {const}")
    return json.loads(text, parse_constant=refuse)


def test_study_of_a_chain_at_rest_writes_standard_json_and_no_numpy_warning(tmp_path, capsys):
    # Hamiltonian dynamics at temperature 0 start at rest at the minimum: q never moves, so the
    # ESS and R-hat of q are undefined (NaN). The summary must still be standard JSON (null,
    # not the NaN literal that strict parsers reject) and no raw numpy warning may leak out.
    out = tmp_path / "o"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc = main(["study", "--system", "hamiltonian", "--temperature", "0", "--steps", "200",
                   "--chains", "4", "--no-plots", "--out", str(out)])
    assert rc == 0
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["ess_q"]["min"] is None
    assert summary["ess_q"]["per_coord"] == [None]
    assert summary["rhat_q"]["max"] is None
    assert summary["configurational_temperature"]["value"] == 0.0
    assert "nan" in capsys.readouterr().out  # the table still says what it is


def test_mcse_of_the_sd_is_scale_equivariant_far_from_unit_scale():
    # MCSE(sd) scales with the data: mcse(c·x) = c·mcse(x). It squared the centered draws
    # twice, so for |x| ≳ 1e77 (or ≲ 1e-77) the variance of d = (x − x̄)² overflowed or
    # underflowed: NaN, and beyond 1e154 a ValueError blaming finite input for an inf at a
    # 3-D index of an internal array.
    x = np.random.default_rng(0).normal(size=(4, 200))
    ref = dg.mcse(x, method="sd")
    assert 0.01 < ref < 0.05
    for scale in (2.0**-300, 1e-100, 1e100, 2.0**520, 1e300):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = dg.mcse(x * scale, method="sd")
        assert got / scale == pytest.approx(ref, rel=1e-12), scale
    # exact powers of two leave every rounding unchanged: bit-identical
    assert dg.mcse(x * 2.0**-300, method="sd") == ref * 2.0**-300


@pytest.mark.parametrize("method", ["mean", "median"])
def test_mcse_of_the_mean_and_median_are_scale_equivariant(method):
    # MCSE(mean) took the sd of the raw draws: inf beyond |x| ≈ 1e154 (x² overflowed), and
    # below 1e-160 the squares fell into subnormals (≈ 1e-4 relative error, 0 at 1e-300)
    x = np.random.default_rng(0).normal(size=(4, 200))
    ref = dg.mcse(x, method=method)
    assert 0.03 < ref < 0.1
    for exponent in (-1000, -540, 520, 1000):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = dg.mcse(np.ldexp(x, exponent), method=method)
        assert got == np.ldexp(ref, exponent), exponent  # a power of two: bit-identical


def _network_run(observables):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(2, 1).double()
    pot = potentials.NetworkLoss(model, torch.nn.functional.mse_loss, (x, x.sum(1, keepdim=True)),
                                 weight_decay=1e-2)
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    return dynopt.integrate(systems.Langevin(pot, gamma=1.0, temperature=1e-3), "BAOAB", theta,
                            h=0.05, n_steps=20, n_chains=2, seed=0, record_every=5,
                            observables=observables)


def test_temperatures_of_an_observables_run_point_to_layer_temperatures():
    # The messages said "record 'layer_kinetic'" / "record 'layer_configurational'", but a run
    # that did record them still raised the same error: the per-layer records are read by
    # dynopt.observables.layer_temperatures, which the message must name.
    traj = _network_run(["layer_kinetic", "layer_configurational"])
    with pytest.raises(ValueError, match="layer_temperatures"):
        dg.kinetic_temperature(traj)
    with pytest.raises(ValueError, match="layer_temperatures"):
        dg.configurational_temperature(traj)
    temps = dynopt.observables.layer_temperatures(traj)
    assert set(temps) == {"weight", "bias"}
    assert all(math.isfinite(t.kinetic.value) for t in temps.values())


def test_gibbs_distance_of_an_observables_run_says_positions_were_not_recorded():
    traj = _network_run(["loss"])
    with pytest.raises(ValueError, match="did not record the positions"):
        dg.gibbs_distance(traj)


def test_divergence_from_a_nan_gradient_names_the_gradient_as_a_possible_cause():
    # A gradient that is NaN outside |q| < 1.2 (finite q, no overflow) diverged with a message
    # that blamed only the step size; it must name both causes, the step and the chain.
    def grad(q):
        return torch.where(q.abs() < 1.2, q, torch.nan) if torch.is_tensor(q) else q
    pot = potentials.Custom(1, value=lambda q: 0.5 * (q**2).sum(-1), grad=grad)
    with pytest.raises(dynopt.errors.DivergenceError) as info:
        dynopt.integrate(systems.Langevin(pot, gamma=1.0, temperature=1.0), "BAOAB", [0.0],
                         h=0.1, n_steps=1000, n_chains=4, seed=0, backend="torch")
    err = info.value
    assert f"at step {err.step} " in str(err) and f"chain {err.chain} " in str(err)
    assert "stability limit" in str(err) and "non-finite gradient at a finite q" in str(err)
    # the records of steps 0 .. step − 1 are kept, all inside the gradient's domain
    assert err.trajectory.q.shape == (4, err.step, 1)
    assert np.isfinite(err.trajectory.q).all() and np.abs(err.trajectory.q).max() < 1.2


@pytest.mark.parametrize("argv, option", [
    (["--data", "wine"], "--data"),
    (["--weight-decay", "0.5"], "--weight-decay"),
    (["--threads", "2"], "--threads"),
])
def test_study_refuses_network_options_without_model(tmp_path, capsys, argv, option):
    # `dynopt study --data wine` silently ran the default double-well study: the network-only
    # options were ignored without --model (while --model refuses --potential, --dim, --q0).
    rc = main(["study", *argv, "--steps", "100", "--no-plots", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{option} applies only with --model" in err
    assert not (tmp_path / "summary.json").exists()


def test_network_study_refuses_the_numba_backend(tmp_path, capsys):
    # `--model mlp --backend numba` ran on torch and said so only in its header; the numba
    # kernel cannot call a model, as integrate(backend="numba") says for a NetworkLoss.
    rc = main(["study", "--model", "mlp", "--backend", "numba", "--steps", "40", "--chains", "2",
               "--no-plots", "--out", str(tmp_path)])
    assert rc == 2 and "--backend numba" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("system", ["hamiltonian", "born-infeld", "ecdsep"])
@pytest.mark.parametrize("model", [[], ["--model", "mlp", "--chains", "2"]])
def test_study_refuses_gamma_for_a_system_that_does_not_read_it(tmp_path, capsys, system, model):
    # `--system hamiltonian --gamma 5` ran the NVE study as if --gamma were not given
    rc = main(["study", "--system", system, *model, "--gamma", "5", "--steps", "40",
               "--no-plots", "--out", str(tmp_path)])
    assert rc == 2 and f"--gamma does not apply to --system {system}" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


def test_study_takes_gamma_for_every_system_whose_help_names_it():
    from dynopt.cli.study_registry import SYSTEMS

    readers = {name for name, entry in SYSTEMS.items() if "--gamma" in entry.help}
    assert readers == {"langevin", "overdamped", "adaptive-langevin", "nose-hoover",
                       "nose-hoover-chain", "port-hamiltonian"}


def test_a_system_factory_reads_gamma_if_and_only_if_its_help_names_it():
    """build_system refuses --gamma by the entry's help text, so a factory that reads gamma
    under a help that does not name --gamma would refuse a --gamma it uses (and the converse
    would let one be ignored): each factory is run on arguments that record the read."""
    import argparse

    from dynopt.cli.study_registry import POTENTIALS, SYSTEMS

    class Recording(argparse.Namespace):
        def __getattribute__(self, name):
            if name == "gamma":
                object.__getattribute__(self, "read").add(name)
            return object.__getattribute__(self, name)

    pot = POTENTIALS["double-well"].factory(1)
    for name, entry in SYSTEMS.items():
        args = Recording(gamma=1.0, temperature=0.25, read=set())
        entry.factory(pot, args)
        assert ("gamma" in args.read) == ("--gamma" in entry.help), name


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, maximize=True),
    lambda p: dynopt.optim.Langevin(p, lr=0.1, gamma=1.0, temperature=0.0, maximize=True),
    lambda p: dynopt.optim.HeavyBall(p, lr=0.1, maximize=True),
])
def test_optimizer_stability_limit_has_no_lambda_max_limit_under_maximize(make):
    # maximize=True ascends the loss, so any positive curvature grows; the limit was reported
    # as if the step descended (SGD(lr=0.1, momentum=0.9): λ_c = 38), and a monitor compared
    # λ_max with it. A stable-looking λ = 1 diverges:
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = make([w])
    for _ in range(200):
        opt.zero_grad()
        (0.5 * w**2).sum().backward()
        opt.step()
    assert abs(w.item()) > 1e3
    lim = dg.optimizer_stability_limit(opt)
    assert lim.lam is None and "maximize" in lim.reason
    # a descending group beside it keeps no λ_max limit either: λ_max spans all parameters
    v = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    both = torch.optim.SGD([{"params": [v]}, {"params": [w], "maximize": True}], lr=0.1)
    assert dg.optimizer_stability_limit(both).lam is None
    assert dg.optimizer_stability_limit(torch.optim.SGD([v], lr=0.1)).lam == pytest.approx(20.0)


@pytest.mark.parametrize("exponent", [-600, -540, 500, 560, 1000])
def test_ess_and_rhat_do_not_depend_on_the_scale_of_the_draws(exponent):
    # the squared sums of τ̂ and R̂ overflowed beyond |x| ≈ 1e152 and underflowed below 1e-165
    # (NaN where ArviZ gives a value); a power-of-two scale is exact, so the results must be
    # equal bit for bit to those of the unscaled draws
    from dynopt.diagnostics import effective_sample_size, rhat

    rng = np.random.default_rng(3)
    x = np.empty((4, 400, 2))
    x[:, 0] = rng.normal(size=(4, 2))
    for t in range(1, 400):  # AR(1), φ = 0.7: ESS well below the 1,600 draws
        x[:, t] = 0.7 * x[:, t - 1] + rng.normal(size=(4, 2))
    x[..., 1] += 3.0  # an offset coordinate
    scaled = np.ldexp(x, exponent)
    assert np.all(np.isfinite(scaled)) and np.all(scaled != 0)
    for method in ("mean", "bulk", "tail"):
        base = effective_sample_size(x, method=method)
        assert np.all(np.isfinite(base)) and np.all(base < 1600)
        np.testing.assert_array_equal(effective_sample_size(scaled, method=method), base)
    for method in ("split", "rank"):
        np.testing.assert_array_equal(rhat(scaled, method=method), rhat(x, method=method))


def test_integrate_warns_when_the_scheme_drops_a_positive_temperature():
    # integrate(Langevin(τ > 0), "BAB") ran Hamiltonian dynamics without a word (the CLI
    # refuses it): now a UserWarning; τ = 0 (deterministic on purpose) and schemes with an O
    # step stay silent
    pot = potentials.Harmonic(1.0, dim=1)
    q0 = np.zeros((2, 1))
    with pytest.warns(UserWarning, match="integrator 'BAB' draws no noise"):
        dynopt.integrate(systems.Langevin(pot, gamma=1.0, temperature=0.5), "BAB", q0,
                         h=0.1, n_steps=4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dynopt.integrate(systems.Langevin(pot, gamma=1.0, temperature=0.0), "BAB", q0,
                         h=0.1, n_steps=4, seed=0)
        dynopt.integrate(systems.Langevin(pot, gamma=1.0, temperature=0.5), "BAOAB", q0,
                         h=0.1, n_steps=4, seed=0)


def test_an_optimizer_warns_when_its_scheme_drops_a_positive_temperature():
    # the same check as integrate()'s (one function): Langevin(temperature > 0, scheme="BAB")
    # stepped as plain heavy ball without a word
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.ones(3)
    with pytest.warns(UserWarning, match="integrator 'BAB' draws no noise"):
        dynopt.optim.Langevin([p], lr=0.1, temperature=0.1, scheme="BAB").step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dynopt.optim.Langevin([p], lr=0.1, temperature=0.0, scheme="BAB").step()
        dynopt.optim.Langevin([p], lr=0.1, temperature=0.1).step()


def test_the_single_step_api_warns_when_the_scheme_drops_a_positive_temperature():
    # the single-step API (scheme.init/step, dynopt.stepping.run) ran "BAB" on Langevin(τ > 0)
    # as Hamiltonian dynamics without a word, where integrate() and the optimizers warn
    from dynopt import integrators

    system = systems.Langevin(potentials.Harmonic(1.0, dim=1), gamma=1.0, temperature=0.5)
    scheme = integrators.Splitting("BAB")
    state = scheme.init(system, np.zeros((2, 1)), seed=0)
    with pytest.warns(UserWarning, match="integrator 'BAB' draws no noise"):
        scheme.step(system, state, h=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        integrators.BAOAB().step(system, integrators.BAOAB().init(system, np.zeros((2, 1)),
                                                                  seed=0), h=0.1)
