"""The README's example runs as printed and its claims hold (⟨q²⟩ and T_conf within 4 SE)."""

from __future__ import annotations

import re
from pathlib import Path

from dynopt.diagnostics import batch_means_se

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example(capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    traj = ns["traj"]
    q2 = traj.q[:, 100:, 0] ** 2
    assert abs(q2.mean() - 0.917671) < 4 * batch_means_se(q2)
    t_conf = ns["diagnostics"].configurational_temperature(traj)
    assert abs(t_conf.value - 0.25) < 4 * t_conf.se
    assert "±" in capsys.readouterr().out
