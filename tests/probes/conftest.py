"""Fixtures of the probe tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread for these tiny fits: on a loaded 2-core machine torch's thread pool made the
    estimator checks (test_estimator_checks.py) take 73 s instead of 5 s (restored after each module)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
