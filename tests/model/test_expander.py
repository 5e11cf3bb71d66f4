"""The expander: the published layout from a width spec, and clear errors for a bad spec."""

import pytest
import torch

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


@pytest.mark.parametrize("norm, kind", [("batch", torch.nn.BatchNorm1d), ("layer", torch.nn.LayerNorm), ("none", None)])
def test_expander_norm_chooses_the_hidden_normalisation(norm, kind):
    e = Expander(16, "32-32-8", norm=norm)
    norms = [m for m in e if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm))]
    assert len(norms) == (0 if kind is None else 2) and all(isinstance(m, kind) for m in norms)
    x = torch.randn(6, 16)
    alone, together = e.train()(x[:2]), e.train()(x)[:2]  # batch-independent unless BatchNorm
    assert torch.allclose(alone, together, atol=1e-6) == (norm != "batch")


def test_expander_norm_is_a_branch_option_that_survives_save_and_load(tmp_path):
    from mmvicreg import JointEmbedding

    m = JointEmbedding.from_config({"a": {"encoder": "test_resnet", "expander": "32-8", "expander_norm": "layer",
                                          "transform": {"size": 16}},
                                    "b": {"shares": "a", "expander_norm": "none"}})
    assert m.branch("a").expander.norm == "layer" and m.branch("b").expander.norm == "none"
    assert m.branch("b").expander.spec == "32-8" and m.branch("b").expander is not m.branch("a").expander
    m.save_pretrained(tmp_path / "m")
    loaded = JointEmbedding.from_pretrained(tmp_path / "m")
    assert [loaded.branch(n).expander.norm for n in "ab"] == ["layer", "none"]
    with pytest.raises(ValueError, match=r"expander_norm is 'group'.*choose one of batch, layer, none"):
        JointEmbedding.from_config({"a": {"encoder": "test_resnet", "expander_norm": "group"}})
