"""Device handling that a CPU machine can check: checkpoints moved between devices, the device a
torch-backend run defaults to, and surfing's device.

No GPU is needed: a GPU checkpoint is crafted on the CPU (a generator state under a ``"cuda:0"``
key), and the load path's choice of devices is observed with a CPU generator that records the
device it was asked for. The few tests that need CUDA skip without it.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.backends.torch.runner import TorchBackend
from dynopt.optim import Langevin
from dynopt.optim import checkpoint as ckpt_mod
from dynopt.optim.checkpoint import cuda_key_map
from dynopt.surfing import surf

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _dev(name: str) -> torch.device:
    return torch.device(name)


# --- which saved CUDA generator goes to which device ---------------------------------------------
@pytest.mark.parametrize(("saved", "devices", "expected"), [
    # DDP: rank 0's checkpoint, loaded by the rank whose parameters are on cuda:1
    (["cuda:0"], {"cuda:1"}, {"cuda:0": "cuda:1"}),
    (["cpu", "cuda:0"], {"cpu", "cuda:3"}, {"cuda:0": "cuda:3"}),
    # several devices per rank: in index order
    (["cuda:1", "cuda:0"], {"cuda:2", "cuda:3"}, {"cuda:0": "cuda:2", "cuda:1": "cuda:3"}),
    # same devices: nothing moves
    (["cuda:0"], {"cuda:0"}, {}),
    (["cuda:1", "cuda:0"], {"cuda:0", "cuda:1"}, {}),
    # not one to one: nothing moves (a topology change, not a rank's view of the same run)
    (["cuda:0"], {"cuda:0", "cuda:1"}, {}),
    (["cuda:0", "cuda:1"], {"cuda:2"}, {}),
    # no CUDA on one side
    (["cuda:0"], {"cpu"}, {}),
    (["cpu"], {"cuda:1"}, {}),
    ([], {"cuda:1"}, {}),
])
def test_cuda_key_map_maps_cuda_states_one_to_one_onto_the_parameters_devices(saved, devices,
                                                                           expected):
    """Catches: a remapping that is not one to one, moves CPU keys, or moves keys that match."""
    assert cuda_key_map(saved, {_dev(d) for d in devices}) == expected


class _RecordingGenerator(torch.Generator):
    """A CPU generator created as if on ``device``, recording that device: shows, on a CPU
    machine, on which devices ``load_state_dict`` creates generators."""

    made: list[str] = []

    def __new__(cls, device: str = "cpu") -> _RecordingGenerator:
        return super().__new__(cls, device="cpu")

    def __init__(self, device: str = "cpu") -> None:
        type(self).made.append(str(device))


def _trained(steps: int = 3, theta: torch.Tensor | None = None) -> tuple[torch.Tensor, Langevin]:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(40) if theta is None else theta.clone())
    opt = Langevin([p], lr=0.1, gamma=1.0, temperature=1.0, seed=7, foreach=True)
    _steps(p, opt, range(steps))
    return p, opt


def _steps(p: torch.Tensor, opt: Langevin, ks: range) -> None:
    for k in ks:
        g = torch.Generator().manual_seed(100 + k)
        p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def _roundtrip(sd: dict) -> dict:
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True, map_location="cpu")


def test_a_ddp_rank_restores_rank_0s_cuda_generator_on_its_own_gpu(monkeypatch):
    """Catches: rank 1 loading rank 0's ``"cuda:0"`` generator under its saved key, creating it
    on GPU 0 and then drawing from a fresh ``"cuda:1"`` generator seeded from ``seed`` (its
    noise restarted while rank 0's continued: the replicas parted)."""
    _, opt = _trained()
    sd = opt.state_dict()
    state = sd["dynopt"]["generators"].pop("cpu")
    sd["dynopt"]["generators"]["cuda:0"] = state  # what rank 0 saves on a GPU
    sd = _roundtrip(sd)
    _, rank1 = _trained(steps=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(ckpt_mod, "_param_devices", lambda opt: {torch.device("cuda", 1)})
    monkeypatch.setattr(torch, "Generator", _RecordingGenerator)
    _RecordingGenerator.made = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rank1.load_state_dict(sd)
    assert _RecordingGenerator.made == ["cuda:1"]  # GPU 0 never touched from rank 1
    assert list(rank1._generators) == ["cuda:1"]
    assert torch.equal(rank1._generators["cuda:1"].get_state(), state)


def test_a_gpu_checkpoint_loads_on_a_cpu_only_machine_without_its_generator(monkeypatch):
    """Catches: ``torch.Generator(device="cuda:0")`` failing on a CPU-only machine, reported as
    "not a valid generator state", so a GPU checkpoint could not be loaded at all."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p, opt = _trained()
    sd = opt.state_dict()
    sd["dynopt"]["generators"] = {"cuda:0": sd["dynopt"]["generators"].pop("cpu")}
    sd = _roundtrip(sd)
    q, loaded = _trained(steps=0, theta=p.detach())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded.load_state_dict(sd)
    assert [(w.category, "['cuda:0']" in str(w.message)) for w in caught] == [
        (RuntimeWarning, True)]
    assert loaded._generators == {}
    assert loaded.step_count == 3
    saved_momentum = sd["state"][0]["momentum_buffer"]
    assert torch.equal(loaded.state[q]["momentum_buffer"], saved_momentum)
    # the rest continues; the noise restarts from the seed: a checkpoint without generators
    r, ref = _trained(steps=0, theta=p.detach())
    plain = copy.deepcopy(sd)  # (torch loads tensors of the right device and dtype uncopied)
    plain["dynopt"]["generators"] = {}
    ref.load_state_dict(plain)
    _steps(q, loaded, range(3, 6))
    _steps(r, ref, range(3, 6))
    assert torch.equal(q.detach(), r.detach())


def test_a_refused_gpu_checkpoint_warns_about_nothing(monkeypatch):
    """Catches: the dropped-generator warning emitted for a checkpoint that is then refused."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, opt = _trained()
    sd = copy.deepcopy(opt.state_dict())
    sd["dynopt"]["generators"] = {"cuda:0": sd["dynopt"]["generators"].pop("cpu")}
    sd["param_groups"][0]["lr"] = -1.0
    _, fresh = _trained(steps=0)
    before = copy.deepcopy(fresh.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="lr"):
            fresh.load_state_dict(sd)
    assert caught == []
    assert fresh.state_dict()["param_groups"] == before["param_groups"]


# --- integrate(): the device a torch-backend run defaults to -------------------------------------
def _system() -> S.Langevin:
    return S.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.5)


def _spy_devices(monkeypatch) -> list:
    seen: list = []
    init_state = TorchBackend.init_state

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["device"])
        return init_state(self, *args, **kwargs)

    monkeypatch.setattr(TorchBackend, "init_state", spy)
    return seen


