"""Less common but real training-loop usage of the optimizers, each checked against what torch's
own optimizers do or against an equivalent run.

* A tensor appended to ``group["params"]`` by hand after some steps (torch's optimizers take it:
  their state is created lazily) steps exactly as if it had been in the group from the start
  without a gradient until then, noise streams included.
"""

from __future__ import annotations

import pytest
import torch
from optim_zoo import FACTORIES, data, model

# Partitioned's family numbers its noise streams over the groups' tensors (cached); the others
# are the reference behaviour (torch's lazily created state).
APPEND_NAMES = ("Langevin", "OverdampedLangevin", "AdaptiveLangevin", "NoseHooverChain",
                "AdLaLa", "LOL", "HeavyBall", "ECDSep")


def _step(m, opt, extra, x, y):
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x + extra), y)
        loss.backward()
        return loss

    opt.step(closure)


@pytest.mark.parametrize("name", APPEND_NAMES)
@pytest.mark.parametrize("how", ["append", "replace"])
def test_tensor_put_into_group_by_hand(name, how):
    """Run A holds ``extra`` in its last group from the start (no gradient for two steps); run
    B puts it there by hand after two steps (appended, or replacing a placeholder tensor at the
    same position). The two runs agree bit for bit; before the fix run B raised a bare
    ``KeyError`` (the cached stream numbering did not know the tensor)."""
    batches = data(6)
    runs = []
    for late in (False, True):
        m = model(0)
        extra = torch.nn.Parameter(torch.full((3,), 0.1, dtype=torch.float64))
        placeholder = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        opt = FACTORIES[name](m, seed=2)
        group = opt.param_groups[-1]
        if not late:
            group["params"].append(extra)
        elif how == "replace":
            group["params"].append(placeholder)  # never gets a gradient
        for x, y in batches[:2]:
            _step(m, opt, extra.detach(), x, y)
        if late and how == "append":
            group["params"].append(extra)
        elif late:
            group["params"][-1] = extra
        for x, y in batches[2:]:
            _step(m, opt, extra, x, y)
        runs.append(torch.cat([p.detach().flatten() for p in [*m.parameters(), extra]]))
    assert not torch.equal(runs[0][-3:], torch.full((3,), 0.1, dtype=torch.float64))
    assert torch.equal(runs[0], runs[1])
