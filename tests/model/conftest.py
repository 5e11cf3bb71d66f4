"""Fixtures of the model tests."""

import pytest
from tests.helpers.models import CAPTIONS

from mmvicreg import JointEmbedding

SMALL = "64-32"


@pytest.fixture(scope="module")
def image_text():
    """A small image–text model: test_resnet + GRU, 64-32 expanders."""
    return JointEmbedding.from_config(
        {
            "image": {"encoder": "test_resnet", "expander": SMALL, "transform": {"size": 32}},
            "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 16}, "expander": SMALL},
        },
        captions=CAPTIONS,
    )
