"""The non-finite guard names whatever terms the objective returned, not a fixed list."""

from dataclasses import dataclass

import torch

from mmvicreg.objective import ObjectiveOutput
from mmvicreg.train.step import named_terms, nonfinite_terms

NAN, ONE = torch.tensor(float("nan")), torch.tensor(1.0)


def test_the_guard_reads_the_terms_an_objective_returns():
    out = ObjectiveOutput(NAN, ONE, ONE, ONE, {"image": {"variance": ONE, "covariance": NAN}},
                          {"my_term": NAN, "temperature": ONE})
    assert nonfinite_terms(out) == ["covariance/image = nan", "my_term = nan"]
    assert set(named_terms(out)) == {"loss", "invariance", "variance", "covariance", "variance/image",
                                     "covariance/image", "my_term", "temperature"}


def test_any_output_with_fields_works_and_the_loss_is_the_fallback():
    @dataclass
    class Aligned:
        loss: torch.Tensor
        alignment: torch.Tensor
        uniformity: torch.Tensor

    assert nonfinite_terms(Aligned(NAN, ONE, NAN)) == ["uniformity = nan"]
    assert nonfinite_terms(Aligned(NAN, ONE, ONE)) == ["loss = nan"]
