"""Probe of the reproductions' reports (session 15).

Each test here failed before its fix: a quick run's header printed its wall time in whole
minutes, so ``dynopt reproduce braking --quick`` (12 s) read "(0 min on 2 shared CPU cores)".
"""

from __future__ import annotations

import math
import pathlib
import re

import pytest

from dynopt.reproductions import braking as rb
from dynopt.reproductions.report import duration


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "< 1 s"), (0.4, "< 1 s"), (1.0, "1 s"), (12.3, "12 s"), (59.4, "59 s"),
    (59.6, "1 min"), (89.0, "1 min"), (91.0, "2 min"), (300.0, "5 min"), (1260.0, "21 min")])
def test_duration_prints_seconds_under_a_minute_and_minutes_after(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "12"])
def test_duration_names_a_bad_value(bad):
    with pytest.raises(ValueError, match=re.escape(f"seconds must be a finite number >= 0, "
                                                   f"got {bad!r}")):
        duration(bad)


def _fake_results() -> dict:
    run = {"acc": [0.5, 0.7], "train_loss": [1.0, 0.8], "final": 0.7,
           "epochs_to_target": None, "brake_epoch": None, "ema": [1.0]}
    return {name: [dict(run, final=0.7 + 0.01 * s) for s in range(2)]
            for name in rb.variants(rb.QUICK_GOALS)}


def test_braking_quick_header_does_not_read_zero_minutes():
    """The quick braking table's header read "(0 min on 2 shared CPU cores)" for a 12 s run."""
    body = rb.report(_fake_results(), 2, 8, 1000, 12.0, "dynopt reproduce braking --quick")
    first = body.splitlines()[0]
    assert "(12 s on 2 shared CPU cores)" in first, first
    assert "0 min" not in body
    body = rb.report(_fake_results(), 5, 25, 4000, 300.0, "dynopt reproduce braking")
    assert "(5 min on 2 shared CPU cores)" in body.splitlines()[0]


def test_no_reproduction_formats_its_wall_time_in_whole_minutes_itself():
    """bbi, braking, ddpnopt and surfing each printed ``{seconds / 60:.0f} min``; they now share
    :func:`duration` (one source of the format)."""
    for name in ("adlala", "bbi", "braking", "ddpnopt", "surfing"):
        src = pathlib.Path(__import__(f"dynopt.reproductions.{name}",
                                      fromlist=["x"]).__file__).read_text()
        assert not re.search(r"/ ?60\b", src), name
        assert ":.0f} min" not in src, name
