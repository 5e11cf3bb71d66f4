import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These inputs are tiny: with the cores shared, intra-op threads only spin-wait (100x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
