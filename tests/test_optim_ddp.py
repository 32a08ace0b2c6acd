"""Under DistributedDataParallel every rank must keep identical parameters: the optimizers' noise
is seeded identically on all ranks and never depends on the rank, and the loss that the energy
optimizers and the events read is averaged over the ranks (each rank saw its own batch's loss:
brakes fired at different steps, BBI's energy differed, and the replicas drifted apart)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from dynopt.events import LossBelow, SetFriction
    from dynopt.optim import BBI, AdLaLa, HeavyBall, Langevin

    results = {}
    for name, seed in (("adlala", 5), ("adlala_other_seed", 6), ("langevin_seed_none", None),
                       ("heavyball_brake", 1), ("bbi", 2)):
        torch.manual_seed(0)  # same initial weights on every rank
        net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        model = torch.nn.parallel.DistributedDataParallel(net)
        if name.startswith("adlala"):
            opt = AdLaLa([{"params": net[0].parameters()}, {"params": net[2].parameters()}],
                         lr=0.1, temperature=1e-2, seed=seed)
        elif name == "heavyball_brake":
            opt = HeavyBall(net.parameters(), lr=0.1, gamma=0.5, seed=seed,
                            events=[LossBelow(0.9, then=SetFriction(3.0))])
        elif name == "bbi":
            opt = BBI(net.parameters(), lr=0.05, seed=seed, t0=None, t1=None)
        else:
            opt = Langevin(net.parameters(), lr=0.1, temperature=1e-2, seed=seed)
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own minibatches
        losses = []
        for _ in range(12):
            x, y = torch.randn(8, 2, generator=g), torch.randn(8, 1, generator=g)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            losses.append(float(loss.detach()))
            opt.step(loss=loss) if opt.uses_loss else opt.step()
        results[name] = torch.cat([p.detach().flatten() for p in net.parameters()])
        if name == "heavyball_brake":
            results["brake_steps"] = torch.tensor([f.step for f in opt.event_log] or [-1])
            results["brake_values"] = torch.tensor([f.value for f in opt.event_log] or [-1.0],
                                                   dtype=torch.float64)
            results["losses"] = torch.tensor(losses, dtype=torch.float64)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    # skip interpreter teardown: gloo's threads occasionally abort there ("terminate called
    # without an active exception"), after the results are safely written
    os._exit(0)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_ranks_keep_identical_parameters(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in r0:
        if name != "losses":  # each rank's own minibatch losses
            assert torch.equal(r0[name], r1[name]), name
    assert not torch.allclose(r0["adlala"], r0["adlala_other_seed"])
    assert int(r0["brake_steps"][0]) >= 1  # the brake fired, on the same step on both ranks
    # the loss the event read is the mean of the ranks' losses at that step (not their sum,
    # not one rank's own)
    mean = (r0["losses"] + r1["losses"]) / 2
    k = int(r0["brake_steps"][0])
    assert float(r0["brake_values"][0]) == pytest.approx(float(mean[k]), rel=1e-12)
