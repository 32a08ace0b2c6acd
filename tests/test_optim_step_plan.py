"""The step plan (dynopt.optim.bound.StepPlan): what the snapshot-free bound of a Partitioned
optimizer found (specs, paths, checked state buffers) is handed to the update of the same step,
used only for exactly the parameters it was made for, and never outlives that step."""

from __future__ import annotations

import pytest
import torch

from dynopt.optim import Langevin, OverdampedLangevin
from dynopt.optim import bound as bound_module
from dynopt.optim.executor import Slot
from dynopt.optim.partitioned import Partitioned


def _model(seed: int = 0, scheme: str | None = None, **kw):
    torch.manual_seed(seed)
    ps = [torch.randn(5, 3), torch.randn(3), torch.randn(4, 2, dtype=torch.float64)]
    for p in ps:
        p.grad = torch.randn_like(p) * 1e-2
    cls = OverdampedLangevin if scheme == "lm" else Langevin
    extra = {"scheme": scheme} if scheme else {}
    return ps, cls(ps, lr=1e-2, seed=0, **extra, **kw)


@pytest.mark.parametrize("scheme", [None, "lm"], ids=["langevin", "overdamped-lm"])
def test_plan_is_consumed_and_shared(monkeypatch, scheme):
    """After the first (snapshotted) step every step is bounded; each bounded step chooses each
    bucket's path once (in the bound: the update takes it from the plan), and no plan is left
    behind. Results equal those of an optimizer whose bound never leaves a plan."""
    ps, opt = _model(scheme=scheme)
    ps_ref, ref = _model(scheme=scheme)
    opt.step()
    ref.step()
    calls = []
    real = Partitioned._path

    def counting(self, group, tensors):
        if self is opt:
            calls.append(len(tensors))
        return real(self, group, tensors)

    monkeypatch.setattr(Partitioned, "_path", counting)
    real_bound = bound_module.partitioned_bounded

    def planless(o, used=None):  # the same proof, its plan dropped
        ok = real_bound(o, used)
        o.__dict__.pop(bound_module.STEP_PLAN, None)
        return ok

    monkeypatch.setattr(ref, "_result_bounded", lambda used=None: planless(ref, used))
    for _ in range(3):
        opt.step()
        ref.step()
        assert bound_module.STEP_PLAN not in opt.__dict__
    assert opt.result_checks == {"bound": 3, "snapshot": 1}
    assert ref.result_checks == {"bound": 3, "snapshot": 1}
    assert calls == [2, 1] * 3  # float32 bucket (two tensors), float64 bucket; once per step
    for a, b in zip(ps, ps_ref, strict=True):
        assert torch.equal(a, b)


def test_plan_only_for_its_own_parameters():
    """A planned bucket is used only if it holds the very parameters being bucketed; otherwise
    the buffers are looked up and checked as without a plan."""
    ps, opt = _model()
    opt.step()
    group = opt.param_groups[0]
    spec = opt._spec(group)
    slots = [Slot(param=p, grad=p.grad, state=opt.state[p], stream=i)
             for i, p in enumerate(ps[:2])]
    marker = torch.zeros(15)
    plan = bound_module.StepPlan()
    cpu = torch.device("cpu")
    plan.buckets[(id(group), cpu, torch.float32)] = ([ps[1], ps[0]], "foreach", [marker, marker],
                                                     [])
    (b,) = opt._buckets(spec, group, slots, plan=plan)  # other order: not these parameters
    assert b.path == "fused"
    assert all(m is opt.state[p]["momentum_buffer"] for m, p in zip(b.mom, ps[:2], strict=True))
    plan.buckets[(id(group), cpu, torch.float32)] = (ps[:2], "foreach", [marker, marker], [])
    (b,) = opt._buckets(spec, group, slots, plan=plan)  # these: taken from the plan
    assert b.path == "foreach" and all(m is marker for m in b.mom)


def test_replaced_buffer_after_a_bounded_step_is_refused():
    """A momentum buffer of the wrong shape put in after a bounded step: the next bound refuses
    the step (no plan), and the update's own check names the buffer; nothing is written."""
    ps, opt = _model()
    opt.step()
    opt.step()
    assert opt.result_checks["bound"] == 1
    opt.state[ps[0]]["momentum_buffer"] = torch.zeros(3, 5)
    before = [p.clone() for p in ps]
    with pytest.raises(ValueError, match=r"state\['momentum_buffer'\] of parameter 0"):
        opt.step()
    assert opt.result_checks == {"bound": 1, "snapshot": 2}
    assert bound_module.STEP_PLAN not in opt.__dict__
    for a, b in zip(ps, before, strict=True):
        assert torch.equal(a, b)
