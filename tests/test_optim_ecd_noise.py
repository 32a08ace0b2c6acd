"""ECDSep's rotation noise on CPU: Philox normals keyed by (seed, stream, step, position).

The normals are checked against the Philox reference (:func:`normals_for`) element by element,
for their distribution, for independence across steps and elements, and for what a
counter-based draw promises: the same numbers on both paths, for any numba thread count, after a
resume from a checkpoint without generator state, in copies and on every DDP rank.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
import os
import socket

import numba
import numpy as np
import pytest
import torch

from dynopt.backends.numba.fill_tensor import BLOCK, fill_normals
from dynopt.backends.numba.philox import GAUSSIAN, normals_for
from dynopt.errors import DivergenceError
from dynopt.optim import ECDSep
from dynopt.optim.ecd_sep import ROTATION_STREAM


def _params(sizes, dtypes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64).to(dt))
            for n, dt in zip(sizes, dtypes, strict=True)]


def _grads(ps, k):
    """Fixed, step-dependent gradients (so the steps differ)."""
    for i, p in enumerate(ps):
        p.grad = (0.3 * p.detach() + 0.01 * math.sin(k + i)).to(p.dtype)


def _recorded(opt):
    """Record the normals of every rotation (copies, in the order of the momenta)."""
    rec = []
    draw = opt._normals

    def spy(moms):
        zs = draw(moms)
        rec.append([z.detach().clone() for z in zs])
        return zs

    opt._normals = spy
    return rec


def _run(ps, n, opt=None, start=0, **kw):
    opt = opt or ECDSep(ps, lr=0.05, nu=0.3, seed=kw.pop("seed", 11), **kw)
    rec = _recorded(opt)
    for k in range(start, start + n):
        _grads(ps, k)
        opt.step(loss=1.0 + sum(float((p.detach().double() ** 2).sum()) for p in ps))
    del opt._normals
    return opt, rec


def _reference(seed, step, sizes):
    """The documented layout (dynopt.backends.numba.fill_tensor), in numpy: element
    b0 + r·K + j of a block takes word r of call call0 + b0/4 + j, from normals_for."""
    total_calls = sum((n + 3) // 4 for n in sizes)
    words = normals_for(seed, total_calls, 4, stream=ROTATION_STREAM, kind=GAUSSIAN,
                        first=4 * step)
    out, call0 = [], 0
    for n in sizes:
        e = np.arange(n)
        b0 = e // BLOCK * BLOCK
        k = (np.minimum(BLOCK, n - b0) + 3) // 4
        r, j = (e - b0) // k, (e - b0) % k
        out.append(words[call0 + b0 // 4 + j, r])
        call0 += (n + 3) // 4
    return out


# --- the numbers ---------------------------------------------------------------------------------
def test_rotation_normals_are_the_reference_philox_numbers():
    """Both dtypes, ragged sizes (tails of 1–3, blocks cut short), a float32 and a float64
    bucket (the second continues the first's calls), three steps: every element equals the
    reference, the float64 bucket the float32 transform's values widened (noise "gaussian").
    The torch generator is not used (no generator state in the checkpoint)."""
    sizes32, sizes64 = [3, 2048, 2050, 5001], [7, 4096]
    ps = _params(sizes32 + sizes64, [torch.float32] * 4 + [torch.float64] * 2)
    opt, rec = _run(ps, 3)
    assert len(rec) == 3
    for step, zs in enumerate(rec):
        ref32 = _reference(11, step, [sum(sizes32), sum(sizes64)])
        z32 = torch.cat([z.flatten() for z in zs[:4]]).numpy()
        z64 = torch.cat([z.flatten() for z in zs[4:]]).numpy()
        assert z32.dtype == np.float32 and z64.dtype == np.float64
        np.testing.assert_array_equal(z32, ref32[0].astype(np.float32))
        np.testing.assert_array_equal(z64, ref32[1])
        assert np.array_equal(z64, z64.astype(np.float32).astype(np.float64))  # widened f32
    assert opt.state_dict()["dynopt"]["generators"] == {}


def test_fill_normals_blocks_tail_and_offset():
    """fill_normals on its own: a buffer drawn whole equals the reference; a buffer that starts
    at call c0 is the reference's calls c0 … (the offset of a second bucket)."""
    n = 3 * BLOCK + 5
    out = np.empty(n, np.float64)
    fill_normals(out, 2**64 - 1, 9, 2**40 + 3)
    words = normals_for(2**64 - 1, (n + 3) // 4 + 10, 4, stream=9, first=4 * (2**40 + 3))
    ref = _reference_from(words, 0, n)
    np.testing.assert_array_equal(out, ref)
    out2 = np.empty(10, np.float32)
    fill_normals(out2, 2**64 - 1, 9, 2**40 + 3, call0=(n + 3) // 4)
    np.testing.assert_array_equal(out2, _reference_from(words, (n + 3) // 4, 10)
                                  .astype(np.float32))


@pytest.mark.parametrize("n", [1, 5, BLOCK, 16 * BLOCK - 3, 16 * BLOCK, 16 * BLOCK + 1,
                               17 * BLOCK + 7])
def test_fill_normals_serial_and_parallel_kernels_agree_with_the_reference(n):
    """A buffer of at most one task (16 blocks) is filled on the calling thread
    (``_fill_serial``, no numba thread pool: next to torch's OpenMP pool each parallel entry
    cost 0.2-1.5 ms on 2 cores), a larger one in parallel (``_fill``). Either kernel gives the
    reference's numbers at every size, on both sides of the threshold, at a nonzero call0."""
    from dynopt.backends.numba.fill_tensor import _fill, _fill_serial
    from dynopt.backends.numba.philox import split_seed

    call0 = 3
    words = normals_for(12345, call0 + (n + 3) // 4, 4, stream=5, first=4 * 7)
    ref = _reference_from(words, call0, n)
    k0, k1 = split_seed(12345)
    for kernel in ((_fill_serial, _fill) if n <= 16 * BLOCK else (_fill,)):
        out = np.full(n, np.nan)
        kernel(out, np.int64(call0), np.int64(5), np.uint64(7), k0, k1)
        np.testing.assert_array_equal(out, ref, err_msg=kernel.__name__)
    out = np.full(n, np.nan)
    fill_normals(out, 12345, 5, 7, call0=call0)
    np.testing.assert_array_equal(out, ref)


def _reference_from(words, call0, n):
    e = np.arange(n)
    b0 = e // BLOCK * BLOCK
    k = (np.minimum(BLOCK, n - b0) + 3) // 4
    return words[call0 + b0 // 4 + (e - b0) % k, (e - b0) // k]


@pytest.mark.parametrize(("out", "call0", "match"), [
    (np.empty(8, np.float16), 0, "contiguous 1-D float32/float64 array, got float16"),
    (np.empty(16, np.float32)[::2], 0, "contiguous 1-D"),
    (np.empty((2, 4), np.float32), 0, "shape \\(2, 4\\)"),
    (np.empty(8, np.float32), 2**32 - 1, "outside the counter's 2\\*\\*32 calls"),
    (np.empty(8, np.float32), -1, "outside the counter's 2\\*\\*32 calls"),
])
def test_fill_normals_refuses_what_it_cannot_fill(out, call0, match):
    with pytest.raises(ValueError, match=match):
        fill_normals(out, 1, ROTATION_STREAM, 0, call0=call0)


# --- distribution and independence --------------------------------------------------------------
def test_rotation_normals_are_standard_and_independent():
    """2·10⁶ float32 normals per step, 3 steps: mean 0 and variance 1 per element within 5
    standard errors (each SE estimated from the sample and itself bounded, so a bias of 0.005
    in the mean or 0.01 in the variance would fail); correlations between consecutive steps,
    between neighbours, between the words of one Philox call (lags K = 512 and 1024: Box–Muller's
    cos/sin pair and the call's other pair), across blocks (lag 2048) and between the two
    tensors within 5/√n."""
    sizes = [1_000_003, 999_997]
    ps = _params(sizes, [torch.float32] * 2)
    _, rec = _run(ps, 3)
    zs = [torch.cat([z.flatten() for z in step]).double().numpy() for step in rec]
    n = zs[0].size
    for z in zs:
        se_mean = z.std() / math.sqrt(n)
        se_var = (z * z).std() / math.sqrt(n)
        assert se_mean < 1e-3 and se_var < 2e-3  # the test's own power
        assert abs(z.mean()) < 5 * se_mean
        assert abs(z.var() - 1.0) < 5 * se_var
        assert abs((z**4).mean() - 3.0) < 5 * (z**4).std() / math.sqrt(n)  # Gaussian tails
        for lag in (1, 2, 3, 512, 1024, 1536, 2048):
            c = np.corrcoef(z[:-lag], z[lag:])[0, 1]
            assert abs(c) < 5 / math.sqrt(n - lag), lag
        half = sizes[1]
        c = np.corrcoef(z[:half], z[sizes[0]:sizes[0] + half])[0, 1]
        assert abs(c) < 5 / math.sqrt(half)
    for a, b in itertools.pairwise(zs):  # consecutive steps
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(n)
        assert abs(np.corrcoef(a**2, b**2)[0, 1]) < 5 / math.sqrt(n)


# --- what a counter-based draw promises --------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_and_foreach_paths_draw_the_same_normals(dtype):
    """At one seed the reference (foreach=False) and foreach paths get the same normals, bit for
    bit, every step (their |p|² round differently, so their momenta may differ in the last
    bits: the normals do not depend on them)."""
    runs = {}
    for foreach in (False, True):
        ps = _params([300, 2500, 17], [dtype] * 3)
        _, rec = _run(ps, 6, foreach=foreach)
        runs[foreach] = (rec, torch.cat([p.detach().flatten() for p in ps]))
    for a, b in zip(runs[False][0], runs[True][0], strict=True):
        for za, zb in zip(a, b, strict=True):
            assert torch.equal(za, zb)
    tol = {"rtol": 0, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(runs[False][1], runs[True][1], **tol)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_normals_do_not_depend_on_the_numba_thread_count():
    before = numba.get_num_threads()
    out = {}
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            ps = _params([300_001, 70_000], [torch.float32, torch.float64])
            _, rec = _run(ps, 2)
            out[threads] = rec
    finally:
        numba.set_num_threads(before)
    for a, b in zip(out[1], out[2], strict=True):
        for za, zb in zip(a, b, strict=True):
            assert torch.equal(za, zb)


def test_resume_through_a_weights_only_checkpoint_needs_no_generator_state():
    """(seed, step) is the whole state of the rotation noise: a checkpoint has no generator
    state on CPU and a run resumed into an optimizer built with another seed continues bit for
    bit. A checkpoint that carries a CPU generator state (written before the Philox draw) still
    loads; its state goes unused."""
    ps = _params([5000, 3], [torch.float32, torch.float64])
    opt, _ = _run(ps, 5)
    buf = io.BytesIO()
    torch.save({"p": [p.detach().clone() for p in ps], "opt": opt.state_dict()}, buf)
    _run(ps, 7, opt=opt, start=5)
    want = [p.detach().clone() for p in ps]
    for old_format in (False, True):
        buf.seek(0)
        ckpt = torch.load(buf, weights_only=True)
        assert ckpt["opt"]["dynopt"]["generators"] == {}
        if old_format:
            ckpt["opt"]["dynopt"]["generators"] = {"cpu": torch.Generator().manual_seed(
                3).get_state()}
        ps2 = _params([5000, 3], [torch.float32, torch.float64], seed=9)
        with torch.no_grad():
            for p, v in zip(ps2, ckpt["p"], strict=True):
                p.copy_(v)
        opt2 = ECDSep(ps2, lr=0.05, nu=0.3, seed=12345)
        opt2.load_state_dict(ckpt["opt"])
        _run(ps2, 7, opt=opt2, start=5)
        for a, b in zip(ps2, want, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_continue_bit_for_bit_with_their_own_buffer(how):
    import pickle

    ps = _params([4000, 10], [torch.float32, torch.float32])
    opt, _ = _run(ps, 3)
    ps2, opt2 = copy.deepcopy((ps, opt)) if how == "deepcopy" else pickle.loads(
        pickle.dumps((ps, opt)))
    assert "_rotation_noise" not in opt2.__dict__ or not opt2.__dict__["_rotation_noise"]
    _, ra = _run(ps, 4, opt=opt, start=3)
    _, rb = _run(ps2, 4, opt=opt2, start=3)
    for a, b in zip(ps, ps2, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(ra[-1][0], rb[-1][0])
    assert opt2._rotation_noise[(torch.device("cpu"), torch.float32)].data_ptr() != (
        opt._rotation_noise[(torch.device("cpu"), torch.float32)].data_ptr())


def test_a_refused_step_changes_nothing_and_its_retry_draws_the_same_normals():
    """nonfinite='raise': a step whose momentum would overflow (a gradient element of 3e38 in
    float32) raises DivergenceError and leaves parameters, momenta and the step counter as
    they were; retried with good gradients, the run equals one that never had the failed step
    (the counter, and so the normals, are those of the step that was refused)."""
    ps = _params([3000], [torch.float32])
    ref = _params([3000], [torch.float32])
    opt, _ = _run(ps, 3)
    ropt, _ = _run(ref, 3)
    before = (ps[0].detach().clone(), opt.state[ps[0]]["momentum"].clone())
    _grads(ps, 3)
    ps[0].grad[0] = 3e38
    with pytest.raises(DivergenceError, match="step 4 would write a non-finite"):
        opt.step(loss=1.0 + float((ps[0].detach().double() ** 2).sum()))
    assert opt.step_count == 3
    assert torch.equal(ps[0], before[0])
    assert torch.equal(opt.state[ps[0]]["momentum"], before[1])
    _, ra = _run(ps, 3, opt=opt, start=3)
    _, rb = _run(ref, 3, opt=ropt, start=3)
    assert torch.equal(ps[0], ref[0]) and torch.equal(ra[0][0], rb[0][0])


def test_half_precision_and_other_devices_draw_from_the_generator():
    """float16 buckets (no Philox fill) draw with torch.randn from the optimizer's generator,
    whose state the checkpoint keeps; a float32 bucket beside them still takes Philox."""
    ps = _params([1000, 64], [torch.float16, torch.float32])
    opt, rec = _run(ps, 2)
    assert set(opt.state_dict()["dynopt"]["generators"]) == {"cpu"}
    from dynopt.backends.torch.ops import seeded

    g = seeded(torch.Generator(), opt.seed)
    for step, zs in enumerate(rec):
        assert torch.equal(zs[0], torch.randn(1000, generator=g, dtype=torch.float16))
        np.testing.assert_array_equal(zs[1].numpy(),
                                      _reference(11, step, [64])[0].astype(np.float32))


# --- DDP ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial weights on every rank
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    model = torch.nn.parallel.DistributedDataParallel(net)
    torch.manual_seed(100 + rank)  # ranks' global generators differ: seed=None takes rank 0's
    opt = ECDSep(net.parameters(), lr=0.05, nu=0.5)
    g = torch.Generator().manual_seed(rank)  # each rank its own minibatches
    for _ in range(8):
        x, y = torch.randn(8, 2, generator=g), torch.randn(8, 1, generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y) + 0.1
        loss.backward()
        opt.step(loss=loss)
    torch.save(torch.cat([p.detach().flatten() for p in net.parameters()]),
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # gloo's threads occasionally abort at interpreter teardown


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_ddp_ranks_draw_the_same_rotation_noise(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(r0, r1)
