"""The README's example runs as printed and its claims hold (⟨q²⟩ and T_conf within 4 SE)."""

from __future__ import annotations

import re
from pathlib import Path

from dynopt.diagnostics import batch_means_se

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example(capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    traj = ns["traj"]
    q2 = traj.q[:, 100:, 0] ** 2
    assert abs(q2.mean() - 0.917671) < 4 * batch_means_se(q2)
    t_conf = ns["diagnostics"].configurational_temperature(traj)
    assert abs(t_conf.value - 0.25) < 4 * t_conf.se
    assert "±" in capsys.readouterr().out


def test_readme_network_example(capsys, one_thread):
    """The README's network study runs as printed: eight replicas of the spiral MLP under
    Langevin BAOAB at τ = 1e-3 hold τ per layer in kinetic temperature (within 4 SE, each SE
    bounded by its expected size τ√(2/n)·√(IAT/draws) with IAT ≤ 3), and the stability limit
    is BAOAB's h²λ < 4, i.e. λ_c = 1600 at h = 0.05."""
    import math

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "NetworkLoss" in b)
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    traj, tau = ns["traj"], 1e-3
    assert traj.extras["loss"].shape == (8, 101)
    temps = ns["layer_temperatures"](traj, burn_in=50)
    assert set(temps) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    draws = 8 * 51
    for name, lt in temps.items():
        kin = lt.kinetic
        assert kin.se < 2 * tau * math.sqrt(2 / lt.n) * math.sqrt(3 / draws), name
        assert abs(kin.value - tau) < 4 * kin.se, (name, kin)
    limit = ns["diagnostics"].stability_limit(ns["system"], "BAOAB", h=0.05)
    assert abs(limit.lam - 1600) < 1e-9 * 1600
    assert "h²λ/m < 4" in capsys.readouterr().out
