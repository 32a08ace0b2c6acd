"""The reproductions write standard JSON (RFC 8259): a NaN (a diverged run's loss, an
undefined statistic) is ``null``, never the bare ``NaN`` token strict parsers reject."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np
import pytest

from dynopt._files import json_text


def strict_loads(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_text_writes_null_for_every_non_finite_number_at_any_depth():
    obj = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": np.array([0.5, np.nan]),
           "e": np.float32("nan"), "f": (2, 3.5)}
    assert strict_loads(json_text(obj, indent=None)) == {
        "a": None, "b": [1.0, None, {"c": None}], "d": [0.5, None], "e": None, "f": [2, 3.5]}


def test_json_text_without_a_default_refuses_an_unknown_object():
    """``default=None`` keeps json's strictness (a reproduction never stringifies silently)."""
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_text({"x": object()}, default=None)


def test_braking_reproduction_writes_a_diverged_run_as_null(tmp_path, monkeypatch):
    """A run whose accuracy is NaN (diverged) used to be written as the bare token ``NaN``."""
    from dynopt.reproductions import braking

    def fake_train_one(spec: dict[str, Any], seed: int, epochs: int, n_train: int):
        return {"acc": [math.nan], "train_loss": [math.inf], "final": math.nan,
                "epochs_to_target": None, "brake_epoch": None, "ema": [math.nan]}

    monkeypatch.setattr(braking, "train_one", fake_train_one)
    monkeypatch.setattr(braking, "_plot", lambda results, out: None)
    args = argparse.Namespace(out=str(tmp_path), quick=True, seeds=1, update_docs=False)
    braking.run(args)
    saved = strict_loads((tmp_path / "braking" / "braking.json").read_text())
    first = next(iter(saved.values()))[0]
    assert first["final"] is None and first["train_loss"] == [None]
