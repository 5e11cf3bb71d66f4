"""The model: branches (encoder + expander + raw field + preprocessing) and the joint-embedding model over them.

``expander`` (the MLP after the encoder), ``branch`` (one branch, and building branches from config sections),
``joint`` (:class:`JointEmbedding`: build, forward, encode) and ``io`` (save/load as safetensors + JSON).
"""

from mmvicreg.model.branch import Branch
from mmvicreg.model.expander import Expander, parse_expander_spec
from mmvicreg.model.joint import JointEmbedding

__all__ = ["Branch", "Expander", "JointEmbedding", "parse_expander_spec"]
