"""Fixtures shared by the data tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Per-image ops on tiny tensors: extra threads only add contention on a shared CPU (workers use one, too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
