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


# --- the device tier (tests/test_device.py) ----------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device", default=None,
        help="torch device of the device tier, tests/test_device.py: cpu (default), cuda, "
             "cuda:1, ... (or the environment variable DYNOPT_TEST_DEVICE)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device under test; CUDA tests skip cleanly where CUDA is not available."""
    name = request.config.getoption("--device") or os.environ.get("DYNOPT_TEST_DEVICE") or "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise pytest.UsageError(f"--device {name!r} is not a torch device: {err}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"--device {name}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        pytest.skip(f"--device {name}: the device tier covers cpu and cuda")
    return dev


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test (restored after): tiny tensors gain nothing from
    threads and stall on OpenMP wake-ups when the 2-core machine is loaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
