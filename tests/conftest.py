from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent (looked in {SHARED_DATA}); these tests need the real Flickr8k/COCO subsets")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Per-image ops and tiny models: extra threads only add contention on a shared CPU (loader workers use one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
