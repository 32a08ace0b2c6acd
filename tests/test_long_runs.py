"""Long runs in kernel calls of bounded work: Ctrl-C is seen within a call, whatever the record
interval, and the split changes no result.

integrate() ran a whole record interval per kernel call (calls of CHUNK_WORK chain-steps rounded
*up* to a multiple of record_every), and the numba kernel does not look at signals: with
``record_every=10**9`` Ctrl-C waited for the interval's end. Calls are now at most CHUNK_WORK
chain-steps (and shrink when slow); a call that ends a record interval it did not start records
its end alone. These tests force tiny calls and compare with the default split bit for bit.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.backends.numba.runner import NumbaBackend
from dynopt.backends.torch.runner import TorchBackend

integrate_module = importlib.import_module("dynopt.integrate")  # (dynopt.integrate: the function)

CASES = [
    ("langevin", lambda: S.Langevin(P.DoubleWell(2), gamma=1.0, temperature=0.5), "BAOAB"),
    ("nose-hoover chain", lambda: S.NoseHooverChain(P.Harmonic(dim=2), temperature=0.5), None),
    ("adaptive langevin", lambda: S.AdaptiveLangevin(P.DoubleWell(2), temperature=0.5), None),
    ("overdamped LM", lambda: S.OverdampedLangevin(P.DoubleWell(2), temperature=0.5), "lm"),
]


def _run(system, scheme, backend, **kw):
    return dynopt.integrate(system, scheme, [0.3, -0.2], h=0.05, n_steps=53, n_chains=5,
                            record_every=7, seed=11, backend=backend, progress=False, **kw)


def _same(a, b):
    np.testing.assert_array_equal(a.q, b.q)
    if a.p is not None:
        np.testing.assert_array_equal(a.p, b.p)
    assert a.extras.keys() == b.extras.keys()
    for key in a.extras:
        np.testing.assert_array_equal(a.extras[key], b.extras[key], err_msg=key)
    np.testing.assert_array_equal(a.t, b.t)
    fa, fb = a.final_state, b.final_state
    assert fa.step == fb.step == 53
    for name in ("q", "p", "x"):
        np.testing.assert_array_equal(np.asarray(getattr(fa, name)),
                                      np.asarray(getattr(fb, name)), err_msg=name)
    if fa.generator is not None:  # the torch stream continues exactly across calls
        assert torch.equal(fa.generator.get_state(), fb.generator.get_state())


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize(("label", "make", "scheme"), CASES, ids=[c[0] for c in CASES])
def test_tiny_calls_give_the_run_of_one_call_bit_for_bit(monkeypatch, backend, label, make,
                                                        scheme):
    system = make()
    whole = _run(system, scheme, backend)  # default: the 53 steps in one call
    monkeypatch.setattr(integrate_module, "CHUNK_WORK", 15)  # 3 steps a call (5 chains)
    split = _run(system, scheme, backend)  # calls of 3 inside the intervals of 7
    _same(whole, split)
    monkeypatch.setattr(integrate_module, "CHUNK_SECONDS", 0.0)  # every call "slow": 1 step
    _same(whole, _run(system, scheme, backend))


def _call_sizes(monkeypatch, backend_cls):
    sizes: list[int] = []
    real = backend_cls.advance

    def advance(self, system, program, state, n_steps, records):
        sizes.append(n_steps)
        return real(self, system, program, state, n_steps, records)

    monkeypatch.setattr(backend_cls, "advance", advance)
    return sizes


@pytest.mark.parametrize(("backend", "cls"), [("numba", NumbaBackend), ("torch", TorchBackend)])
def test_a_long_record_interval_runs_in_calls_of_bounded_work(monkeypatch, backend, cls):
    """record_every=1000 ran as calls of 1000 steps whatever CHUNK_WORK (so 10**9 as one call
    of 10**9 steps); now no call exceeds CHUNK_WORK chain-steps and the records are the same."""
    system = S.Langevin(P.Harmonic(1), gamma=1.0, temperature=0.5)
    kw = dict(h=0.1, n_steps=2500, n_chains=4, record_every=1000, seed=2, backend=backend,
              progress=False)
    whole = dynopt.integrate(system, "BAOAB", [0.0], **kw)
    monkeypatch.setattr(integrate_module, "CHUNK_WORK", 400)  # 100 steps a call of 4 chains
    sizes = _call_sizes(monkeypatch, cls)
    split = dynopt.integrate(system, "BAOAB", [0.0], **kw)
    assert sum(sizes) == 2500 and max(sizes) == 100
    np.testing.assert_array_equal(split.q, whole.q)
    np.testing.assert_array_equal(split.extras["potential"], whole.extras["potential"])
    assert split.n_draws == 3


def test_stepping_run_is_split_the_same_way(monkeypatch):
    system = S.Langevin(P.DoubleWell(1), gamma=1.0, temperature=0.5)
    state = dynopt.stepping.init(system, dynopt.integrators.resolve("BAOAB"), [0.5],
                                 n_chains=4, seed=5)
    integ = dynopt.integrators.resolve("BAOAB")
    whole = dynopt.stepping.run(system, integ, state, n_steps=300, h=0.05)
    monkeypatch.setattr(integrate_module, "CHUNK_WORK", 400)  # 100 steps a call of 4 chains
    sizes = _call_sizes(monkeypatch, NumbaBackend)
    split = dynopt.stepping.run(system, integ, state, n_steps=300, h=0.05)
    assert sizes == [100] * 3
    np.testing.assert_array_equal(split.q, whole.q)
    np.testing.assert_array_equal(split.p, whole.p)
    assert split.step == whole.step == 300


def test_divergence_in_a_split_interval_names_the_same_step(monkeypatch):
    """A divergence inside a call that records nothing (leapfrog at h = 2.5 > 2 on a harmonic
    well grows 4x a step: q overflows near step 510): same step, chain and kept records."""
    system = S.Hamiltonian(P.Harmonic(1))
    kw = dict(h=2.5, n_steps=700, n_chains=4, record_every=600, p0=[[1.0], [2.0], [3.0], [4.0]],
              seed=0, progress=False)
    with pytest.raises(dynopt.errors.DivergenceError) as one:
        dynopt.integrate(system, "leapfrog", [0.0], **kw)
    monkeypatch.setattr(integrate_module, "CHUNK_WORK", 28)  # 7 steps a call
    with pytest.raises(dynopt.errors.DivergenceError) as split:
        dynopt.integrate(system, "leapfrog", [0.0], **kw)
    assert (split.value.step, split.value.chain) == (one.value.step, one.value.chain)
    assert 1 < one.value.step < 600 and "non-finite state" in str(one.value)
    np.testing.assert_array_equal(split.value.trajectory.q, one.value.trajectory.q)


_INTERRUPT = textwrap.dedent("""
    import os, signal, threading
    import dynopt
    from dynopt.errors import Interrupted

    system = dynopt.systems.Langevin(dynopt.potentials.DoubleWell(1), gamma=1.0,
                                     temperature=0.5)
    kw = dict(h=0.05, n_chains=4, seed=0, progress=False)
    dynopt.integrate(system, "BAOAB", [0.25], n_steps=1, **kw)  # loads the kernel
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:  # one record interval of 10**14 steps: days in one kernel call
        dynopt.integrate(system, "BAOAB", [0.25], n_steps=10**15, record_every=10**14, **kw)
    except Interrupted as err:
        t = err.trajectory
        print("INTERRUPTED", t.n_draws, t.q[:, 0, 0].tolist(), t.final_state is None)
""")


def test_ctrl_c_stops_a_run_with_a_huge_record_interval(tmp_path):
    """SIGINT half a second into a run whose one record interval is 10**14 steps: it stops
    with Interrupted and the initial record (before: it ran on inside one kernel call)."""
    root = Path(dynopt.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))
    script = tmp_path / "interrupt.py"
    script.write_text(_INTERRUPT)
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             env=env, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("integrate() did not stop on SIGINT (one kernel call per record interval)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "INTERRUPTED 1 [0.25, 0.25, 0.25, 0.25] True"


def test_per_chain_streams_continue_across_calls(monkeypatch):
    """chain_ids= (one torch generator per chain): tiny calls give the run of one call."""
    system = S.Langevin(P.DoubleWell(2), gamma=1.0, temperature=0.5)
    whole = _run(system, "BAOAB", "torch", chain_ids=[3, 1, 4, 7, 9])
    monkeypatch.setattr(integrate_module, "CHUNK_WORK", 15)
    split = _run(system, "BAOAB", "torch", chain_ids=[3, 1, 4, 7, 9])
    np.testing.assert_array_equal(split.q, whole.q)
    np.testing.assert_array_equal(split.p, whole.p)
