"""mmvicreg: train any set of encoders with VICReg and evaluate what they learned."""

from mmvicreg.data.encoding import encode
from mmvicreg.model import Branch, JointEmbedding
from mmvicreg.objective import (
    VICRegLoss,
    VICRegOutput,
    covariance_term,
    invariance_term,
    variance_term,
    vicreg_loss,
)

__version__ = "0.1.0"

__all__ = [
    "Branch",
    "JointEmbedding",
    "VICRegLoss",
    "VICRegOutput",
    "covariance_term",
    "encode",
    "invariance_term",
    "variance_term",
    "vicreg_loss",
]
