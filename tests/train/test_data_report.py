"""The run's data_report.json counts every image left out, in every DataLoader worker and every process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.data.test_worker_skips import corrupt  # noqa: F401  (the fixture: 12 JPEGs, 5 corrupt, 1 missing)
from tests.helpers.configs import tiny_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
ENV.pop("MMVICREG_DEBUG", None)


def _tree(run, folder, workers):
    tree = tiny_config(run, max_steps=6, checkpoint_every=6, batch_size=4)
    tree["data"] = {"workers": workers, "eval": None,
                    "train": {"format": "csv", "captions": str(folder / "captions.csv"),
                              "images": str(folder / "images"), "on_bad_image": "skip"}}
    return tree


def _train(tmp_path, name, tree, processes=1):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    launch = ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port=29561"] if processes > 1 else []
    proc = subprocess.run([sys.executable, *launch, "-m", "mmvicreg", "train", str(path)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / name / "data_report.json").read_text())["train"]


@pytest.mark.timeout(900)
def test_the_report_is_the_same_with_workers_and_processes(corrupt, tmp_path):  # noqa: F811
    reports = {(w, p): _train(tmp_path, f"w{w}p{p}", _tree(tmp_path / f"w{w}p{p}", corrupt, w), p)
               for w, p in ((0, 1), (2, 1), (1, 2))}
    alone = reports[(0, 1)]
    assert alone["skipped_images"] == 6  # 5 corrupt met in 6 steps of 4 over 12 images + 1 missing
    assert alone["skipped_image_reasons"]["missing"] == 1
    for key, report in reports.items():
        assert report["skipped_images"] == alone["skipped_images"], key
        assert report["skipped_image_reasons"] == alone["skipped_image_reasons"], key
        assert sorted(map(tuple, report["skipped_while_loading"])) == sorted(map(tuple, alone["skipped_while_loading"]))
