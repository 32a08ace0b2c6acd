"""The scripts in examples/ do what their docstrings, printed lines and docs tables claim.

Each example runs here (imported, or executed as a script by :func:`runpy.run_path`) and its
claims are asserted: exact values where they are exact, estimates within 4 standard errors of
the exact value with a bound on the standard error, qualitative statements as inequalities.
The four studies rewrite their section of docs/studies.md with ``--update-docs``; here they
rewrite a copy, which must equal the committed page (run-time cells aside), so a library change
that moves a published number fails a test instead of leaving the page stale.

Default tier: quickstart, custom_potential (at 2,000 steps), sghmc_dynamics, energy_study and
the Nosé–Hoover part of ergodicity_study in full, the start of edge_of_stability and a 10-epoch
network_study part 1. ``-m slow``: the full ergodicity, edge-of-stability and network studies
and the 20,000-step custom_potential. The numba studies are bit-reproducible (no fastmath);
the torch ones (edge of stability, networks) go through the CPU's matmul kernels, so their docs
comparison holds on the kind of machine that wrote the page.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import re
import runpy
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

import dynopt
from dynopt import diagnostics as dg
from dynopt.optim import dynamics as D

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
STUDIES = ROOT / "docs" / "studies.md"
TESTED = {"custom_potential", "edge_of_stability", "energy_study", "ergodicity_study",
          "network_study", "quickstart", "sghmc_dynamics"}
TAU_DW = 0.25  # the double-well temperature of quickstart and ergodicity_study
Q2_DW = 0.917671  # ⟨q²⟩ of exp(−(q² − 1)²/0.25) by quadrature (tests/test_slow_studies.py)


# --- helpers ------------------------------------------------------------------------------------

def load(name: str) -> ModuleType:
    """Import examples/<name>.py as a module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def redirected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Load a study example whose ROOT and IMG point into tmp_path, with a copy of
    docs/studies.md there: ``--update-docs`` and the plots write the copy, not the checkout."""
    (tmp_path / "docs").mkdir()
    shutil.copy(STUDIES, tmp_path / "docs" / "studies.md")

    def _load(name: str) -> ModuleType:
        mod = load(name)
        monkeypatch.setattr(mod, "ROOT", tmp_path)
        monkeypatch.setattr(mod, "IMG", tmp_path / "docs" / "img")
        return mod

    return _load


def section(text: str, name: str) -> str:
    """The body between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    found = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert found, f"no section {name!r}"
    return found.group(1)


_RUN_TIME = re.compile(r"\| [0-9.]+ s \|$", re.M)


def without_run_times(text: str) -> str:
    """Wall-clock cells ("8 s", "0.7 s", always a table's last column) masked."""
    return _RUN_TIME.sub("| (run time) |", text)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


def assert_docs_section(written: Path, name: str, script: str, rel: float | None = None) -> str:
    """The section ``name`` of the rewritten copy equals the committed one; returns it.

    ``rel=None``: character for character (the slow tier, on the machine that wrote the docs).
    ``rel`` > 0: the same text around the numbers, and each number within ``rel`` of the docs'
    one. The default tier runs on CI machines whose CPUs differ from the one that wrote the
    docs: torch's reductions change their order with the vector width, so a last printed digit
    may move even where the run is not chaotic."""
    new = without_run_times(section(written.read_text(), name))
    old = without_run_times(section(STUDIES.read_text(), name))
    stale = (f"docs/studies.md section {name!r} is not what the example prints now: rerun "
             f"`python examples/{script}.py --update-docs` and re-read the prose around it")
    if rel is None:
        assert new == old, stale
    else:
        assert _NUMBER.sub("#", new) == _NUMBER.sub("#", old), stale
        a, b = ([float(x) for x in _NUMBER.findall(t)] for t in (new, old))
        assert a == pytest.approx(b, rel=rel, abs=1e-12), stale
    return section(written.read_text(), name)


