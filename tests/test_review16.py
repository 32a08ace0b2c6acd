"""Review of the session-16 merge: regressions found on the paths its checks touch."""

import pytest
import torch

from dynopt.optim import HeavyBall

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _pair(lr):
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    b.load_state_dict(a.state_dict())
    return (a, HeavyBall(a.parameters(), lr=lr, gamma=0.5, foreach=True)), (
        b, HeavyBall(b.parameters(), lr=lr, gamma=0.5, foreach=True))


def _schedule(step: int) -> float:
    return 0.1 / (1 + step)


@pytest.mark.parametrize("lr", [0.05, _schedule], ids=["number", "schedule"])
def test_compiled_eventful_step_matches_eager_with_the_check_of_keys_set_later(lr):
    """torch.compile(opt.step) of an eventful optimizer (HeavyBall, BBI, ECDSep) failed inside
    dynamo with ``IndexError: tuple index out of range`` at the check of keys set after
    construction (``key in group``); the check now runs eagerly, the compiled step matches the
    eager one exactly, and a key set later is still refused under compile."""
    (m1, o1), (m2, o2) = _pair(lr)
    step = torch.compile(o2.step, backend="eager")
    x = torch.randn(4, 3)
    for _ in range(2):
        for m, st in ((m1, o1.step), (m2, step)):
            m.zero_grad()
            m(x).pow(2).sum().backward()
            st()
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)
    assert float(o2.param_groups[0]["lr"]) == float(o1.param_groups[0]["lr"])
    o2.param_groups[0]["betas"] = (0.9, 0.999)
    before = [p.detach().clone() for p in m2.parameters()]
    with pytest.raises(ValueError, match="'betas'.*set after construction"):
        step()
    assert all(torch.equal(p, q) for p, q in zip(m2.parameters(), before, strict=True))


def test_an_optimizer_wide_key_changed_after_construction_is_refused():
    """A param group may repeat the constructor's value of an optimizer-wide key (ZeRO-style
    wrappers do); the check of keys set later cached groups by their key names only, so such a
    value changed between steps (``group["nu"] = 0.5`` on ECDSep) ran silently with the
    optimizer's ``nu``. It is now refused, naming the key and the value."""
    from dynopt.optim import ECDSep

    torch.manual_seed(0)
    m = torch.nn.Linear(3, 1)
    opt = ECDSep([{"params": m.parameters(), "nu": 0.0}], lr=0.01, nu=0.0, seed=0)
    x = torch.randn(4, 3)

    def closure():
        m.zero_grad()
        loss = m(x).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    opt.step(closure)  # the same value: still accepted
    opt.param_groups[0]["nu"] = 0.5
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=r"'nu' is a setting of the whole ECDSep.*sets it to "
                                         r"0\.5.*set after construction"):
        opt.step(closure)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before, strict=True))
    assert opt.step_count == 2
