"""Every ```python block of docs/*.md runs, and the claims its comments make hold.

The blocks are found by parsing the pages (``BLOCKS``), so a new block is run without anyone
listing it, and it must get an entry in ``CLAIMS`` (``test_every_block_has_claims``).

**How a block runs.** In a fresh namespace, in a temporary working directory (blocks write
files such as ``adlala.csv``), statement by statement with the page's file name and line
numbers, so a traceback points into the doc. The value of each top-level expression statement
(``traj.q.shape``, ``opt.event_log``) is kept under its source text for the claims to read, as
an interactive session would print it.

**Programs and fragments.** A block whose names are all defined or imported in the block is a
program and runs as printed. A fragment uses names of the reader's own code (``model``,
``loader``, ``opt``, ...): those, and only those, come from the fixture namespace below, and
``test_fragment_names_are_fixtures`` fails for a name that is neither defined in the block,
imported by it, a builtin, nor a fixture (a missing import in a doc is caught there). The
fixture objects are tiny (a 3-8-1 MLP, two batches of 8 rows, a 200-step trajectory) so that
the API names, argument names and attributes a fragment uses are checked against the library.
A comment that stands for the reader's own code (``# ... train the VAE ...``) is replaced by
such code in both tiers (``FILL``).

**Sizes.** A block that takes more than about 5 s at the size printed runs in the default tier
with the substitutions of ``SMALL`` (each must match the printed text exactly once) and at the
printed size under ``@pytest.mark.slow`` (``test_block_full_size``), where the claims that
need the full size (numbers printed in the doc) are checked too.
"""

from __future__ import annotations

