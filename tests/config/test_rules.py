"""Each rule in one place: a section refuses a bad value when it is made (from YAML or from Python), the sub-spec
parsers are the only parsers, and the rules that need runtime facts are one function called at load and at launch."""

import pytest
from torchvision.transforms import InterpolationMode

from mmvicreg.choices import INTERPOLATIONS, OBJECTIVE_CLASSES, TRANSFORMS, VICREG_VIEWS
from mmvicreg.config import (
    ConfigError,
    EncoderSpec,
    ExpanderSpec,
    LossConfig,
    RunConfig,
    TrainConfig,
    TransformConfig,
    check_batch_split,
    parse_branches,
    parse_expander,
    view_number,
)
from mmvicreg.model import Expander


@pytest.mark.parametrize("make, fragment", [
    (lambda: LossConfig(name="vicrge"), "loss.name is 'vicrge' (did you mean 'vicreg'?); choose one of vicreg"),
    (lambda: LossConfig(covariance="svd"), "loss.covariance is 'svd'; choose one of auto, dense, gram"),
    (lambda: LossConfig(ablation="none"), "loss.ablation is 'none'"),
    (lambda: LossConfig(name="infonce", ablation="invariance"), "applies to the vicreg objective only"),
    (lambda: LossConfig(pairs=[["a"]]), "loss.pairs entries must be two branch names"),
    (lambda: LossConfig(name="infonce", temperature=0.0), "loss.temperature must be positive"),
    (lambda: TrainConfig(trackers=["tensorbored"]), "train.trackers names 'tensorbored'; known trackers:"),
    (lambda: TrainConfig(tracker_init={"wandb": {}}), "train.tracker_init has options for 'wandb'"),
    (lambda: TrainConfig(batch_size=128, micro_batch_size=48), "does not divide train.batch_size 128"),
    (lambda: TrainConfig(mixed_precision="fp8"), "train.mixed_precision is 'fp8' (did you mean 'fp16'?)"),
    (lambda: TrainConfig(sync_to="nosuchproto://b/x"), "train.sync_to 'nosuchproto://b/x': Protocol not known"),
    (lambda: TrainConfig(dist_timeout=0.0), "train.dist_timeout must be positive, got 0.0"),
    (lambda: RunConfig(output_dir="s3://b/x"), "output_dir 's3://b/x' is a URL; output_dir is a local folder"),
])
def test_a_section_refuses_a_bad_value_when_it_is_made(make, fragment):
    with pytest.raises(ConfigError) as info:
        make()
    assert fragment in str(info.value)


def test_loss_names_are_the_registry_keys():
    assert all(LossConfig(name=name).name == name for name in OBJECTIVE_CLASSES)


def test_the_batch_split_is_one_rule_for_one_process_and_many():
    check_batch_split(TrainConfig(batch_size=8, micro_batch_size=4), 2)
    with pytest.raises(ConfigError, match=r"train.batch_size 6 must be divisible by the number of processes \(4\)"):
        check_batch_split(TrainConfig(batch_size=6), 4)
    with pytest.raises(ConfigError, match="train.batch_size 4 over 4 processes leaves < 2 samples per process"):
        check_batch_split(TrainConfig(batch_size=4), 4)
    with pytest.raises(ConfigError, match="each process's share of the batch, 4"):
        check_batch_split(TrainConfig(batch_size=8, micro_batch_size=8), 2)


def test_the_expander_parser_is_the_one_the_expander_uses():
    assert parse_expander("8192-8192-8192") == (8192, 8192, 8192) and parse_expander(256) == (256,)
    assert parse_expander("none") == parse_expander("") == parse_expander(None) == ()
    spec = ExpanderSpec.parse("64-32", "branches.a.expander")
    assert spec.widths == (64, 32) and spec.to_config() == "64-32" and parse_expander(spec) == (64, 32)
    assert Expander(16, spec).spec == Expander(16, "64-32").spec == Expander(16, (64, 32)).spec == "64-32"
    with pytest.raises(ConfigError, match="branches.a.expander is '64--32', a bad expander spec"):
        ExpanderSpec.parse("64--32", "branches.a.expander")
    with pytest.raises(ValueError, match="bad expander spec '0-8'"):
        Expander(16, "0-8")


def test_transform_keys_and_the_view_number_have_one_home():
    assert tuple(m.value for m in InterpolationMode) == INTERPOLATIONS  # torchvision's list, written once here
    assert [view_number(t) for t in TRANSFORMS] == [1, 2, None, None] and set(VICREG_VIEWS) <= set(TRANSFORMS)
    spec = TransformConfig.parse({"size": 32, "mean": [0, 0.5, 1]}, "branches.a.transform")
    weights = {"size": 64, "std": (0.5, 0.5, 0.5), "interpolation": "bilinear"}
    resolved = spec.resolve(weights)
    assert resolved["size"] == 32 and resolved["mean"] == [0.0, 0.5, 1.0] and resolved["std"] == [0.5, 0.5, 0.5]
    assert resolved["interpolation"] == "bilinear" and resolved["crop_pct"] == 0.875 and resolved["train"] == "vicreg_view1"
    with pytest.raises(ConfigError, match="interpolation is 'cubic'"):  # what the weights say is checked alike
        spec.resolve({"interpolation": "cubic"})


def test_branches_given_in_python_are_parsed_and_checked_once():
    parsed = parse_branches({"a": {"encoder": "test_resnet", "expander": "16"}, "b": {"shares": "a"}})
    assert parsed["a"].encoder == EncoderSpec("test_resnet", {}, bare=True)
    assert parsed["a"].encoder.traits["modality"] == "image" and parse_branches(parsed) == parsed
    with pytest.raises(ConfigError, match=r"branches \['a', 'b'\] share each other in a cycle"):
        parse_branches({"a": {"shares": "b"}, "b": {"shares": "a"}})
    with pytest.raises(ConfigError, match="branch 'a' needs an `encoder`"):
        parse_branches({"a": {"expander": "16"}})


def test_an_encoder_spec_names_its_key():
    with pytest.raises(ConfigError, match="branches.x.encoder must be a name"):
        EncoderSpec.parse(["resnet50"], "branches.x.encoder")
    spec = EncoderSpec.parse({"name": "gru", "hidden_dim": 8}, "branches.x.encoder")
    assert spec.as_dict() == {"name": "gru", "hidden_dim": 8} and spec.traits["learns_vocabulary"] is True
