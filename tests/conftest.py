"""Shared test configuration."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# Keep each test process to its share of the 2-core CI machine.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
