"""Configs: every key checked before work starts, with the nearest valid key; overrides; format switching."""

import pytest
import yaml

from mmvicreg.cli import main
from mmvicreg.config import ConfigError, load_config, parse_override
from mmvicreg.data.build import format_options
from tests.helpers.configs import tiny_config


def _load(tree, overrides=()):
    return load_config(tree, list(overrides), format_keys=format_options)


def test_tiny_config_loads_and_overrides_apply(tmp_path):
    cfg = _load(tiny_config(tmp_path), ["train.batch_size=8", "loss.variance_weight=10", "train.optimizer.lr=1e-4"])
    assert cfg.train.batch_size == 8 and cfg.loss.variance_weight == 10.0 and cfg.train.optimizer.lr == 1e-4


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("train.batch_sze=8", "unknown config key 'train.batch_sze' (did you mean 'train.batch_size'?)"),
        ("trian.seed=1", "unknown config key 'trian' (did you mean 'train'?)"),
        ("train.batch_size=abc", "train.batch_size must be int, got str 'abc'"),
        ("train.batch_size=1", "train.batch_size is 1; VICReg's variance and covariance need at least 2"),
        ("loss.pairs=[[image, text]]", "loss.pairs names branch 'text', which is not a branch"),
        ("train.mixed_precision=fp8", "train.mixed_precision is 'fp8' (did you mean 'fp16'?); choose one of no, bf16, fp16"),
        ("data.train.formt=csv", "unknown config key 'data.train.formt' for format 'shapes' (did you mean 'data.train.format'?)"),
        ("data.train.format=parquet", "data.train.format is 'parquet'; known formats"),
        ("branches.image.variance_weight=high", "branches.image.variance_weight must be a number"),
        ("train.max_steps", "must look like dotted.key=value"),
    ],
)
def test_bad_config_one_clear_message(tmp_path, override, fragment):
    with pytest.raises(ConfigError) as info:
        _load(tiny_config(tmp_path), [override])
    assert fragment in str(info.value)


def test_switching_format_drops_keys_of_the_old_format(tmp_path):
    tree = tiny_config(tmp_path)
    tree["data"]["train"] = {"format": "csv", "captions": "captions.csv", "images": "images", "num_images": 3}
    cfg = _load(tree, ["data.train.format=shapes", "data.train.size=16"])
    assert cfg.data.train == {"format": "shapes", "size": 16, "num_images": 3}
    with pytest.raises(ConfigError, match="for format 'csv'"):  # without the switch, a shapes key is an error
        _load(tree, ["data.train.size=16"])


def test_an_unquoted_no_is_the_word_for_a_text_key(tmp_path):
    """YAML 1.1 reads `no` as false: ``train.mixed_precision=no`` (and ``mixed_precision: no``) mean the choice."""
    assert _load(tiny_config(tmp_path), ["train.mixed_precision=no"]).train.mixed_precision == "no"
    tree = yaml.safe_load(yaml.safe_dump(tiny_config(tmp_path)) + "resume: false\n")
    tree["train"]["mixed_precision"] = yaml.safe_load("no")
    assert _load(tree).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.batch_size must be int, got bool False"):
        _load(tiny_config(tmp_path), ["train.batch_size=no"])


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("x=null") == ("x", None)


def test_cli_reports_one_line_and_exit_code_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "run")))
    assert main(["train", str(path), "train.batch_sze=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmvicreg: error: unknown config key 'train.batch_sze'") and "\n" not in err
    assert not (tmp_path / "run").exists()  # stopped before any work


def test_cli_missing_data_path_stops_before_training(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    tree = tiny_config(tmp_path / "run")
    tree["data"]["train"] = {"format": "csv", "captions": str(tmp_path / "nope.csv"), "images": str(tmp_path)}
    path.write_text(yaml.safe_dump(tree))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nope.csv" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file" in capsys.readouterr().err
