"""``dynopt reproduce braking`` pieces (issue 12) and the generated teacher task: the matched
effective step, the paired statistics, the variants grid, the generator's properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynopt.data import make_teacher_split
from dynopt.reproductions import braking as rb


@pytest.mark.parametrize(("h", "gamma"), [(0.1, 0.5), (0.1, 2.0), (0.05, 3.0), (0.2, 5.0)])
def test_matched_sgd_lr_is_the_effective_step(h, gamma):
    mu = 1.0 - gamma * h
    assert rb.momentum(h, gamma) == mu
    assert rb.matched_sgd_lr(h, gamma) == pytest.approx(h * h / (1.0 - mu), rel=1e-15)
    assert rb.matched_sgd_lr(h, gamma) == pytest.approx(h / gamma, rel=1e-12)


def test_matched_sgd_lr_rejects_a_friction_without_a_finite_effective_step():
    with pytest.raises(ValueError, match=r"gamma\*h must be in \(0, 1\].*gamma=0.0"):
        rb.matched_sgd_lr(0.1, 0.0)
    with pytest.raises(ValueError, match="gamma=20"):
        rb.matched_sgd_lr(0.1, 20)


def test_variants_cover_goals_constant_frictions_and_matched_sgd():
    v = rb.variants((0.3, 0.02))
    goals = sorted(s["goal"] for s in v.values() if "goal" in s)
    assert goals == [0.02, 0.3]
    assert all(s["gamma"] == rb.GAMMA_EXPLORE for s in v.values() if "goal" in s)
    consts = sorted(s["gamma"] for s in v.values() if s["kind"] == "hb" and "goal" not in s)
    assert consts == [rb.GAMMA_EXPLORE, rb.GAMMA_BRAKE]
    lrs = sorted(s["lr"] for s in v.values() if s["kind"] == "sgd")
    assert lrs == pytest.approx(sorted(rb.H ** 2 / (rb.GAMMA_BRAKE * rb.H * np.array(
        [1.0, rb.GAMMA_EXPLORE / rb.GAMMA_BRAKE]))))
    # the exploration phase is stable by construction: its effective step is 4x the braked one
    assert rb.matched_sgd_lr(rb.H, rb.GAMMA_EXPLORE) == pytest.approx(
        4 * rb.matched_sgd_lr(rb.H, rb.GAMMA_BRAKE))


def test_paired_vs_reference_se_is_sample_sd_over_sqrt_n():
    runs = [{"final": a} for a in (0.80, 0.75, 0.90)]
    ref = [{"final": a} for a in (0.70, 0.75, 0.85)]
    m, se = rb.paired_vs(runs, ref)
    d = np.array([10.0, 0.0, 5.0])
    assert m == pytest.approx(d.mean(), abs=1e-12)
    assert se == pytest.approx(d.std(ddof=1) / math.sqrt(3), abs=1e-12)


def test_teacher_split_is_seeded_clean_on_test_and_noisy_at_the_stated_rate():
    a = make_teacher_split(3000, 500, seed=4, label_noise=0.2)
    b = make_teacher_split(3000, 500, seed=4, label_noise=0.2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    clean = make_teacher_split(3000, 500, seed=4, label_noise=0.0)
    assert torch.equal(clean.x_train, a.x_train) and torch.equal(clean.y_test, a.y_test)
    flipped = float((a.y_train != clean.y_train).float().mean())
    # a flip draws a uniform class: P(label changes) = 0.2 · 9/10 = 0.18, binomial SE ≈ 0.007
    assert abs(flipped - 0.18) < 4 * math.sqrt(0.18 * 0.82 / 3000)
    assert a.x_train.shape == (3000, 10) and a.n_classes == 10
    counts = torch.bincount(clean.y_train, minlength=10).double() / 3000
    assert float(counts.min()) > 0.07 and float(counts.max()) < 0.13   # balanced classes


@pytest.mark.parametrize(("kw", "match"), [
    (dict(n_train=0), "n_train must be >= 1"),
    (dict(n_classes=1), "n_classes must be >= 2"),
    (dict(hidden=(8, 0)), r"hidden\[1\] must be >= 1"),
    (dict(gain=-1.0), "gain must be > 0"),
    (dict(label_noise=1.0), r"label_noise must be in \[0, 1\)"),
])
def test_teacher_split_bad_arguments_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        make_teacher_split(**({"n_train": 10, "n_test": 5} | kw))


def test_a_run_without_update_docs_does_not_claim_the_flag():
    """The quick reproductions printed their docs text, which names the command with
    --update-docs, also when the flag was not given."""
    from dynopt.reproductions.report import as_run

    body = ("Command: `dynopt reproduce braking --quick --update-docs` (1 min). Measured with "
            "`x --update-docs`")
    assert as_run(body, False) == ("Command: `dynopt reproduce braking --quick` (1 min). "
                                   "Measured with `x`")
    assert as_run(body, True) == body


def test_every_reproduction_names_its_seeds_in_the_printed_command():
    """bbi, braking and surfing dropped --seeds from the command they print, so the printed
    command did not reproduce the printed numbers."""
    import argparse

    from dynopt.reproductions.report import command

    def args(**kw):
        return argparse.Namespace(**({"quick": False, "seeds": None} | kw))

    assert command("bbi", args()) == "dynopt reproduce bbi"
    assert command("braking", args(quick=True, seeds=1)) == "dynopt reproduce braking --quick --seeds 1"
    assert command("surfing", args(seeds=3)) == "dynopt reproduce surfing --seeds 3"
    import pathlib

    for name in ("adlala", "bbi", "braking", "ddpnopt", "surfing"):  # one source of the text
        src = pathlib.Path(__import__(f"dynopt.reproductions.{name}",
                                      fromlist=["x"]).__file__).read_text()
        assert f'command("{name}", args)' in src and '"dynopt reproduce ' not in src, name
