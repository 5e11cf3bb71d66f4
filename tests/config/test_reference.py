"""The config is discoverable: docs/CONFIG.md is generated from the schema and fails here when it drifts; every
key has its line of meaning; ``--print-config`` round-trips; mistakes get one line naming the right form; the
quick answers import no torch."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmvicreg.cli import main
from mmvicreg.cli.config_reference import config_reference
from mmvicreg.config import load_config
from mmvicreg.config.keys import DATA_FORMAT_KEYS, DATA_KEY_HELP, KEY_CHOICES, KEY_HELP
from mmvicreg.config.reference import flag_hint, schema_keys
from mmvicreg.data.build import format_options

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"


def test_config_md_is_up_to_date():
    written = (REPO / "docs" / "CONFIG.md").read_text()
    assert written == config_reference(), (
        "docs/CONFIG.md is out of date: python -m mmvicreg.cli.config_reference > docs/CONFIG.md")


def test_every_schema_key_has_a_line_and_every_line_a_key():
    keys = {k.key for k in schema_keys()}
    assert keys - set(KEY_HELP) == set(), "schema keys without a line in mmvicreg.config.keys.KEY_HELP"
    assert set(KEY_HELP) - keys == set(), "KEY_HELP lines for keys the schema does not have"
    assert {k for k in KEY_CHOICES if not k.startswith("data.*.")} <= keys


@pytest.mark.parametrize("fmt", list(DATA_FORMAT_KEYS))
def test_declared_format_keys_are_the_builders(fmt):
    assert set(DATA_FORMAT_KEYS[fmt]) == format_options(fmt)
    assert all(DATA_KEY_HELP.get(k) for k in DATA_FORMAT_KEYS[fmt])


@pytest.mark.parametrize("overrides", [[], ["train.max_steps=7", "loss.gamma=0.5", "train.mixed_precision=bf16"]])
def test_print_config_round_trips(tmp_path, capsys, overrides):
    assert main(["train", str(QUICKSTART), *overrides, "--print-config"]) == 0
    printed = capsys.readouterr().out
    tree = yaml.safe_load(printed)
    assert tree["train"]["warmup_epochs"] == 0.0 and tree["eval"]["index_kind"] == "exact"  # defaults filled in
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    assert load_config(saved) == load_config(QUICKSTART, overrides)


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_flag_that_is_a_config_key_names_the_override(capsys):
    err = _error(capsys, ["train", str(QUICKSTART), "--max-steps", "100"])
    assert "train.max_steps=100" in err
    err = _error(capsys, ["train", "--config", str(QUICKSTART)])
    assert "the config file is the first argument" in err and "mmvicreg train CONFIG.yaml" in err
    assert "train.batch_size=64 or eval.batch_size=64" in flag_hint("--batch-size=64")
    assert flag_hint("--zqxj-wvk") is None


def test_a_misspelt_key_is_suggested_with_its_section(capsys):
    err = _error(capsys, ["train", str(QUICKSTART), "train.max_step=100"])
    assert "unknown config key 'train.max_step' (did you mean 'train.max_steps'?)" in err


def test_names_match_in_any_case_and_near_ones_are_suggested(capsys):
    config = load_config(QUICKSTART, ["loss.name=VICReg", "train.mixed_precision=BF16", "eval.protocol=1K"])
    assert (config.loss.name, config.train.mixed_precision, config.eval.protocol) == ("vicreg", "bf16", "1k")
    err = _error(capsys, ["train", str(QUICKSTART), "loss.name=VICRge"])
    assert "loss.name is 'VICRge' (did you mean 'vicreg'?)" in err


QUICK = """
import sys
from mmvicreg.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
heavy = sorted(m for m in ("torch", "numpy", "cv2", "transformers", "timm", "open_clip") if m in sys.modules)
print("HEAVY", heavy, rc)
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"], ["eval", "retrieval", "--help"],
                                  ["train", str(QUICKSTART), "train.max_step=1"],
                                  ["train", str(QUICKSTART), "--max-steps", "1"]])
def test_quick_answers_import_no_torch(argv):
    out = subprocess.run([sys.executable, "-c", QUICK, *argv], capture_output=True, text=True, cwd=REPO).stdout
    assert out.strip().splitlines()[-1].startswith("HEAVY []"), out


def test_a_renamed_key_is_refused_by_name(capsys):
    err = _error(capsys, ["train", str(QUICKSTART), "eval.index=flat"])
    assert "config key 'eval.index' is now 'eval.index_kind'" in err
    assert load_config(QUICKSTART, ["eval.index_kind=flat"]).eval.index_kind == "flat"


def test_the_section_is_shown_not_compared(capsys):
    """A shared section must not make every key of it look close: `train.foo` suggests no `train.cpu`."""
    err = _error(capsys, ["train", str(QUICKSTART), "train.foo=1"])
    assert "did you mean" not in err and "valid keys:" in err
    err = _error(capsys, ["train", str(QUICKSTART), "data.train.num_imgs=3"])
    assert "(did you mean 'data.train.num_images'?)" in err


def test_the_version_is_written_once(capsys):
    import importlib.metadata

    from mmvicreg.version import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"mmvicreg {__version__}" == f"mmvicreg {importlib.metadata.version('mmvicreg')}"
