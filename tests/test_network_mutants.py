"""Network-loss and replica properties that one-line bugs would break (found by mutation
testing: each test here failed on a realistic mutant that the rest of the suite let through)."""

from __future__ import annotations

import pytest
import torch

from dynopt.potentials.minibatch import BatchSchedule


def test_every_epoch_is_a_fresh_permutation():
    # minibatch module docstring: epoch e is a permutation perm_e drawn from a generator seeded
    # with a hash of (seed, e), "each epoch is a fresh permutation". With n = 20 two epochs
    # drawing the same order has probability 1/20! ≈ 4e-19.
    s = BatchSchedule(20, 5, seed=3)
    perms = [s.permutation(e).clone() for e in range(4)]
    for p in perms:
        assert sorted(p.tolist()) == list(range(20))
    assert len({tuple(p.tolist()) for p in perms}) == 4
    # so the batches of consecutive epochs are not the same batches again
    assert not torch.equal(torch.stack([s.indices(k) for k in range(4)]),
                           torch.stack([s.indices(k) for k in range(4, 8)]))
    # and the order of epoch e is a pure function of (seed, e): a fresh schedule, epoch 2 first
    assert torch.equal(BatchSchedule(20, 5, seed=3).permutation(2), perms[2])


def test_hutchinson_probes_are_independent_per_chain_and_keyed_by_chain_id():
    # LayerConfigurational.rademacher: chain c's ±1 probes come from a generator keyed
    # (seed, step, c), by the global chain id (Context docstring), so chains get different
    # probes (independent estimates: their spread is what the standard error sees) and a
    # chain's probes do not depend on which other chains share the batch.
    from types import SimpleNamespace

    from dynopt.observables import LayerConfigurational
    from dynopt.observables.base import Context

    obs = LayerConfigurational(probes=3, seed=5)
    state = SimpleNamespace(q=torch.zeros(4, 8, dtype=torch.float64))
    z = obs.rademacher(Context(state, None, step=7, chain_ids=[0, 1, 2, 3]))
    assert z.shape == (4, 3, 8) and z.dtype == torch.float64
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(row.flatten().tolist()) for row in z}) == 4
    one = obs.rademacher(Context(SimpleNamespace(q=state.q[2:3]), None, step=7, chain_ids=[2]))
    assert torch.equal(one[0], z[2])
    # a new record draws new probes
    assert not torch.equal(obs.rademacher(Context(state, None, step=8, chain_ids=[0, 1, 2, 3])),
                           z)


def test_evaluation_k_uses_batch_k_mod_b_of_epoch_k_div_b():
    # minibatch module docstring: evaluation k uses batch s = k mod B of epoch e = k div B,
    # B = ⌊n/b⌋, the examples perm_e[s·b:(s+1)·b]. Here b = 4 ≠ B = 2 (n = 10, remainder 2).
    s = BatchSchedule(10, 4, seed=1)
    assert s.n_batches == 2
    for k in range(8):
        e, slot = divmod(k, 2)
        assert torch.equal(s.indices(k), s.permutation(e)[4 * slot:4 * slot + 4])
    assert [len(s.indices(k)) for k in range(8)] == [4] * 8


def test_distributed_run_refuses_per_chain_rows_that_do_not_match_n_chains():
    # integrate_distributed splits the rows of q0/p0 like the chains: a row count other than
    # n_chains is refused by name (not silently cut to the first n_chains rows)
    import numpy as np

    import dynopt
    from dynopt.replicas import integrate_distributed

    sys = dynopt.systems.Langevin(dynopt.potentials.DoubleWell(1), gamma=1.0, temperature=0.1)
    q0 = np.zeros((5, 1))
    with pytest.raises(ValueError, match="q0 has 5 rows but n_chains=4"):
        integrate_distributed(sys, "BAOAB", q0, n_chains=4, h=0.1, n_steps=2, seed=1)
    with pytest.raises(ValueError, match="p0 has 5 rows but n_chains=4"):
        integrate_distributed(sys, "BAOAB", q0[:4], n_chains=4, h=0.1, n_steps=2, seed=1,
                              p0=q0)
