"""Replicas split across torch.distributed ranks reproduce the one-process study bit for bit."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F

import dynopt
from dynopt.replicas import chain_block, integrate_distributed

N_CHAINS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _study(run):
    """Langevin on a minibatched MLP loss with every kind of observable; ``run`` integrates."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 2, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :1])
    U = dynopt.potentials.NetworkLoss(net, F.mse_loss, (x, y), weight_decay=0.1, batch_size=8,
                                      seed=2)
    sys = dynopt.systems.Langevin(U, gamma=1.0, temperature=0.01)
    theta0 = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    q0 = theta0 + 0.1 * torch.randn(N_CHAINS, U.dim, generator=g, dtype=torch.float64)
    obs = ["theta", "loss", "layer_kinetic", "layer_configurational", "projections"]
    return run(sys, q0, dict(h=0.05, n_steps=30, seed=9, record_every=3, observables=obs))


def _arrays(traj):
    return {"q": traj.q, "energy": traj.energy, **{f"x/{k}": v for k, v in traj.extras.items()}}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    traj = _study(lambda sys, q0, kw: integrate_distributed(sys, "BAOAB", q0, n_chains=N_CHAINS,
                                                            **kw))
    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **_arrays(traj))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter teardown (gloo threads), as in test_optim_ddp


def test_chain_blocks_cover_the_chains_once():
    blocks = [chain_block(7, r, 3) for r in range(3)]
    assert [list(b) for b in blocks] == [[0, 1, 2], [3, 4], [5, 6]]
    with pytest.raises(ValueError, match="rank must be < world"):
        chain_block(7, 3, 3)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def _failing_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Chain 3 (rank 1's block) overflows: rank 1 raises its DivergenceError, rank 0 a
    RuntimeError naming rank 1, at once (rank 0 used to wait in the gather until the process
    group's timeout, 30 min by default)."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    sys = dynopt.systems.Langevin(dynopt.potentials.DoubleWell(1), gamma=1.0, temperature=0.1)
    q0 = np.array([[1.0], [0.5], [-1.0], [1e100]])
    try:
        integrate_distributed(sys, "BAOAB", q0, n_chains=4, h=0.1, n_steps=10, seed=1)
        outcome = "finished"
    except Exception as e:
        outcome = f"{type(e).__name__}: {e}"
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(outcome)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def test_an_error_on_one_rank_reaches_every_rank(tmp_path):
    mp.spawn(_failing_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = (tmp_path / "rank0.txt").read_text()
    r1 = (tmp_path / "rank1.txt").read_text()
    assert r1.startswith("DivergenceError") and "chain" in r1
    assert r0.startswith("RuntimeError: integrate_distributed: rank 1 failed (DivergenceError")


def test_two_gloo_ranks_equal_one_process_bit_for_bit(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = _study(lambda sys, q0, kw: dynopt.integrate(sys, "BAOAB", q0,
                                                          chain_ids=range(N_CHAINS), **kw))
    finally:
        torch.set_num_threads(threads)
    want = _arrays(ref)
    assert want["q"].shape == (N_CHAINS, 11, 25)
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert sorted(got.files) == sorted(want)
        for key, val in want.items():
            np.testing.assert_array_equal(got[key], val, err_msg=key)
    # and the chains differ from each other (per-chain noise, different starts)
    assert not np.array_equal(want["q"][0, -1], want["q"][1, -1])


def test_chain_streams_of_one_run_never_share_a_generator_seed():
    """torch's CPU generator keeps 32 bits of its seed: 32 bits of a hash of (seed, c) gave
    chains 45493 and 106516 of seed 1 the same noise (collision odds ≈ n²/2³³). Chain seeds are
    now a bijection of c mod 2³²: 200,000 chains, 200,000 distinct seeds; the colliding pair
    now draws different paths."""
    import numpy as np

    import dynopt
    from dynopt import potentials as P
    from dynopt.backends.torch.streams import chain_seed
    from dynopt.systems import Langevin

    cpu = torch.device("cpu")
    seeds = {chain_seed(1, c, cpu) for c in range(200_000)}
    assert len(seeds) == 200_000 and max(seeds) < 1 << 32
    assert chain_seed(1, 5, cpu) != chain_seed(2, 5, cpu)
    tr = dynopt.integrate(Langevin(P.Harmonic(dim=2)), "BAOAB", [0.0, 0.0], h=0.1, n_steps=20,
                          seed=1, backend="torch", chain_ids=[45493, 106516, 7])
    assert np.abs(tr.q[0] - tr.q[1]).max() > 0.1
    again = dynopt.integrate(Langevin(P.Harmonic(dim=2)), "BAOAB", [0.0, 0.0], h=0.1,
                             n_steps=20, seed=1, backend="torch", chain_ids=[106516])
    np.testing.assert_array_equal(again.q[0], tr.q[1])  # a chain's path is its own


def test_chain_ids_are_read_once_and_must_be_integers():
    """A generator was consumed by counting and then seen empty; 2.5 and "1" were truncated
    or parsed; with a 1-D q0 the ids' count escaped the memory check."""
    import sys as _sys

    from dynopt import potentials as P
    from dynopt.systems import Langevin

    sys = Langevin(P.Harmonic(dim=2))
    tr = dynopt.integrate(sys, "BAOAB", [0.0, 0.0], h=0.1, n_steps=3, seed=1, backend="torch",
                          chain_ids=(c for c in (4, 7, 9)))
    assert tr.q.shape[0] == 3
    for bad in ([0.2, 1.9, 2.5], ["0", "1"], [True, False]):
        with pytest.raises(TypeError, match="chain_ids must be a sequence of ints"):
            dynopt.integrate(sys, "BAOAB", [0.0, 0.0], h=0.1, n_steps=3, seed=1,
                             backend="torch", chain_ids=bad)
    integrate_module = _sys.modules["dynopt.integrate"]
    limit = integrate_module.MAX_RECORD_BYTES
    integrate_module.MAX_RECORD_BYTES = 1 << 20
    try:
        with pytest.raises(ValueError, match="n_chains=100 x 1001 records"):
            dynopt.integrate(sys, "BAOAB", [0.0, 0.0], h=0.1, n_steps=1000, seed=1,
                             backend="torch", chain_ids=range(100))
    finally:
        integrate_module.MAX_RECORD_BYTES = limit
