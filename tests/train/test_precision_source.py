"""``train.mixed_precision`` left out means what Accelerate was told (``accelerate launch --mixed_precision``, its
env or config file); set in the YAML, it wins. The precision used is what the run's config.yaml records."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.helpers.configs import tiny_config


PROBE = """
import sys
from mmvicreg.config import load_config
from mmvicreg.train.setup import make_accelerator
config = load_config(sys.argv[1])
accelerator = make_accelerator(config)
print(accelerator.mixed_precision, config.train.mixed_precision)
"""


@pytest.mark.parametrize("yaml_value, env, used", [(None, "bf16", "bf16"), ("no", "bf16", "no"), (None, None, "no")])
def test_accelerate_decides_unless_the_yaml_says(tmp_path, yaml_value, env, used):
    tree = tiny_config(tmp_path / "run")
    if yaml_value is not None:
        tree["train"]["mixed_precision"] = yaml_value
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tree))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    if env is not None:
        environ["ACCELERATE_MIXED_PRECISION"] = env
    # Accelerate's state is one per process: each case runs in its own
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "c.yaml")], capture_output=True, text=True,
                          env=environ, timeout=300)
    assert done.stdout.split() == [used, used], done.stderr[-2000:]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_accelerate_launch_flag_trains_in_bf16(tmp_path):
    tree = tiny_config(tmp_path / "run", max_steps=2)
    tree["data"].pop("eval")
    assert "mixed_precision" not in tree["train"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tree))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    launch = [shutil.which("accelerate"), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
              "--dynamo_backend", "no", "--mixed_precision", "bf16", "-m", "mmvicreg", "train", str(tmp_path / "c.yaml")]
    done = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["mixed_precision"] == "bf16"
