"""The two-class spiral task of Leimkuhler, Matthews & Vlaar (2019)."""

from __future__ import annotations

import math

import torch

from .._validation import check_int, check_nonnegative, check_positive
from .split import Split

__all__ = ["make_spirals", "spiral_points"]


def spiral_points(
    n: int, *, turns: float = 4.0, noise: float = 0.02, generator: torch.Generator | None = None,
    radius: float = 2.0, power: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``n`` points (half per class) on two interleaved spirals.

    Class 0: t ~ U[0, 1), r = a tᵖ, angle φ = 2π b tᵖ, x = r(cos φ, sin φ) + noise·N(0, I);
    class 1 is the point reflection −x (as in the authors' code).

    | symbol | code |
    |---|---|
    | a | ``radius`` (2) |
    | p | ``power`` (0.5) |
    | b | ``turns`` (4) |
    | noise std | ``noise`` (0.02) |
    """
    n = check_int("n", n, minimum=2)
    if n % 2:
        raise ValueError(f"n must be even (half the points per class), got {n}")
    turns = check_positive("turns", turns)
    noise = check_nonnegative("noise", noise)
    radius = check_positive("radius", radius)
    power = check_positive("power", power)  # 0 put every point on one radius; < 0 at infinity
    half = n // 2
    t = torch.rand(half, generator=generator, dtype=torch.float64) ** power
    r = radius * t
    phi = 2.0 * math.pi * turns * t
    pts = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=1)
    pts = pts + noise * torch.randn(pts.shape, generator=generator, dtype=torch.float64)
    x = torch.cat([pts, -pts], dim=0)
    y = torch.cat([torch.zeros(half), torch.ones(half)])
    return x.to(torch.float32), y.to(torch.float32)


def make_spirals(
    n_train: int = 500, n_test: int = 1000, *, turns: float = 4.0, noise: float = 0.02,
    seed: int = 0,
) -> Split:
    """The paper's task: 500 training and 1000 test points, 4 turns, noise 0.02 (seeded)."""
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        check_int(name, n, minimum=2)
        if n % 2:  # an odd count silently lost a point
            raise ValueError(f"{name} must be even (half the points per class), got {n}")
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    xtr, ytr = spiral_points(n_train, turns=turns, noise=noise, generator=g)
    xte, yte = spiral_points(n_test, turns=turns, noise=noise, generator=g)
    return Split(xtr, ytr, xte, yte, n_classes=2, name="spirals")
