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


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test (restored after): tiny tensors gain nothing from
    threads and stall on OpenMP wake-ups when the 2-core machine is loaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
