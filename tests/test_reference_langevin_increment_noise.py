"""The noise in the θ increments of the Langevin optimizer (langevin-thermostats.md §2.2).

With τ = 0 the increments Δₙ = θₙ − θₙ₋₁ obey Δₙ₊₁ = cΔₙ − η∇L(θₙ) exactly (tested in
test_optim_langevin.py). The reference adds "with τ > 0 the θ increment gets extra noise
(h/2)·d·Rₙ", d = √((1 − c²)τ); eliminating p from the executed form B_h A_{h/2} O_h A_{h/2}
gives the residual

    eₙ = Δₙ₊₁ − cΔₙ + η∇L(θₙ) = (h/2)·d·(Rₙ₋₁ + Rₙ),

the normals of the two O steps around θₙ (a moving average, as in LOL's Leimkuhler–Matthews
block): Var eₙ = 2·(h/2)²d², Cov(eₙ, eₙ₊₁) = (h/2)²d², Cov(eₙ, eₙ₊₂) = 0, and the first
increment Δ₁ = −(η/2)∇L(θ₀) + (h/2)·d·R₀ has variance (h/2)²d². On a flat loss these are
measured over 50,000 independent elements, each within 4 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from dynopt.optim import Langevin

PATHS = {"fused": {}, "foreach": {"foreach": True}, "single": {"foreach": False, "fused": False}}


@pytest.mark.parametrize("path", PATHS)
def test_increment_noise_is_the_sum_of_two_o_step_normals(path):
    h, gamma, tau, n_el, n_steps = 0.3, 0.7, 0.5, 50_000, 6
    c = math.exp(-gamma * h)
    unit = (h / 2) ** 2 * (1 - c * c) * tau  # ((h/2)·d)²
    theta = torch.zeros(n_el, dtype=torch.float64)
    opt = Langevin([theta], lr=h, gamma=gamma, temperature=tau, seed=1, **PATHS[path])
    traj = [theta.clone()]
    for _ in range(n_steps):
        theta.grad = torch.zeros_like(theta)
        opt.step()
        traj.append(theta.clone())
    incr = [traj[k + 1] - traj[k] for k in range(n_steps)]
    e = torch.stack([incr[n + 1] - c * incr[n] for n in range(n_steps - 1)]) / math.sqrt(unit)
    z = 4.0 * math.sqrt(2.0 / n_el)  # 4 SE of the mean of R², R ~ N(0, 1)
    # 4 SE of each mean: Var(e²) = 2·2² = 8, Var(eₙeₙ₊₁) = 2·2 + 2·1² − 1² = 5 and
    # Var(eₙeₙ₊₂) = 2·2 = 4 (Isserlis), against Var(R²) = 2 in z
    var = (e * e).mean(dim=1)
    lag1 = (e[1:] * e[:-1]).mean(dim=1)
    lag2 = (e[2:] * e[:-2]).mean(dim=1)
    first = float((incr[0] ** 2).mean()) / unit
    assert torch.all((var - 2.0).abs() < 2.0 * z), var
    assert torch.all((lag1 - 1.0).abs() < math.sqrt(2.5) * z), lag1
    assert torch.all(lag2.abs() < math.sqrt(2.0) * z), lag2
    assert abs(first - 1.0) < z, first
