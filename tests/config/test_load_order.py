"""A mistake in any branch sub-section is refused when the config loads, naming its dotted key, before any data
is read or any network is built; Python callers get the same parser and the same messages."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mmvicreg.train.setup as train_setup
from mmvicreg.cli import main
from mmvicreg.config import ConfigError, load_config
from mmvicreg.data.build import format_options
from mmvicreg.model import JointEmbedding
from tests.helpers.configs import tiny_config

REPO = Path(__file__).resolve().parents[2]


def _image(tree, **changes):
    tree["branches"]["image"].update(changes)


MISTAKES = [
    (lambda t: _image(t, expander="1024-x"),
     "branches.image.expander is '1024-x', a bad expander spec: 'x' is not a positive width"),
    (lambda t: _image(t, transform={"sise": 224}),
     "branches.image.transform.sise: unknown transform key 'sise' (did you mean 'size'?)"),
    (lambda t: _image(t, transform={"interpolation": "bicubik"}),
     "branches.image.transform.interpolation is 'bicubik' (did you mean 'bicubic'?)"),
    (lambda t: _image(t, transform={"train": "light", "augment_on": "device"}),
     "branches.image.transform.augment_on: device moves the colour half"),
    (lambda t: _image(t, encoder={"name": "resnet50", "bogus_option": 1}),
     "unknown config key 'branches.image.encoder.bogus_option' for encoder 'resnet50'; it takes "),
    (lambda t: _image(t, encoder={"name": "resnet50", "drop_rat": 0.1}),
     "unknown config key 'branches.image.encoder.drop_rat' for encoder 'resnet50' (did you mean 'branches.image.encoder.drop_rate'?)"),
    (lambda t: t["branches"]["caption"]["encoder"].update(hiden_dim=3),
     "unknown config key 'branches.caption.encoder.hiden_dim' for encoder 'gru' (did you mean 'branches.caption.encoder.hidden_dim'?)"),
    (lambda t: t["branches"]["caption"].update(encoder={"name": "hf", "path": "/models/bert"}),
     "unknown config key 'branches.caption.encoder.path' for encoder 'hf'; hf option `path` is now `pretrained`"),
    (lambda t: _image(t, encoder={"name": "resnet9999"}), "branches.image.encoder.name: unknown encoder 'resnet9999'"),
    (lambda t: _image(t, expander_norm="batchnorm"), "branches.image.expander_norm is 'batchnorm'"),
    (lambda t: t["branches"]["caption"].update(gradient_checkpointing=True),
     "branches.caption.gradient_checkpointing: encoder 'gru' has no gradient checkpointing switch"),
    (lambda t: t["branches"].update(view={"shares": "imgae"}), "branch 'view' shares 'imgae', which is not a branch"),
    (lambda t: t["train"].update(trackers=["tensorbored"]), "train.trackers names 'tensorbored'; known trackers:"),
    (lambda t: t["loss"].update(name="barlow", ablation="invariance") if "loss" in t else t.update(
        loss={"name": "barlow", "ablation": "invariance"}), "loss.ablation='invariance' applies to the vicreg"),
]


def _unopenable_data(tmp_path):
    """A tiny config whose data would fail to open (a missing caption file): reaching it shows in the message."""
    tree = tiny_config(tmp_path / "run")
    tree["data"]["train"] = {"format": "csv", "captions": str(tmp_path / "missing.csv"), "images": str(tmp_path)}
    return tree


@pytest.fixture
def nothing_is_built(monkeypatch):
    """Every step after the config fails the test if it runs: the Accelerator, the data, the network."""
    def reached(*args, **kwargs):
        raise AssertionError("a step after load_config ran")

    monkeypatch.setattr(train_setup, "make_accelerator", reached)
    monkeypatch.setattr(train_setup, "build_source", reached)
    monkeypatch.setattr(JointEmbedding, "from_config", classmethod(reached))


@pytest.mark.parametrize("change, fragment", MISTAKES)
def test_load_config_names_the_key_of_a_bad_sub_spec(tmp_path, change, fragment):
    tree = tiny_config(tmp_path)
    change(tree)
    with pytest.raises(ConfigError) as info:
        load_config(tree, [], format_keys=format_options)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("change, fragment", MISTAKES[:6])
def test_the_cli_stops_at_the_config_before_the_data_or_the_network(tmp_path, capsys, nothing_is_built, change,
                                                                      fragment):
    tree = _unopenable_data(tmp_path)
    change(tree)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "missing.csv" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_spies_are_on_the_path(tmp_path, nothing_is_built):
    """Control: without the mistake, the run reaches the steps the test above forbids."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_unopenable_data(tmp_path)))
    with pytest.raises(AssertionError, match="a step after load_config ran"):
        main(["train", str(path)])


def test_python_callers_get_the_same_parser_before_any_encoder_is_built(monkeypatch):
    import mmvicreg.model.branch as branch_module

    monkeypatch.setattr(branch_module, "build_encoder", lambda *a, **k: pytest.fail("an encoder was built"))
    for section, fragment in [
        ({"encoder": "test_resnet", "expander": "64-x"}, "branches.image.expander is '64-x'"),
        ({"encoder": "test_resnet", "transform": {"sise": 32}}, "branches.image.transform.sise: unknown transform"),
        ({"encoder": {"name": "test_resnet", "bogus": 1}}, "unknown config key 'branches.image.encoder.bogus'"),
    ]:
        with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
            JointEmbedding.from_config({"image": section})


def test_the_encoder_check_is_installed_by_importing_the_config_alone():
    """``mmvicreg.config`` imports no encoder code; importing it (``import mmvicreg`` first) installs the check."""
    code = ("import sys; from mmvicreg.config import EncoderSpec\n"
            "try:\n    EncoderSpec.parse({'name': 'gru', 'hiden_dim': 3}, 'x')\n"
            "except ValueError as e:\n    print(e); sys.exit(3)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 3, done.stderr
    assert "unknown config key 'x.hiden_dim' for encoder 'gru' (did you mean 'x.hidden_dim'?)" in done.stdout


def test_written_forms_are_saved_back_and_load_again(tmp_path):
    tree = tiny_config(tmp_path)
    tree["branches"]["image"]["expander"] = 32  # an int, as YAML reads `expander: 32`
    tree["branches"]["caption"] = {"encoder": "gru", "expander": "none", "transform": {"mean": [1, 1, 1]}}
    config = load_config(tree, [], format_keys=format_options)
    saved = config.to_dict()["branches"]
    assert saved["image"]["expander"] == 32 and saved["caption"]["encoder"] == "gru"
    assert saved["caption"]["expander"] == "none" and saved["caption"]["transform"] == {"mean": [1.0, 1.0, 1.0]}
    assert saved["image"]["encoder"] == tree["branches"]["image"]["encoder"]
    assert load_config(config.to_dict(), [], format_keys=format_options) == config
    assert config.branches["image"].expander.widths == (32,) and config.branches["caption"].expander.widths == ()
