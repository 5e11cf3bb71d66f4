"""The run configuration: one typed spec, parsed once, every rule checked when it loads.

Five modules, imported one way (``keys``, ``specs`` <- ``schema`` <- ``checks`` <- ``load``; none imports a package
above the config):

* :mod:`~mmvicreg.config.keys`: each key's one line of meaning and allowed values, each data format's options;
* :mod:`~mmvicreg.config.specs`: a branch's sub-specs as typed values, each with its parser
  (:class:`EncoderSpec`, :class:`ExpanderSpec` / :func:`parse_expander`, :class:`TransformConfig`);
* :mod:`~mmvicreg.config.schema`: the sections (:class:`RunConfig`, :class:`BranchConfig`, :class:`LossConfig`,
  ...), each checking its own rules when it is made; :func:`check_batch_split`;
* :mod:`~mmvicreg.config.checks`: the rules across sections and branches (:func:`check_config`);
* :mod:`~mmvicreg.config.load`: YAML + overrides -> :class:`RunConfig` (:func:`load_config`), and
  :func:`parse_branches` for branches given in Python as mappings.
"""

from mmvicreg.config.checks import check_branches, check_config
from mmvicreg.config.load import (
    config_yaml,
    dump_config,
    load_config,
    parse_branch,
    parse_branches,
    parse_override,
    validate,
)
from mmvicreg.config.schema import (
    BRANCH_LOSS_KEYS,
    BRANCH_MODEL_KEYS,
    BRANCH_TRAINING_KEYS,
    BranchConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    OptimizerConfig,
    RunConfig,
    TrainConfig,
    check_batch_split,
    divisor_near,
)
from mmvicreg.config.specs import (
    ConfigError,
    EncoderSpec,
    ExpanderSpec,
    TransformConfig,
    parse_expander,
    register_encoder_check,
    view_number,
)

__all__ = [
    "BRANCH_LOSS_KEYS",
    "BRANCH_MODEL_KEYS",
    "BRANCH_TRAINING_KEYS",
    "BranchConfig",
    "ConfigError",
    "DataConfig",
    "EncoderSpec",
    "EvalConfig",
    "ExpanderSpec",
    "LossConfig",
    "OptimizerConfig",
    "RunConfig",
    "TrainConfig",
    "TransformConfig",
    "check_batch_split",
    "check_branches",
    "check_config",
    "config_yaml",
    "divisor_near",
    "dump_config",
    "load_config",
    "parse_branch",
    "parse_branches",
    "parse_expander",
    "parse_override",
    "register_encoder_check",
    "validate",
    "view_number",
]
