"""The BBI reproduction's prose follows its numbers: each verdict is chosen by the measured
values, so a run that disagrees with the paper does not print that it agrees."""

from __future__ import annotations

import pytest

from dynopt.reproductions.bbi import _basins_prose, _zakharov_prose


@pytest.mark.parametrize("ratio, verdict, authors", [
    (1.747, "falls short of", "the same as the authors' 1.725 (+0.3 SE)"),
    (1.900, "is consistent with", "not the same as the authors' 1.725 (+2.2 SE)"),
    (2.200, "exceeds", "not the same as the authors' 1.725 (+5.9 SE)"),
])
def test_basin_verdicts_follow_the_z_scores(ratio, verdict, authors):
    text = _basins_prose([{"direction": "cube", "ratio": ratio, "ratio_se": 0.081,
                           "predicted": 1.926}])
    assert f"the ratio {ratio:.3f} {verdict} the Liouville prediction 1.926" in text
    assert authors in text


def test_zakharov_prose_follows_the_run():
    reached = _zakharov_prose({"bbi_final": 1e-22, "gdm_final": 2.31e-9}, 4223, 3.96e-13)
    assert "reaches its floor at iteration 4223" in reached
    assert "13.4 orders of magnitude below" in reached
    missed = _zakharov_prose({"bbi_final": 1e-8, "gdm_final": 1e-9}, None, 1e-12)
    assert "does not reach its v0 floor in this run (final 1e-08)" in missed
    assert "BBI does not end below GD + momentum" in missed
