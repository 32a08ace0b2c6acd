"""BBI's and ECDSep's |Π|² cache (``global_state["ps2_key"]``, ``["ps2"]``) from a checkpoint:
a malformed key is refused at load, naming it, with the optimizer unchanged (as ``ps2``
already was), never a crash at the next step."""

from __future__ import annotations

import copy

import pytest
import torch

from dynopt.optim import BBI, ECDSep


def _run(cls, n: int, opt=None, p=None):
    torch.manual_seed(0)
    if p is None:
        p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 30, dtype=torch.float64))
        opt = cls([p], lr=0.05, seed=1)
    for _ in range(n):
        opt.zero_grad()
        loss = (p ** 2).sum() + 1.0
        loss.backward()
        opt.step(loss=loss.detach())
    return opt, p


@pytest.mark.parametrize("cls", [BBI, ECDSep])
@pytest.mark.parametrize("junk", [
    [[0, torch.tensor([1.0, 1.0])]],  # found by the fuzz test: a tensor inside the key
    [[0, 0.0]], "x", [[0]], [[0, 0], [0, 1]], [[1, 0]], None, [[0, True]]])
def test_a_malformed_ps2_key_is_refused_at_load_naming_it(cls, junk):
    """Before: the checkpoint loaded, and ``global_state.get("ps2_key") == key`` raised
    'Boolean value of Tensor with more than one value is ambiguous' at BBI's next step (a
    RuntimeError the fuzz test found), or took a malformed key as another parameter set."""
    opt, _ = _run(cls, 2)
    sd = copy.deepcopy(opt.state_dict())
    before = copy.deepcopy(opt.state_dict())
    sd["dynopt"]["global"]["ps2_key"] = junk
    with pytest.raises(ValueError, match=r"dynopt\['global'\]\['ps2_key'\] must be a list of "
                                         r"\[group, index\] pairs.*left unchanged"):
        opt.load_state_dict(sd)
    assert float(opt.state_dict()["dynopt"]["global"]["ps2"]) == float(
        before["dynopt"]["global"]["ps2"])
    assert opt.global_state["ps2_key"] == [[0, 0]]


@pytest.mark.parametrize("cls", [BBI, ECDSep])
def test_an_empty_ps2_key_is_another_set_and_the_run_continues_exactly(cls):
    """A well-formed key of another participation set is a cache miss: |Π|² is recomputed
    (here the same float64 sum), and the run continues as the uninterrupted one."""
    ref, p_ref = _run(cls, 2)
    _run(cls, 2, ref, p_ref)
    src, p_src = _run(cls, 2)
    sd = copy.deepcopy(src.state_dict())
    sd["dynopt"]["global"]["ps2_key"] = []
    src.load_state_dict(sd)
    _run(cls, 2, src, p_src)
    assert torch.equal(p_src, p_ref)