import ast
import builtins
import copy
import csv
import math
import re
import socket
import symtable
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dynopt.diagnostics import batch_means_se

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One ```python block: its page, index on the page, first code line and text."""

    page: str
    index: int
    line: int
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}#{self.index}"


def _blocks() -> list[Block]:
    out = []
    for md in sorted(DOCS.glob("*.md")):
        text = md.read_text()
        for i, m in enumerate(FENCE.finditer(text)):
            out.append(Block(md.name, i, text.count("\n", 0, m.start(1)) + 1, m.group(1)))
    return out


BLOCKS = _blocks()
BY_ID = {b.id: b for b in BLOCKS}


def free_names(code: str) -> set[str]:
    """Names a block reads but neither assigns, imports nor finds among the builtins (in any
    scope: a lambda's free variable counts)."""
    top = symtable.symtable(code, "<block>", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    used: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for s in table.get_symbols():
            if s.is_referenced() and (table is top or s.is_global()):
                used.add(s.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    return used - bound - set(dir(builtins))


# --- the fixture namespace ------------------------------------------------------------------

def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    """``build()`` under ``torch.manual_seed(seed)``, leaving the global generator as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


class Fixtures:
    """The reader's objects that fragments use, built on first use (one set per block run, so
    ``model`` and the ``opt`` over its parameters are the same network). Each property is a
    fixture name; a page or block with other meanings subclasses it (``FIXTURES_FOR``)."""

    @cached_property
    def trained(self) -> torch.nn.Module:
        """A 3-8-1 MLP taken as trained: the targets ``y`` are its outputs plus noise."""
        from dynopt import training
        return _seeded(1, lambda: training.mlp(3, 1, (8,)))

    @cached_property
    def model(self) -> torch.nn.Module:
        """A fresh 3-8-1 MLP (another initialization) to train on ``loader``."""
        from dynopt import training
        return _seeded(2, lambda: training.mlp(3, 1, (8,)))

    @cached_property
    def model0(self) -> torch.nn.Module:
        """A copy of ``model`` before the block ran (for the claims; not a fixture name)."""
        return copy.deepcopy(self.model)

    @cached_property
    def loader(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Two batches of 8 rows: x ~ N(0, I₃), y = trained(x) + 0.05·N(0, 1)."""
        x = _seeded(3, lambda: torch.randn(16, 3))
        with torch.no_grad():
            y = self.trained(x) + 0.05 * _seeded(4, lambda: torch.randn(16, 1))
        return [(x[:8], y[:8]), (x[8:], y[8:])]

    @property
    def x(self) -> torch.Tensor:
        """The first batch's inputs."""
        return self.loader[0][0]

    @property
    def y(self) -> torch.Tensor:
        """The first batch's targets."""
        return self.loader[0][1]

    @property
    def x_train(self) -> torch.Tensor:
        """All 16 inputs of ``loader``."""
        return torch.cat([b[0] for b in self.loader])

    @property
    def y_train(self) -> torch.Tensor:
        """All 16 targets of ``loader``."""
        return torch.cat([b[1] for b in self.loader])

    @property
    def n(self) -> int:
        """The number of training examples (16)."""
        return len(self.x_train)

    N = 2
    """Micro-batches per accumulated step (the loader's two batches make one step)."""

    @property
    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The batch-mean squared error."""
        return F.mse_loss

    @property
    def full_batch_loss(self) -> Callable[[torch.nn.Module], float]:
        """``full_batch_loss(net)``: the mean loss over all of ``loader`` as a float."""
        def full_batch_loss(net: torch.nn.Module) -> float:
            with torch.no_grad():
                return float(self.loss_fn(net(self.x_train), self.y_train))
        return full_batch_loss

    @cached_property
    def opt(self) -> torch.optim.Optimizer:
        """Langevin BAOAB over ``model`` (it has momenta, so TrainingMonitor records kinetic
        temperatures)."""
        from dynopt.optim import Langevin
        return Langevin(self.model.parameters(), lr=0.05, gamma=1.0, temperature=1e-4, seed=0)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        """``list(model.parameters())``."""
        return list(self.model.parameters())

    @cached_property
    def system(self) -> Any:
        """The user guide's system: Langevin on the 2-D double well at τ = 0.25."""
        from dynopt import potentials, systems
        return systems.Langevin(potentials.DoubleWell(dim=2), gamma=1.0, temperature=0.25)

    @property
    def q0(self) -> list[float]:
        """(1, 1), a minimum of the 2-D double well."""
        return [1.0, 1.0]

    @cached_property
    def traj(self) -> Any:
        """The diagnostics page's run, short: Langevin on the 1-D double well at τ = 0.25,
        4 chains × 200 steps of BAOAB (h = 0.05, seed 0), 201 records."""
        import dynopt
        from dynopt import potentials, systems
        system = systems.Langevin(potentials.DoubleWell(), gamma=1.0, temperature=0.25)
        return dynopt.integrate(system, "BAOAB", [1.0], h=0.05, n_steps=200, n_chains=4, seed=0)

    @cached_property
    def decoder(self) -> torch.nn.Module:
        """A 4-16-6 tanh "VAE decoder" (latent dimension 4, as the surfing block's x0)."""
        return _seeded(5, lambda: torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6)))

    @cached_property
    def optimizer(self) -> torch.optim.Optimizer:
        """``torch.optim.SGD`` over ``decoder`` (lr 0.05)."""
        return torch.optim.SGD(self.decoder.parameters(), lr=0.05)

    @cached_property
    def y_codes(self) -> torch.Tensor:
        """The 3 latent codes behind the surfing targets (not a fixture name)."""
        return _seeded(6, lambda: torch.randn(3, 4))


class SurfingFixtures(Fixtures):
    """ddpnopt-surfing.md: ``loader`` is digits-like (64 features, 10 classes) for the
    64-…-10 MLP of the DDPNOpt block; ``y`` are 3 outputs of ``decoder``."""

    @cached_property
    def loader(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Two batches of 16: x ~ N(0, I₆₄), labels uniform in 0..9."""
        x = _seeded(7, lambda: torch.randn(32, 64))
        labels = _seeded(8, lambda: torch.randint(0, 10, (32,)))
        return [(x[:16], labels[:16]), (x[16:], labels[16:])]

    @property
    def y(self) -> torch.Tensor:  # type: ignore[override]
        """decoder(codes) for 3 fixed codes: targets the decoder can reach."""
        with torch.no_grad():
            return self.decoder(self.y_codes)


class TwoBasinFixtures(Fixtures):
    """energy-conserving.md: the two-basin experiment of ``dynopt reproduce bbi``
    (``dynopt/reproductions/bbi.py``): BBI on ``MultiBasin`` from (10, −10), the ball is
    basin 1's λ₁|q − c₁|² < 1."""

    @cached_property
    def pot(self) -> Any:
        """``potentials.MultiBasin()``."""
        from dynopt.potentials import MultiBasin
        return MultiBasin()

    @cached_property
    def system(self) -> Any:  # type: ignore[override]
        """BornInfeld(pot) with the reproduction's BASIN_BBI settings."""
        from dynopt.reproductions.bbi import BASIN_BBI
        from dynopt.systems import BornInfeld
        return BornInfeld(self.pot, **BASIN_BBI)

    @property
    def q0(self) -> list[float]:  # type: ignore[override]
        """(10, −10)."""
        return [10.0, -10.0]

    @property
    def c(self) -> np.ndarray:
        """Basin 1's centre c₁."""
        return np.asarray(self.pot.c1)

    @property
    def r2(self) -> float:
        """1/λ₁: the ball λ₁|q − c₁|² < 1."""
        return 1.0 / self.pot.basin_curvatures()[0]


class NetworkFixtures(Fixtures):
    """networks.md: ``system`` and ``theta0`` of the page's first block, at toy size (a 2-4-1
    MLP on 32 spiral points)."""

    @cached_property
    def net(self) -> torch.nn.Module:
        """The 2-4-1 MLP (not a fixture name)."""
        from dynopt import training
        return _seeded(9, lambda: training.mlp(2, 1, (4,)))

    @cached_property
    def system(self) -> Any:  # type: ignore[override]
        """Langevin(NetworkLoss(net, BCE with logits, 32 spiral points)), γ = 0.1, τ = 1e-4."""
        import dynopt.data
        from dynopt.potentials import NetworkLoss
        from dynopt.systems import Langevin
        split = dynopt.data.make_spirals(32, 32)
        U = NetworkLoss(self.net, F.binary_cross_entropy_with_logits,
                        (split.x_train, split.y_train[:, None]))
        return Langevin(U, gamma=0.1, temperature=1e-4)

    @property
    def theta0(self) -> torch.Tensor:
        """``parameters_to_vector(net.parameters())``."""
        return torch.nn.utils.parameters_to_vector(self.net.parameters()).detach()


class LossReaderFixtures(Fixtures):
    """optimizers.md#3 is about optimizers that read the loss: ``opt`` is a BBI there."""

    @cached_property
    def opt(self) -> torch.optim.Optimizer:  # type: ignore[override]
        """BBI over ``model`` (lr 0.05, δE = 1, seed 0)."""
        from dynopt.optim import BBI
        return BBI(self.model.parameters(), lr=0.05, delta_energy=1.0, seed=0)


#: Which fixture class a page (``"page.md"``) or a block (``"page.md#i"``) uses; default
#: ``Fixtures``.
FIXTURES_FOR: dict[str, type[Fixtures]] = {
    "ddpnopt-surfing.md": SurfingFixtures,
    "energy-conserving.md": TwoBasinFixtures,
    "networks.md": NetworkFixtures,
    "optimizers.md#3": LossReaderFixtures,
}

#: Attributes of the fixture classes that are helpers for the claims, not names a block may use.
NOT_FIXTURES = {"model0", "y_codes", "net"}


def fixtures_for(block: Block) -> Fixtures:
    cls = FIXTURES_FOR.get(block.id) or FIXTURES_FOR.get(block.page) or Fixtures
    return cls()


def fixture_names(fx: Fixtures) -> set[str]:
    return {n for n in dir(type(fx)) if not n.startswith("_")} - NOT_FIXTURES


# --- running a block --------------------------------------------------------------------------

#: Default-tier substitutions (text printed → text run) for blocks slower than about 5 s.
SMALL: dict[str, list[tuple[str, str]]] = {
    "user-guide.md#3": [("n_steps=10**6", "n_steps=10**4"), ("progress=True", "progress=False")],
    "diagnostics.md#0": [("n_steps=1_000_000", "n_steps=200_000")],
    "networks.md#0": [("n_steps=10_000", "n_steps=100"), ("record_every=100", "record_every=10"),
                      ("burn_in=20", "burn_in=2")],
    "networks.md#1": [("n_steps=10_000", "n_steps=200")],
    "energy-conserving.md#0": [("n_steps=20_000", "n_steps=2_000")],
    "energy-conserving.md#3": [("n_steps=25_000, n_chains=2000", "n_steps=1_000, n_chains=100"),
                               ("record_every=25_000", "record_every=1_000")],
    "optimizers.md#0": [("range(2000)", "range(200)"), ("step >= 500", "step >= 50")],
    "optimizers.md#4": [("epochs=4000", "epochs=10")],
}

#: Text run in place of the printed text in both tiers (pseudocode a reader fills in).
FILL: dict[str, list[tuple[str, str]]] = {
    # ``# ... train the VAE ...``: 150 SGD steps toward the decoder's own outputs at other
    # codes, so that the recorder takes snapshots at steps 75 and 150.
    "ddpnopt-surfing.md#1": [(
        "# ... train the VAE ...\n",
        "for _ in range(150):\n"
        "    optimizer.zero_grad()\n"
        "    ((decoder(torch.ones(8, 4)) - 0.5) ** 2).mean().backward()\n"
        "    optimizer.step()\n")],
}


def substituted(block: Block, full: bool) -> str:
    code = block.code
    for old, new in FILL.get(block.id, []) + ([] if full else SMALL.get(block.id, [])):
        assert code.count(old) == 1, f"{block.id}: {old!r} occurs {code.count(old)} times"
        code = code.replace(old, new)
    return code


@dataclass
class Run:
    """A block's namespace after it ran, the values of its expression statements (by source
    text), the fixtures it was given and whether it ran at the printed size."""

    ns: dict[str, Any]
    out: dict[str, Any]
    fx: Fixtures
    full: bool


def run_block(block: Block, full: bool) -> Run:
    code = substituted(block, full)
    fx = fixtures_for(block)
    names = free_names(code)
    if "model" in names:
        _ = fx.model0  # the copy before the block trains model
    ns: dict[str, Any] = {"__name__": "__doc_block__"}
    ns.update({name: getattr(fx, name) for name in sorted(names)})
    out: dict[str, Any] = {}
    filename = str(DOCS / block.page)
    tree = ast.parse(code)
    for stmt in tree.body:
        source = ast.get_source_segment(code, stmt)
        ast.increment_lineno(stmt, block.line - 1)
        if isinstance(stmt, ast.Expr):
            out[source] = eval(compile(ast.Expression(stmt.value), filename, "eval"), ns)
        else:
            exec(compile(ast.Module([stmt], []), filename, "exec"), ns)
    return Run(ns, out, fx, full)


# --- the claims -------------------------------------------------------------------------------

CLAIMS: dict[str, Callable[[Run], None]] = {}


def claims(block_id: str) -> Callable[[Callable[[Run], None]], Callable[[Run], None]]:
    def register(fn: Callable[[Run], None]) -> Callable[[Run], None]:
        CLAIMS[block_id] = fn
        return fn
    return register


@claims("user-guide.md#0")
def _(r: Run) -> None:
    """``traj.q.shape  # (64, 10001, 2): (chain, draw, dim)``."""
    assert r.out["traj.q.shape"] == (64, 10001, 2)
    assert r.ns["traj"].p.shape == (64, 10001, 2)


@claims("user-guide.md#1")
def _(r: Run) -> None:
    """The Custom potential's array and numba forms are the same U; ``grad`` defaults to
    autograd, which matches the hand-written ∇U of ``ngU``."""
    pot = r.ns["pot"]
    q = np.array([[0.3, -1.2], [1.5, 0.7]])
    assert np.allclose(pot.value(q), [r.ns["nU"](row) for row in q], rtol=1e-14)
    g = np.zeros(2)
    for row, got in zip(q, pot.grad(torch.tensor(q)), strict=True):
        r.ns["ngU"](row, g)
        assert np.allclose(got.numpy(), g, rtol=1e-12)


@claims("user-guide.md#2")
def _(r: Run) -> None:
    """``BAAOAAB``: "A in four quarter steps"; palindromes are second order."""
    schemes = list(r.out.values())
    assert [s.scheme for s in schemes] == ["OBABO", "BAAOAAB", "BAEOEAB"]
    g = schemes[1]
    assert [f for c, f in g.letters() if c == "A"] == [0.25] * 4
    assert all(s.weak_order == 2 for s in schemes)


@claims("user-guide.md#3")
def _(r: Run) -> None:
    """One record per 100 steps plus the initial state, 64 chains of dim 2 (numba)."""
    n_steps = 10**6 if r.full else 10**4
    traj = r.ns["traj"]
    assert traj.q.shape == (64, n_steps // 100 + 1, 2)
    assert traj.backend == "numba"
    assert np.array_equal(traj.t, 0.05 * 100 * np.arange(n_steps // 100 + 1))


@claims("user-guide.md#4")
def _(r: Run) -> None:
    """``init`` gives a ``dynopt.State`` of 8 chains; ``step`` returns a new State (the old one
    is left as it was, so a saved state replays)."""
    import dynopt
    from dynopt import integrators
    state, system = r.ns["state"], r.ns["system"]
    assert isinstance(state, dynopt.State)
    assert state.q.shape == (8, 2)
    s0 = integrators.BAOAB().init(system, [1.0, 1.0], seed=0, n_chains=8)
    q_before = np.array(s0.q, copy=True)
    s1 = integrators.BAOAB().step(system, s0, h=0.05)
    assert s1 is not s0 and np.array_equal(s0.q, q_before) and not np.array_equal(s1.q, s0.q)
    again = s0
    for _ in range(100):
        again = integrators.BAOAB().step(system, again, h=0.05)
    assert np.array_equal(again.q, state.q)


@claims("diagnostics.md#0")
def _(r: Run) -> None:
    """T_conf is τ = 0.25 within 4 SE, the ESS is about one per draw, the Gibbs distance is
    below its noise floor; at the printed size, the printed numbers (to their digits):
    value≈0.2500, se≈0.0004, ESS ≈ 18025, distance 0.0026, noise floor 0.0037."""
    traj = r.ns["traj"]
    draws = traj.q.shape[1] - 2000
    t_conf = r.out["dg.configurational_temperature(traj, burn_in=2000)"]
    ess = r.out["dg.effective_sample_size(traj.q[:, 2000:])"]
    gibbs = r.ns["dg"].gibbs_distance(traj, burn_in=2000)
    # the SE shrinks as 1/√draws from the printed 0.0004 at 18001 draws (factor 1.5 of slack)
    assert t_conf.se < 1.5 * 0.0004 * math.sqrt(18001 / draws)
    assert abs(t_conf.value - 0.25) < 4 * t_conf.se
    # about one effective draw per draw (18025 of 18001 printed; 0.58-1.07 over seeds 0-11 at
    # the default tier's size, where the rare well-to-well hops dominate)
    assert ess.shape == (1,) and 0.5 < ess[0] / draws < 1.5
    # "of the order of the noise floor" (module docstring): below it at the printed size, at
    # most 1.9 times it over seeds 0-11 at the default tier's size (whose batch means are
    # shorter than the time between hops, so its floor is optimistic)
    assert gibbs.value < (1.0 if r.full else 3.0) * gibbs.noise_floor
    assert r.out["dg.gibbs_distance(traj, burn_in=2000).value"] == gibbs.value
    if r.full:
        assert round(t_conf.value, 4) == 0.25 and round(t_conf.se, 4) == 0.0004
        assert round(float(ess[0])) == 18025
        assert round(gibbs.value, 4) == 0.0026 and round(float(gibbs.noise_floor), 4) == 0.0037


@claims("diagnostics.md#1")
def _(r: Run) -> None:
    """posterior q, p with dims (chain, draw, dim); sample_stats energy; posterior.attrs
    h, seed, t0, dt."""
    idata, traj = r.ns["idata"], r.fx.traj
    for var in ("q", "p"):
        assert idata.posterior[var].dims == ("chain", "draw", "dim")
        assert np.array_equal(idata.posterior[var].values, getattr(traj, var))
    assert np.array_equal(idata.sample_stats["energy"].values, traj.energy)
    attrs = idata.posterior.attrs
    assert (attrs["h"], attrs["seed"], attrs["t0"], attrs["dt"]) == (0.05, 0, 0.0, 0.05)
    summary = r.out["az.summary(idata)"]
    assert "q[0]" in summary.index and "ess_bulk" in summary.columns
    import matplotlib.pyplot as plt
    plt.close("all")


@claims("networks.md#0")
def _(r: Run) -> None:
    """Records every 100 steps of 16 chains; per-layer temperatures with SEs; any diagnostic
    applies to the extras (R-hat of the first projection)."""
    n_records = 101 if r.full else 11
    traj, temps = r.ns["traj"], r.ns["temps"]
    assert traj.extras["loss"].shape == (16, n_records)
    assert traj.extras["heldout_loss"].shape == (16, n_records)
    assert set(temps) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(t.kinetic.se > 0 and t.configurational.se > 0 for t in temps.values())
    rhat = r.out['dynopt.diagnostics.rhat(traj.extras["projections"][..., 0])']
    assert np.all(np.isfinite(rhat)) and np.all(rhat > 0.9)
    if r.full:  # τ per layer in kinetic temperature, within 4 SE
        for name, t in temps.items():
            assert abs(t.kinetic.value - 1e-4) < 4 * t.kinetic.se, (name, t.kinetic)


@claims("networks.md#1")
def _(r: Run) -> None:
    """In a one-rank gloo world the gathered records are bit-identical to the one-process
    ``integrate(..., chain_ids=range(16))``."""
    import dynopt
    n_steps = 10_000 if r.full else 200
    traj = r.ns["traj"]
    ref = dynopt.integrate(r.fx.system, "BAOAB", r.fx.theta0, n_chains=16, h=0.25,
                           n_steps=n_steps, seed=1, record_every=100,
                           observables=["loss", "layer_kinetic"], chain_ids=range(16))
    assert traj.extras.keys() == ref.extras.keys()
    for key in ref.extras:
        assert np.array_equal(traj.extras[key], ref.extras[key]), key
    assert traj.extras["loss"].shape == (16, n_steps // 100 + 1)


@claims("optimizers.md#0")
def _(r: Run) -> None:
    """``copy.deepcopy(trained)`` leaves the trained model alone; 1500 draws after burn-in;
    the anchor θ₀ is the trained weights; ``batch_means_se(draws) * nbeta`` is a usable error:
    θ* is near a minimum, so the sampled loss exceeds L_n(θ*) and λ̂ > 4 SE (measured:
    0.136 ± 0.031 at the default tier's 200 steps, 0.117 ± 0.010 at the printed 2000)."""
    trained, net, opt = r.fx.trained, r.ns["net"], r.ns["opt"]
    fresh = r.fx.__class__().trained
    for a, b in zip(trained.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(r.ns["draws"]) == (1500 if r.full else 150)
    for p, t in zip(net.parameters(), trained.parameters(), strict=True):
        assert torch.equal(opt.state[p]["anchor"], t)
    assert r.ns["L_star"] == r.fx.full_batch_loss(trained)
    se = batch_means_se(np.array(r.ns["draws"])) * r.ns["nbeta"]
    assert r.ns["llc"] > 4 * se > 0


@claims("optimizers.md#1")
def _(r: Run) -> None:
    """The hook writes the diagnostics as CSV under run/ (folder created): a header and one
    row per group per step."""
    opt, model, loss_fn = r.fx.opt, r.fx.model, r.fx.loss_fn
    for x, y in r.fx.loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    with open("run/diagnostics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["step"]) for row in rows] == [1, 2]
    last = opt.diagnostics(host=True)[0]
    assert float(rows[-1]["kinetic_temperature"]) == pytest.approx(
        last["kinetic_temperature"], rel=1e-6)


@claims("optimizers.md#2")
def _(r: Run) -> None:
    """A one-chain Trajectory with a record at construction and every 100 steps after;
    ``layer_temperatures`` applies to it."""
    import dynopt
    mon, opt, model = r.ns["mon"], r.fx.opt, r.fx.model
    assert r.ns["traj"].q.shape[:2] == (1, 1)  # two steps: only record 0
    for _ in range(198):
        x, y = r.fx.loader[0]
        opt.zero_grad()
        r.fx.loss_fn(model(x), y).backward()
        opt.step()
        mon.step()
    traj = mon.trajectory()
    assert traj.extras["loss"].shape == (1, 3)
    assert set(dynopt.observables.layer_temperatures(traj)) == {
        "0.weight", "0.bias", "2.weight", "2.bias"}


@claims("optimizers.md#3")
def _(r: Run) -> None:
    """With accumulation over N = 2 the BBI took one step, and it read the sum of the two
    observed losses/N, the mean loss: E₀ = L − v₀ + δE."""
    opt, model0 = r.ns["opt"], r.fx.model0
    assert opt.step_count == 1
    with torch.no_grad():
        mean_loss = sum(float(r.fx.loss_fn(model0(x), y)) for x, y in r.fx.loader) / 2
    assert opt.energy == pytest.approx(mean_loss - 0.0 + 1.0, rel=1e-6)


@claims("optimizers.md#4")
def _(r: Run) -> None:
    """Linear-ReLU-Linear-Sigmoid; adaptive Langevin on layer 1, Langevin on layer 2; the CSV
    has one row per group every 100 steps (20 batches of 25 per epoch)."""
    model, opt = r.ns["model"], r.ns["opt"]
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear", "Sigmoid"]
    assert [d["dynamics"] for d in opt.diagnostics()] == ["adaptive-langevin", "langevin"]
    epochs = 4000 if r.full else 10
    with open("adlala.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["step"]) for row in rows[::2]] == list(range(100, 20 * epochs + 1, 100))
    assert [row["group"] for row in rows[:2]] == ["0", "1"]
    assert 0.0 <= r.ns["hist"].test_accuracy[-1] <= 1.0


@claims("energy-conserving.md#0")
def _(r: Run) -> None:
    """"SBA" on the numba backend; ``traj.conserved`` is √(V(V + |Π|²)) of the recorded
    states, V = U − v₀; E0 = V(θ₀) + δE from the first step on; bounces counted."""
    traj, system = r.ns["traj"], r.ns["system"]
    assert traj.integrator.scheme == "SBA" and traj.backend == "numba"
    V = traj.extras["potential"] - system.v0
    H = np.sqrt(np.maximum(V * (V + (traj.p ** 2).sum(-1)), 0.0))
    assert np.allclose(traj.conserved, H, rtol=1e-12, atol=1e-12)
    E0, bounces = r.out['traj.extras["E0"], traj.extras["bounces"]']
    V0 = system.potential.value(np.array([-4.0, 3.0])) - system.v0
    assert np.allclose(E0[:, 1:], V0 + 2.0, rtol=1e-14)
    assert np.all(np.diff(bounces, axis=1) >= 0) and bounces[:, -1].min() >= 1


@claims("energy-conserving.md#1")
def _(r: Run) -> None:
    """BBI takes the loss with ``step(loss=loss)``: E₀ = L(θ₀) − v₀ + δE after one step."""
    opt, model0 = r.ns["opt"], r.fx.model0
    with torch.no_grad():
        loss0 = float(r.fx.loss_fn(model0(r.fx.x), r.fx.y))
    assert opt.step_count == 1
    assert opt.energy == pytest.approx(loss0 - 1e-6 + 1.0, rel=1e-6)


@claims("energy-conserving.md#2")
def _(r: Run) -> None:
    """``opt.event_log`` lists Firing(step, value, actions) once the loss reached a tenth of
    the first; from the firing step on the friction is 1.0."""
    from dynopt.events import Firing
    opt, model, loss_fn = r.ns["opt"], r.fx.model, r.fx.loss_fn
    assert r.out["opt.event_log"] == [] and opt.step_count == 2  # two batches: not yet
    for _ in range(2000):
        loss = loss_fn(model(r.fx.x_train), r.fx.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
        if opt.event_log:
            break
    (firing,) = opt.event_log
    assert isinstance(firing, Firing) and firing.step == opt.step_count - 1  # observed before
    with torch.no_grad():
        first_loss = float(r.fx.loss_fn(r.fx.model0(r.fx.x), r.fx.y))
    assert firing.value <= 0.1 * first_loss
    assert firing.actions == ("SetFriction(gamma=1)",)
    assert opt.global_state["gamma_override"] == 1.0


@claims("energy-conserving.md#3")
def _(r: Run) -> None:
    """A chain is in ``ending`` exactly when its end state is inside the ball (it stopped
    there); the other two examples build."""
    traj, c, r2 = r.ns["traj"], r.fx.c, r.fx.r2
    inside = ((traj.q[:, -1] - c) ** 2).sum(-1) < r2
    assert np.array_equal(np.flatnonzero(inside), sorted(r.ns["ending"]))
    assert set(r.ns["ending"].values()) <= {0}
    assert inside.sum() > 0
    assert len(r.ns["ev"]) == 1 and len(r.ns["opt"]._events) == 1


@claims("ddpnopt-surfing.md#0")
def _(r: Run) -> None:
    """terminal_hessian="cross-entropy" by default; each step uses the record of its batch
    (two batches: two steps, and the parameters moved)."""
    opt, model = r.ns["opt"], r.ns["model"]
    assert opt.trajectory.terminal_hessian == "cross-entropy"
    assert opt.step_count == 2
    assert [type(m).__name__ for m in model].count("Tanh") == 4


@claims("ddpnopt-surfing.md#1")
def _(r: Run) -> None:
    """θ₀ now, then every 75 optimizer steps (150 steps: 3 snapshots); ``res.x`` is one code
    of dimension 4 per target; one log row per snapshot."""
    rec, res = r.ns["rec"], r.ns["res"]
    assert rec.steps == [0, 75, 150]
    assert res.x.shape == (3, 4)
    assert len(res.log) == 3
    x, loss, _, work = r.out["res.x, res.loss[-1], res.log, res.work"]
    assert x is res.x and np.all(np.isfinite(loss)) and np.all(np.isfinite(work))


# --- the tests --------------------------------------------------------------------------------

def _gloo_world(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment for ``init_process_group`` in a one-rank world on this process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
                       "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)


def _run_and_check(block: Block, full: bool, monkeypatch: pytest.MonkeyPatch,
                   tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    distributed = "init_process_group" in block.code
    if distributed:
        _gloo_world(monkeypatch)
    try:
        run = run_block(block, full)
        CLAIMS[block.id](run)
    finally:
        if distributed:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block(block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
               one_thread: None) -> None:
    _run_and_check(block, False, monkeypatch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("block_id", sorted(SMALL))
def test_block_full_size(block_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                         one_thread: None) -> None:
    _run_and_check(BY_ID[block_id], True, monkeypatch, tmp_path)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_fragment_names_are_fixtures(block: Block) -> None:
    """A fragment reads only names it defines or imports, builtins, and fixtures."""
    unknown = free_names(block.code) - fixture_names(fixtures_for(block))
    assert not unknown, (f"docs/{block.page} line {block.line}: {sorted(unknown)} are neither "
                         "defined, imported, nor fixtures of tests/test_docs_snippets.py")


def test_every_block_has_claims() -> None:
    """Each block has its claims, and every table names blocks that exist."""
    ids = {b.id for b in BLOCKS}
    assert set(CLAIMS) == ids
    assert set(SMALL) <= ids and set(FILL) <= ids
    assert {k for k in FIXTURES_FOR if "#" in k} <= ids
    assert {k for k in FIXTURES_FOR if "#" not in k} <= {b.page for b in BLOCKS}
    assert len(BLOCKS) >= 20  # the fence pattern still finds the blocks
