"""Optimizer dynamics are declarations: a new one (SGHMC, examples/sghmc_dynamics.py) is one file
plus one registration line, and every group's hyperparameters are checked against its own
dynamics only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from dynopt.optim import Langevin, Partitioned
from dynopt.optim import dynamics as D

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sghmc_dynamics.py"


@pytest.fixture(scope="module")
def sghmc():
    spec = importlib.util.spec_from_file_location("sghmc_dynamics_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # registers "sghmc"
    yield mod
    D.REGISTRY.pop("sghmc", None)


def _model() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))


def _run(opt_factory, n_steps: int = 15) -> list[torch.Tensor]:
    m = _model()
    opt = opt_factory(m.parameters())
    gen = torch.Generator().manual_seed(7)
    for _ in range(n_steps):
        x = torch.randn(8, 3, generator=gen)
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in m.parameters()]


@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"foreach": False}])
def test_sghmc_is_langevin_at_the_reduced_injected_temperature(sghmc, path):
    """O of SGHMC = OU(e^{−γt}, √((1−c²)τ(1−B̂/γ))): bit-equal to Langevin at τ(1 − B̂/γ), and to
    plain Langevin at B̂ = 0 (a wrong noise scale or a dropped letter breaks the equality)."""
    tau, gamma, b = 0.03, 2.0, 0.5
    got = _run(lambda ps: sghmc.SGHMC(ps, lr=0.05, gamma=gamma, grad_noise=b, temperature=tau,
                                      seed=11, **path))
    want = _run(lambda ps: Langevin(ps, lr=0.05, gamma=gamma, temperature=tau * (1.0 - b / gamma),
                                    seed=11, **path))
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    plain = _run(lambda ps: sghmc.SGHMC(ps, lr=0.05, gamma=gamma, temperature=tau, seed=11, **path))
    lang = _run(lambda ps: Langevin(ps, lr=0.05, gamma=gamma, temperature=tau, seed=11, **path))
    for g, w in zip(plain, lang, strict=True):
        assert torch.equal(g, w)
    assert not torch.equal(got[0], plain[0])  # B̂ changes the trajectory


def test_sghmc_groups_in_partitioned_are_checked_against_their_own_dynamics(sghmc):
    m = _model()
    opt = Partitioned([{"params": m[0].parameters(), "dynamics": "sghmc", "grad_noise": 0.05},
                       {"params": m[2].parameters(), "dynamics": "langevin", "momentum": 0.9}],
                      lr=0.1, seed=0)
    assert opt.param_groups[0]["grad_noise"] == 0.05 and opt.param_groups[0]["gamma"] == 0.1
    assert opt.param_groups[1]["grad_noise"] == 0.0  # torch copies the optimizer-wide default
    only_langevin = Partitioned(_model().parameters(), dynamics="langevin", lr=0.1)
    assert "grad_noise" not in only_langevin.param_groups[0]  # no key of an unused dynamics
    with pytest.raises(ValueError, match="dynamics='langevin', which does not use 'grad_noise'"):
        Partitioned([{"params": m[2].parameters(), "dynamics": "langevin", "grad_noise": 0.1}],
                    lr=0.1)
    with pytest.raises(ValueError, match="dynamics='sghmc', which does not use 'momentum'"):
        Partitioned([{"params": m[0].parameters(), "dynamics": "sghmc", "momentum": 0.9}],
                    lr=0.1)
    with pytest.raises(ValueError, match="grad_noise must be <= gamma"):
        sghmc.SGHMC(m.parameters(), gamma=0.1, grad_noise=0.2)
    with pytest.raises(ValueError, match=r"grad_noise must be >= 0, got -1.0 \(param group 0\)"):
        sghmc.SGHMC(m.parameters(), grad_noise=-1.0)
    with pytest.raises(TypeError, match="grad_noise cannot be a schedule"):
        sghmc.SGHMC(m.parameters(), grad_noise=lambda step: 0.0)


def test_unknown_keywords_and_bad_declarations_are_refused():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['gama'\]"):
        Partitioned(_model().parameters(), dynamics="langevin", gama=0.3)
    with pytest.raises(ValueError, match="must declare 'lr'"):
        D.register_dynamics(D.OptimizerDynamics("x", {}, lambda g, v: None, "BAOAB"))
    bad = {"lr": D.LR, "n": D.Hyper(1, D.int_at_least(1), numeric=False, schedulable=True)}
    with pytest.raises(ValueError, match=r"only numeric hyperparameters can be schedulable"):
        D.register_dynamics(D.OptimizerDynamics("x", bad, lambda g, v: None, "BAOAB"))
    assert "x" not in D.REGISTRY


def test_declarations_drive_the_shipped_dynamics():
    """The four shipped dynamics are registered, with the defaults the optimizers document."""
    assert set(D.names()) >= {"langevin", "overdamped", "adaptive-langevin", "nose-hoover"}
    assert D.get("langevin").hypers["gamma"].default == 0.1
    assert D.get("adaptive-langevin").hypers["eps"].default == 0.05
    assert D.get("nose-hoover").default_scheme({"chain_length": 3}) == "TBABT"
    assert D.get("nose-hoover").default_scheme({"chain_length": 1}) == "ECBABCE"
    assert D.get("overdamped").step({"overdamped_dt": "lr**2/2"}, 0.2) == pytest.approx(0.02)
    opt = Partitioned([{"params": _model().parameters(), "dynamics": "overdamped"}], lr=0.1)
    assert "gamma" not in opt.param_groups[0] and "scope" not in opt.param_groups[0]


@pytest.mark.parametrize("flags", [{}, {"fused": False}, {"foreach": False}, {"foreach": True},
                                   {"fused": True}, {"fused": False, "foreach": True},
                                   {"differentiable": True}])
def test_one_path_chooser_for_every_optimizer(flags):
    """Partitioned picks its path with the same rule as HeavyBall, BBI and ECDSep
    (dynopt.optim._paths.choose_path): fused=False is the single-tensor path on the CPU for all
    of them (it used to be foreach for the Langevin family only)."""
    from dynopt.optim._paths import choose_path

    t32, tbf = torch.zeros(3), torch.zeros(3, dtype=torch.bfloat16)
    opt = Langevin([t32], lr=0.1)
    group = {**opt.param_groups[0], **flags}
    for tensors in ([t32], [tbf], [torch.zeros(4)[::2]]):
        try:
            want = choose_path(group, tensors, "Langevin")
        except ValueError as err:
            with pytest.raises(ValueError, match="fused=True"):
                opt._path(group, tensors)
            assert "fused=True" in str(err)
            continue
        assert opt._path(group, tensors) == want
    if flags == {"fused": False}:
        assert opt._path(group, [t32]) == "single"


def test_a_dynamics_without_temperature():
    """build() and diagnostics() assume no temperature: a Hamiltonian (leapfrog) dynamics
    declared with lr and mass only is gradient descent with momentum at τ = 0, i.e. Langevin with
    γ = 0 and τ = 0 (same θ sequence; the optimizer forms differ only by a merged drift)."""
    from dynopt import systems

    ham = D.OptimizerDynamics(
        "test-hamiltonian", {"lr": D.LR, "mass": D.MASS},
        lambda group, value: systems.Hamiltonian(None, mass=value("mass")), "BAB")
    D.register_dynamics(ham)
    try:
        got = _run(lambda ps: Partitioned(ps, lr=0.05, dynamics="test-hamiltonian", seed=0))
        want = _run(lambda ps: Langevin(ps, lr=0.05, gamma=0.0, temperature=0.0, seed=0))
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
        opt = Partitioned(_model().parameters(), lr=0.05, dynamics="test-hamiltonian")
        assert opt.diagnostics(host=True)[0]["temperature"] is None
        with pytest.raises(ValueError, match="does not use 'temperature'"):
            Partitioned([{"params": _model().parameters(), "dynamics": "test-hamiltonian",
                          "temperature": 0.1}], lr=0.05)
    finally:
        D.REGISTRY.pop("test-hamiltonian")


def test_checkpoints_of_the_undeclared_era_still_load():
    """Before dynamics were declarations every Partitioned group carried every dynamics' keys at
    their defaults; such a checkpoint loads into the groups this version writes, while a
    non-default foreign value is still refused."""
    import copy

    m = _model()
    opt = Partitioned([{"params": m[0].parameters(), "dynamics": "overdamped"},
                       {"params": m[2].parameters(), "dynamics": "langevin"}], lr=0.05, seed=2)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    old = {"gamma": 0.1, "sigma_a": 0.01, "eps": 0.05, "xi0": None, "tau": None,
           "thermostat_mass": None, "chain_length": 1, "n_substeps": 1, "sy_order": 3,
           "overdamped_dt": "lr", "mass": 1.0, "scope": "tensor", "momentum": None}
    for g in sd["param_groups"]:
        for k, v in old.items():
            g.setdefault(k, v)
    twin = Partitioned([{"params": m[0].parameters(), "dynamics": "overdamped"},
                        {"params": m[2].parameters(), "dynamics": "langevin"}], lr=0.05, seed=9)
    twin.load_state_dict(sd)
    for mine, theirs in zip(twin.param_groups, opt.param_groups, strict=True):
        assert set(mine) == set(theirs)  # exactly the groups this version writes
    assert "eps" not in twin.param_groups[0] and twin.param_groups[1]["gamma"] == 0.1
    bad = copy.deepcopy(sd)
    bad["param_groups"][0]["eps"] = 0.3
    with pytest.raises(ValueError, match="does not use 'eps'"):
        twin.load_state_dict(bad)