def tables(text: str) -> list[list[dict[str, str]]]:
    """The markdown tables in ``text``, each a list of rows keyed by the header cells."""
    out, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            header, _rule, *rows = block
            out.append([dict(zip(header, row, strict=True)) for row in rows])
            block = []
    return out


def nums(cell: str) -> list[float]:
    """Every number in a table cell, in order ("20.3 (16.8 – 23.2)" → [20.3, 16.8, 23.2])."""
    return [float(x) for x in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?", cell)]


def pm(cell: str) -> tuple[float, float]:
    """A "value ± se" cell."""
    value, se = cell.split("±")
    return float(value), float(se)


def test_every_example_is_tested_here():
    """A new example gets its claims checked in this file, or this fails."""
    assert {p.stem for p in EXAMPLES.glob("*.py")} == TESTED


@pytest.mark.parametrize("name", sorted(TESTED))
def test_every_example_says_what_it_shows_and_how_to_run_it(name):
    doc = ast.get_docstring(ast.parse((EXAMPLES / f"{name}.py").read_text()), clean=False)
    assert doc, f"examples/{name}.py has no module docstring"
    assert len(doc.splitlines()[0]) > 30, doc.splitlines()[0]  # a sentence saying what it shows
    assert re.search(rf"^ +python examples/{name}\.py\b", doc, re.M), doc  # how to run it


# --- quickstart ---------------------------------------------------------------------------------

def test_quickstart_estimates_are_those_of_the_gibbs_measure(capsys):
    """⟨q⟩ = 0, ⟨q²⟩ = 0.917671, P(q > 0) = 1/2 and ⟨p²⟩ = τ (less BAOAB's kinetic bias
    τh²U″(±1)/4 = 0.00125) within 4 SE, each SE bounded; the printed reference values are the
    exact ones; every chain crosses the barrier dozens of times."""
    g = runpy.run_path(str(EXAMPLES / "quickstart.py"))
    out = capsys.readouterr().out
    traj, q, burn = g["traj"], g["q"], g["burn"]
    assert (traj.n_chains, traj.n_draws, q.shape) == (16, 20_001, (16, 18_001))
    assert traj.system.temperature == TAU_DW
    quad = dg.gibbs_moment(traj.system.potential, TAU_DW, lambda x: x * x)
    assert quad == pytest.approx(Q2_DW, abs=5e-7)
    assert float(re.search(r"\(([0-9.]+) by quadrature", out).group(1)) == Q2_DW
    assert float(re.search(r"\(tau = ([0-9.]+);", out).group(1)) == TAU_DW
    kinetic_bias = TAU_DW * traj.h**2 * 8 / 4
    p2 = traj.p[:, burn:, 0] ** 2
    for what, x, exact, allowance, se_max in (
            ("<q>", q, 0.0, 0.0, 0.05), ("<q^2>", q**2, Q2_DW, 1e-4, 2e-3),
            ("P(q>0)", (q > 0).astype(float), 0.5, 0.0, 0.03),
            ("<p^2>", p2, TAU_DW, kinetic_bias, 2e-3)):
        est = dg.estimate_mean(x)
        assert est.se < se_max, (what, est)
        assert abs(est.value - exact) < 4 * est.se + allowance, (what, est, exact)
    committed = dg.barrier_crossings(traj.q[..., 0])
    assert committed.min() >= 30, committed
    printed = float(re.search(r"well crossings per chain: (\d+)", out).group(1))
    assert printed >= committed.mean()  # each committed crossing changes the sign of q


# --- custom_potential ---------------------------------------------------------------------------

H0_QUARTIC = 0.5**4 + 0.2**4 + 0.5 * 0.2 + (0.3**2 + 0.4**2) / 2  # U(0.5, −0.2) + |p|²/2


def check_custom_potential(ex: ModuleType, runs: dict[str, Any], n: int, out: str) -> None:
    for backend in ("numba", "torch"):
        e = runs[backend].energy[0]
        assert e[0] == pytest.approx(H0_QUARTIC, abs=1e-12)
        drift = np.abs(e - e[0]).max()
        assert drift < 1e-4, (backend, drift)  # leapfrog's bounded O(h²) error, h = 0.01
        assert f"{backend:5s}: max |H(t) - H(0)| over {n:,} leapfrog steps = {drift:.2e}" in out
    np.testing.assert_allclose(runs["numba"].q, runs["torch"].q, rtol=0, atol=1e-10)
    more = runs["continued"]
    assert more.t[0] == pytest.approx(0.01 * n) and more.t[-1] == pytest.approx(0.02 * n)
    whole = dynopt.integrate(ex.ham, "leapfrog", [0.5, -0.2], p0=[0.3, 0.4], h=0.01,
                             n_steps=2 * n)
    np.testing.assert_array_equal(more.q, whole.q[:, n:])
    np.testing.assert_array_equal(more.p, whole.p[:, n:])
    assert abs(more.energy[0, -1] - H0_QUARTIC) < 1e-4
    assert f"continued to t = {0.02 * n:.0f}; energy still {more.energy[0, -1]:.6f}" in out


def test_custom_potential_both_backends_and_the_continued_run(capsys):
    """H(0) = 0.2891 exactly, the leapfrog energy error stays below 1e-4 on both backends, the
    backends agree to 1e-10, the run continued from final_state is bit for bit the
    uninterrupted one, and the energy error is O(h²) (halving h divides it by 4 within 5 %)."""
    ex = load("custom_potential")
    runs = ex.main(n_steps=2_000)
    check_custom_potential(ex, runs, 2_000, capsys.readouterr().out)
    errs = []
    for h in (0.02, 0.01):
        tr = dynopt.integrate(ex.ham, "leapfrog", [0.5, -0.2], p0=[0.3, 0.4], h=h,
                              n_steps=round(100 / h))
        errs.append(np.abs(tr.energy - tr.energy[:, :1]).max())
    assert errs[0] / errs[1] == pytest.approx(4.0, rel=0.05), errs


@pytest.mark.slow
def test_custom_potential_at_full_size(capsys):
    """The example as run from the command line: 20,000 steps per backend and 20,000 more."""
    ex = load("custom_potential")
    runs = ex.main()
    out = capsys.readouterr().out
    check_custom_potential(ex, runs, 20_000, out)
    assert float(re.search(r"max \|Δq\| = (\S+)", out).group(1)) < 1e-10


# --- sghmc_dynamics -----------------------------------------------------------------------------

def test_sghmc_example_fits_its_regression(capsys):
    """The script's 200 SGHMC steps (lr 0.05, γ = 1, B̂ = 0.2) remove more than 90 % of the
    initial model's excess full-batch MSE over the least-squares optimum; it prints the last
    minibatch loss."""
    before = D.REGISTRY.get("sghmc")
    with torch.random.fork_rng():
        try:
            g = runpy.run_path(str(EXAMPLES / "sghmc_dynamics.py"), run_name="__main__")
        finally:
            if before is None:
                D.REGISTRY.pop("sghmc", None)
            else:
                D.REGISTRY["sghmc"] = before
        torch.manual_seed(0)  # the script's draws, to rebuild its initial model
        torch.randn(256, 4), torch.randn(256, 1)
        initial = torch.nn.Linear(4, 1)
    x, y, model, opt = g["x"], g["y"], g["model"], g["opt"]
    assert capsys.readouterr().out == (f"minibatch loss after 200 SGHMC steps: "
                                       f"{g['loss'].item():.4f}\n")
    group = opt.param_groups[0]
    assert (group["gamma"], group["grad_noise"], group["dynamics"]) == (1.0, 0.2, "sghmc")
    with torch.no_grad():
        design = torch.cat([x, torch.ones(256, 1)], dim=1)
        best = torch.nn.functional.mse_loss(design @ torch.linalg.lstsq(design, y).solution,
                                            y).item()
        start = torch.nn.functional.mse_loss(initial(x), y).item()
        end = torch.nn.functional.mse_loss(model(x), y).item()
    assert best <= end < best + 0.1 * (start - best), (start, end, best)


# --- energy_study -------------------------------------------------------------------------------

def test_energy_study_tables_are_the_docs_and_its_claims_hold(redirected, tmp_path):
    """docs/studies.md (a) is what the script writes (each number within 2 %: another CPU may
    round differently; bit for bit in the slow tier's runs of the other studies); in it: no
    secular drift
    (|slope| < 4 SE, SE < 1e-8), the same maximum error in the first and last 10 % of 10⁶ steps
    for every chain, relative error below 1 %, five orbits below the barrier and three above,
    none within 0.2 of the separatrix, and order 2 ± 0.1 (asymptotic) for both the maximum
    energy error and the global error against dopri8."""
    ex = redirected("energy_study")
    ex.main(["--update-docs"])
    written = tmp_path / "docs" / "studies.md"
    new = assert_docs_section(written, "energy-study", "energy_study", rel=0.02)
    summary, per_chain, sweep, orders = tables(new)
    s = summary[0]
    assert abs(float(s["slope/SE"])) < 4 and float(s["slope SE"]) < 1e-8
    assert float(s["max abs ΔE / abs E(0)"]) < 0.01
    e0 = np.array([float(r["E(0)"]) for r in per_chain])
    assert ((e0 < 1).sum(), (e0 > 1).sum()) == (5, 3) and np.abs(e0 - 1).min() > 0.2
    for r in per_chain:
        whole, first, last = (float(r[k]) for k in ("max abs ΔE, whole run", "first 10%",
                                                    "last 10%"))
        assert max(first, last) <= whole and abs(first - last) <= 0.05 * whole, r
    assert [float(r["h"]) for r in sweep] == ex.HS
    for r in orders:
        order = float(r["fitted order"])
        assert abs(order - 2) < 0.1 and r["asymptotic"] == "True", r
        assert all(abs(v - order) < 0.15 for v in nums(r["local orders"])), r
    for png in ("energy_error.png", "energy_order.png"):
        assert (tmp_path / "docs" / "img" / png).stat().st_size > 5000


# --- ergodicity_study ---------------------------------------------------------------------------

def check_nose_hoover(rows: list[dict[str, str]]) -> None:
    """Single thermostat: T_kin right on average but each chain far from the Gaussian (per-chain
    TV > 10× its floor, kurtosis spread beyond 3 ± 0.5) while the pooled TV is within 2× its
    floor; chain of 3: per-chain TV within 2× its floor and kurtosis 3 ± 0.2; both keep the
    extended energy bounded."""
    single, chain = rows
    assert single["thermostat"].startswith("Nosé–Hoover (single)")
    kurt = "⟨q⁴⟩/⟨q²⟩² per chain (Gaussian: 3)"
    for row in (single, chain):
        assert abs(float(row["T_kin (target 1)"]) - 1) < 0.01, row
        assert float(row["max abs Δ invariant"]) < 0.2, row
    tv, floor = nums(single["TV per chain, median (floor)"])
    assert tv > 10 * floor
    tv, floor = nums(single["TV pooled (floor)"])
    assert tv < 2 * floor
    lo, hi = nums(single[kurt])
    assert lo < 2.5 and hi > 3.5
    for key in ("TV per chain, median (floor)", "TV pooled (floor)"):
        tv, floor = nums(chain[key])
        assert tv < 2 * floor, (key, tv, floor)
    lo, hi = nums(chain[kurt])
    assert 2.8 < lo <= hi < 3.2
    assert float(chain["max abs Δ invariant"]) < 0.02


def test_ergodicity_study_nose_hoover_part(redirected, tmp_path):
    """Part 3 of the study in full (16 chains × 2·10⁵ steps each): the claims of
    docs/studies.md (b) about single thermostat vs chain hold. (Its table equals the docs' in
    the slow tier's full run only: Nosé–Hoover is chaotic, so a last-bit difference of another
    CPU's exp() gives other, statistically equivalent numbers.)"""
    ex = redirected("ergodicity_study")
    table = ex.nose_hoover()
    check_nose_hoover(tables(table)[0])
    assert (tmp_path / "docs" / "img" / "nose_hoover_ergodicity.png").stat().st_size > 5000


@pytest.mark.slow
def test_ergodicity_study_at_full_size(redirected, tmp_path):
    """The whole study: docs section equal to the script's; Langevin on the double well samples
    Gibbs (⟨q²⟩, P(q > 0), T_conf within 4 SE, SE < 5e-3; T_kin low by more than 2 SE and within
    4 SE of τ − τh²U″/4; TV within 2× its floor; R-hat < 1.01; crossings, ESS and IAT as the
    prose says); the sweep's kinetic bias follows −τh²U″(±1)/4 within 20 % while the
    configurational and ⟨q²⟩ biases are unresolved (< 2 SE) at h ≤ 0.1 and ≥ 5× smaller at
    h ≥ 0.2."""
    ex = redirected("ergodicity_study")
    ex.main(["--update-docs"])
    new = assert_docs_section(tmp_path / "docs" / "studies.md", "ergodicity-study",
                              "ergodicity_study")
    double_well, sweep, nose_hoover = tables(new)
    rows = {r["quantity"]: r for r in double_well}
    for key, exact in (("⟨q²⟩", Q2_DW), ("P(q > 0)", 0.5), ("T_conf = ⟨U′²⟩/⟨U″⟩", TAU_DW)):
        value, se = pm(rows[key]["estimate ± SE"])
        assert se < 5e-3 and abs(value - exact) < 4 * se, (key, value, se)
    value, se = pm(rows["T_kin = ⟨p²⟩"]["estimate ± SE"])
    assert se < 1e-3 and TAU_DW - value > 2 * se
    assert abs(value - (TAU_DW - TAU_DW * 0.05**2 * 8 / 4)) < 4 * se
    for key in ("TV(histogram, Gibbs), pooled, 50 bins", "TV per chain (median)"):
        tv, floor = float(rows[key]["estimate ± SE"]), nums(rows[key]["exact / reference"])[0]
        assert tv < 2 * floor, key
    cross = rows["well crossings per chain (mean, min)"]
    mean, low = nums(cross["estimate ± SE"])
    rate = nums(cross["exact / reference"])[0]
    assert low >= 100 and mean / 50_000 == pytest.approx(rate, rel=2e-3)  # per 5·10⁴ time units
    assert 1 / rate == pytest.approx(170, rel=0.1)  # prose: "roughly one per 170 time units"
    ess, bulk = nums(rows["ESS of q (mean / bulk)"]["estimate ± SE"])
    draws, iat = nums(rows["ESS of q (mean / bulk)"]["exact / reference"])
    assert ess / draws == pytest.approx(0.016, abs=0.002) and bulk > ess  # prose: ~1.6 %
    assert iat == pytest.approx(160, rel=0.1)  # prose: about 160 time units
    assert all(1 <= v < 1.01 for v in nums(rows["split R-hat / rank R-hat"]["estimate ± SE"]))
    for r in sweep:
        h = float(r["h"])
        kin, _ = pm(r["T_kin − τ"])
        predicted = float(r["−τh²U″(±1)/4"])
        assert predicted == pytest.approx(-TAU_DW * h * h * 8 / 4)
        assert kin == pytest.approx(predicted, rel=0.2), r
        for key in ("T_conf − τ", "⟨q²⟩ − exact"):
            bias, se = pm(r[key])
            assert abs(bias) < (2 * se if h <= 0.1 else abs(kin) / 5), (key, r)
    check_nose_hoover(nose_hoover)


# --- edge_of_stability --------------------------------------------------------------------------

def test_heavy_ball_is_sgd_with_momentum_as_the_example_says(one_thread):
    """HeavyBall(lr=h, gamma=(1 − μ)/h) takes the steps of SGD(lr=h², momentum=μ): 20
    full-batch steps on the example's MLP agree to float32 rounding."""
    from dynopt.data import make_spirals
    from dynopt.optim import HeavyBall

    ex = load("edge_of_stability")
    split = make_spirals(seed=0)
    x, y = split.x_train, split.y_train.reshape(-1, 1) * 2 - 1
    h = math.sqrt(ex.ETA)
    with torch.random.fork_rng():
        models = [ex.mlp(0), ex.mlp(0)]
    opts = [HeavyBall(models[0].parameters(), lr=h, gamma=(1 - ex.MU) / h),
            torch.optim.SGD(models[1].parameters(), lr=ex.ETA, momentum=ex.MU)]
    start = [p.detach().clone() for p in models[0].parameters()]
    for _ in range(20):
        for model, opt in zip(models, opts, strict=True):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for a, b, a0 in zip(models[0].parameters(), models[1].parameters(), start, strict=True):
        assert (a - a0).abs().max() > 1e-3  # it moved
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def edge_rows() -> dict[str, dict[str, str]]:
    return {r["optimizer"]: r for r in tables(section(STUDIES.read_text(),
                                                      "edge-of-stability"))[0]}


def test_edge_of_stability_limits_start_and_sharpening(one_thread):
    """The limits from the optimizers' own schemes are 2/η = 20 and 2(1 + μ)/η = 30; both runs
    start at the λ_max of the docs table (9.45); the heavy ball sharpens by > 20 % in its
    first 300 steps while the loss falls (docs/studies.md (c))."""
    ex = load("edge_of_stability")
    with torch.random.fork_rng():
        gd = ex.run("gd", steps=0, every=1, seed=0)
        hb = ex.run("heavy ball", steps=300, every=300, seed=0)
    assert gd["limit"] == pytest.approx(2 / ex.ETA, rel=1e-9)
    assert hb["limit"] == pytest.approx(2 * (1 + ex.MU) / ex.ETA, rel=1e-9)
    docs = edge_rows()
    for kind, r in (("gd", gd), ("heavy ball", hb)):
        assert float(docs[kind]["limit λ_c (from its scheme)"]) == float(f"{r['limit']:.4g}")
        assert float(docs[kind]["λ_max at step 0"]) == float(f"{r['lam'][0]:.3g}")
    assert list(hb["step"]) == [0, 300]
    assert hb["lam"][1] > 1.2 * hb["lam"][0], hb["lam"]
    assert hb["loss"][1] < hb["loss"][0]


@pytest.mark.slow
def test_edge_of_stability_at_full_size(redirected, tmp_path, one_thread):
    """2,500 steps each: the docs table is the script's; each run starts below half its limit,
    reaches 0.95 λ_c in the first half, then hovers at the limit (second-half mean within 10 %,
    maximum above it) while the loss ends lower; the prose quotes the table's ratios."""
    ex = redirected("edge_of_stability")
    with torch.random.fork_rng():
        ex.main(["--update-docs"])
    new = assert_docs_section(tmp_path / "docs" / "studies.md", "edge-of-stability",
                              "edge_of_stability")
    rows = {r["optimizer"]: r for r in tables(new)[0]}
    for row in rows.values():
        limit = float(row["limit λ_c (from its scheme)"])
        assert float(row["λ_max at step 0"]) < 0.5 * limit
        assert int(row["first step with λ_max ≥ 0.95 λ_c"]) < 1250
        mean, low, high = nums(row["λ_max, second half: mean (min – max)"])
        assert abs(float(row["mean / λ_c"]) - 1) < 0.1 and low < min(mean, limit), row
        assert high > max(mean, limit), row
        first, last = nums(row["loss"])
        assert last < first
    assert (f"mean {rows['gd']['mean / λ_c']} λ_c for GD, {rows['heavy ball']['mean / λ_c']} "
            f"λ_c for the heavy ball") in " ".join(STUDIES.read_text().split())


# --- network_study ------------------------------------------------------------------------------

def test_network_study_part1_short(redirected, one_thread):
    """Part 1 for 10 epochs: one row per optimizer and parameter tensor with its size; under
    minibatch gradients every block of ≥ 100 coordinates is hotter than τ = 1e-4 in kinetic
    temperature and more than 10 τ in configurational temperature, and AdLaLa's layer-1
    friction has risen above its ξ₀ = 0.1."""
    ex = redirected("network_study")
    with torch.random.fork_rng():
        table = ex.part1(10)
    rows = tables(table)[0]
    assert [(r["optimizer"], r["layer"], int(r["n"])) for r in rows] == [
        (opt, layer, n) for opt in ("adlala", "langevin")
        for layer, n in (("0.weight", 200), ("0.bias", 100), ("2.weight", 100), ("2.bias", 1))]
    for r in rows:
        if int(r["n"]) >= 100:
            assert pm(r["T_kin ± SE"])[0] > 1e-4 and pm(r["T_conf ± SE"])[0] > 1e-3, r
    assert float(rows[0]["ξ (layer 1, mean)"]) > 0.1
    assert all(r["ξ (layer 1, mean)"] == "-" for r in rows[1:])


@pytest.mark.slow
def test_network_study_at_full_size(redirected, tmp_path, monkeypatch, one_thread):
    """The whole study: docs section equal to the script's, and its prose: (1) the big blocks
    at 1–3.5 τ kinetic and 30–80 τ configurational, the output bias at 10–60 τ kinetic,
    Langevin's layer 1 hotter than AdLaLa's (both, > 2 combined SE), ξ risen above 0.5;
    (2) T_kin at τ (|z| < 2) in every layer at both τ; at 1e-4 layer 1 is not relaxed
    (T_conf z > 10) and R-hat is far above 1 (loss > 1.5, projections > 5); at 1e-2 T_conf is
    τ within 2 SE in every layer, loss R-hat in (1.01, 1.3), projections still > 2; (3) BBI's
    invariant within 1.2 % with |slope| < 2 SE and no linear stability limit."""
    ex = redirected("network_study")
    summaries: list[dict] = []
    run_study = ex.study

    def recording(argv: list[str]) -> dict:
        summaries.append(run_study(argv))
        return summaries[-1]

    monkeypatch.setattr(ex, "study", recording)
    with torch.random.fork_rng():
        ex.main(["--update-docs"])
    new = assert_docs_section(tmp_path / "docs" / "studies.md", "network-study", "network_study")
    part1 = tables(new)[0]
    tau = 1e-4
    temps = {(r["optimizer"], r["layer"]): (pm(r["T_kin ± SE"]), pm(r["T_conf ± SE"]))
             for r in part1}
    for (_opt, layer), ((kin, _), (conf, _)) in temps.items():
        if layer == "2.bias":
            assert 10 * tau < kin < 60 * tau
        else:
            assert tau < kin < 3.5 * tau and 30 * tau < conf < 80 * tau, layer
    for which in (0, 1):
        (a, sa), (b, sb) = temps["langevin", "0.weight"][which], temps["adlala", "0.weight"][which]
        assert a - b > 2 * math.hypot(sa, sb), which
    assert float(part1[0]["ξ (layer 1, mean)"]) > 0.5
    cold, hot, bbi = summaries
    for s in (cold, hot):
        assert all(abs(layer["kinetic"]["z"]) < 2 for layer in s["layers"].values())
    assert cold["layers"]["0.weight"]["configurational"]["z"] > 10
    assert cold["loss"]["rhat"] > 1.5 and max(cold["projections"]["rhat"]) > 5
    assert all(abs(layer["configurational"]["z"]) < 2 for layer in hot["layers"].values())
    assert 1.01 < hot["loss"]["rhat"] < 1.3 and max(hot["projections"]["rhat"]) > 2
    c = bbi["conservation"]
    assert c["max_rel_error"] < 0.012 and abs(c["slope"]) < 2 * c["slope_se"]
    assert bbi["curvature"]["limit"] is None
