"""Per-chain noise streams (``chain_ids=``, torch backend) across a continued run and a divergence
replay. A line-coverage run showed that no test continued a ``chain_ids`` run from its
``final_state`` (``ChainStreams.copy``) or made one diverge (the replay restores the streams with
``ChainStreams.set_state``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt import systems
from dynopt.errors import DivergenceError

KW = {"h": 0.05, "seed": 3, "backend": "torch", "record_every": 1}


def test_a_chain_ids_run_continued_from_its_final_state_is_the_long_run():
    """10 steps = 4 steps + 6 from ``final_state``, bit for bit; continuing twice from the same
    state gives the same result (the continued run draws from a copy of the streams). Catches:
    a copy sharing the generators (the second continuation then differs), or streams reseeded
    on continuation."""
    s = systems.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.25)
    q0 = [0.5, 0.1]
    full = dynopt.integrate(s, "BAOAB", q0, n_steps=10, n_chains=2, chain_ids=[3, 5], **KW)
    head = dynopt.integrate(s, "BAOAB", q0, n_steps=4, n_chains=2, chain_ids=[3, 5], **KW)
    tails = [dynopt.integrate(s, "BAOAB", None, state=head.final_state, n_steps=6, h=0.05,
                              record_every=1) for _ in range(2)]
    for tail in tails:
        np.testing.assert_array_equal(tail.q[:, -1], full.q[:, -1])
        np.testing.assert_array_equal(tail.p[:, -1], full.p[:, -1])
    np.testing.assert_array_equal(head.q[:, -1], full.q[:, 4])
    assert not np.array_equal(full.q[0, -1], full.q[1, -1])  # the chains' noises differ


def test_a_diverging_chain_ids_run_names_the_first_non_finite_step():
    """Langevin on a harmonic well just past BAOAB's stability limit (ωh = 2.001) in float32:
    the growth is slow enough that the noise decides the overflow step. The run raises at step
    k; k − 1 steps are finite and k steps raise at k. Catches: the replay that locates the step
    not restoring the per-chain streams (it then replays other noise: k is off by one and the
    k − 1 run finds a chunk that 'replayed finite')."""
    s = systems.Langevin(P.Harmonic(omega=1.0), gamma=0.1, temperature=1.0)
    kw = {"h": 2.001, "seed": 3, "backend": "torch", "dtype": torch.float32, "n_chains": 2,
          "chain_ids": [3, 5]}

    def diverges_at(n: int) -> tuple[int, int, bool] | None:
        """(step, chain, whether it is U that was not finite); U is checked at the record
        step n only and overflows float32 (q²/2) long before q does."""
        try:
            dynopt.integrate(s, "BAOAB", [0.5], n_steps=n, record_every=n, **kw)
        except DivergenceError as err:
            return err.step, err.chain, "potential energy" in str(err)
        return None

    first = diverges_at(20_000)
    assert first is not None
    k, _chain, by_potential = first
    assert 1000 < k < 20_000 and not by_potential  # no record step before k: the state's check
    before = diverges_at(k - 1)  # the state is finite at k − 1 (its U may not be)
    assert before is None or (before[0] == k - 1 and before[2])
    assert diverges_at(k)[0] == k


@pytest.mark.parametrize("chain_ids", [[0, 1], [7, 2]])
def test_chain_ids_select_the_streams_of_those_chains(chain_ids):
    """Chain c of a run with ``chain_ids`` is chain c of a run over more chains that contains it
    at that position: the streams depend on the id only."""
    s = systems.Langevin(P.DoubleWell(), gamma=1.0, temperature=0.25)
    wide = dynopt.integrate(s, "BAOAB", [0.5], n_steps=5, n_chains=8, chain_ids=list(range(8)),
                            **KW)
    some = dynopt.integrate(s, "BAOAB", [0.5], n_steps=5, n_chains=2, chain_ids=chain_ids, **KW)
    np.testing.assert_array_equal(some.q, wide.q[chain_ids])
