"""The expander: the published layout from a width spec, and clear errors for a bad spec."""

import pytest

from mmvicreg.model import Expander, parse_expander_spec


def test_expander_published_layout():
    e = Expander(2048, "8192-8192-8192")
    kinds = [type(m).__name__ for m in e]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert e[-1].bias is None and e[0].in_features == 2048 and e.output_dim == 8192
    assert len(Expander(32, "none")) == 0 and Expander(32, "").output_dim == 32
    assert parse_expander_spec("64") == [64]


@pytest.mark.parametrize("spec", ["8192-abc", "8192--8192", "-1", "0-8"])
def test_bad_expander_spec(spec):
    with pytest.raises(ValueError, match="bad expander spec"):
        Expander(16, spec)