def test_a_torch_q0_sets_the_default_device_of_a_torch_run(monkeypatch):
    """Catches: ``integrate(q0=<CUDA tensor>, backend="torch")`` without ``device=`` running on
    the CPU (the backend was told ``device=None``, i.e. the CPU, whatever q0's device)."""
    seen = _spy_devices(monkeypatch)
    q0 = torch.tensor([0.1, 0.2], dtype=torch.float32)
    traj = dynopt.integrate(_system(), "BAOAB", q0, h=0.05, n_steps=3, seed=0, backend="torch")
    assert seen == [q0.device]
    assert traj.final_state.q.dtype == torch.float64  # the documented dtype default stays
    dynopt.integrate(_system(), "BAOAB", q0, h=0.05, n_steps=3, seed=0, backend="torch",
                     device="cpu")
    dynopt.integrate(_system(), "BAOAB", [0.1, 0.2], h=0.05, n_steps=3, seed=0, backend="torch")
    dynopt.integrators.BAOAB().init(_system(), q0, seed=0, backend="torch")
    assert seen == [q0.device, "cpu", None, q0.device]


@CUDA
def test_a_cuda_q0_runs_on_its_gpu():
    q0 = torch.tensor([0.1, 0.2], device="cuda")
    kw = dict(h=0.05, n_steps=20, seed=0, backend="torch")
    traj = dynopt.integrate(_system(), "BAOAB", q0, **kw)
    ref = dynopt.integrate(_system(), "BAOAB", q0.cpu(), device=q0.device, **kw)
    assert traj.final_state.q.device == q0.device
    assert torch.equal(traj.final_state.q, ref.final_state.q)


# --- surf(): on the snapshots' device ------------------------------------------------------------
def _snapshots() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(),
                                torch.nn.Linear(5, 3)).double() for _ in range(2)]


def test_surf_refuses_snapshots_on_several_devices_naming_them():
    """Catches: snapshots on different devices failing inside the first evaluation with "the
    first snapshot cannot be evaluated on x0" (a shape message for a device problem)."""
    snaps = _snapshots()
    snaps[1] = snaps[1].to("meta")
    with pytest.raises(ValueError, match=r"several devices \['cpu', 'meta'\]"):
        surf(snaps, torch.zeros(3, dtype=torch.float64), x0=torch.zeros(2, dtype=torch.float64))


@CUDA
def test_surf_runs_on_the_snapshots_gpu():
    snaps = _snapshots()
    y = torch.randn(3, dtype=torch.float64)
    kw = dict(x0=torch.zeros(2, dtype=torch.float64), steps_per_snapshot=5, lr=0.1)
    ref = surf(copy.deepcopy(snaps), y, **kw)
    res = surf([s.cuda() for s in snaps], y, **kw)
    assert res.x.device.type == "cuda"
    torch.testing.assert_close(res.x.cpu(), ref.x, rtol=1e-10, atol=1e-12)
