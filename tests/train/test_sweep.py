"""``mmvicreg sweep``: grid and Optuna searches over ordinary runs, resumable, with a table and a plot.

Most tests replace the trial process by a stand-in that writes ``eval.json`` from the trial's overrides (the
sweep's bookkeeping is what they test); one runs real trials of the quickstart through the command line.
"""

import json
from pathlib import Path

import pytest

from mmvicreg.cli import main
from mmvicreg.train.sweep import Search, Sweep, grid_trials, metric_of, parse_grid, parse_ranges

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


class Interrupted(Exception):
    """Stands for a kill in the middle of a sweep."""


class FakeTrials:
    """Runs no training: ``eval.json`` gets ``rsum = 100 * loss.gamma + train.lr`` of the trial's overrides."""

    def __init__(self, die_after: int | None = None) -> None:
        self.calls: list[dict[str, float]] = []
        self.die_after = die_after

    def __call__(self, cmd: list[str], log: Path) -> int:
        if self.die_after is not None and len(self.calls) == self.die_after:
            raise Interrupted
        keys = dict(arg.split("=", 1) for arg in cmd if "=" in arg)
        values = {k: float(v) for k, v in keys.items() if k in ("loss.gamma", "train.lr")}
        self.calls.append(values)
        out = Path(keys["output_dir"])
        (out / "eval.json").write_text(json.dumps({"rsum": 100 * values.get("loss.gamma", 0) + values.get(
            "train.lr", 0), "i2t": {"r1": 1.0}, "step": 50}))
        return 0


def test_grid_and_ranges_parse_as_yaml_values_with_clear_errors():
    assert parse_grid(["loss.gamma=0.5,1", "branches.image.expander=64-64,none"]) == {
        "loss.gamma": [0.5, 1], "branches.image.expander": ["64-64", "none"]}
    assert grid_trials({"a": [1, 2], "b": ["x", "y"]}) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"},
                                                           {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert parse_ranges(["train.lr=1e-4:1e-2:log", "train.batch_size=16:64"]) == {
        "train.lr": [1e-4, 1e-2, True], "train.batch_size": [16, 64, False]}
    with pytest.raises(ValueError, match="must look like dotted.key=v1,v2"):
        parse_grid(["loss.gamma"])
    with pytest.raises(ValueError, match="low and high must be numbers with low < high"):
        parse_ranges(["train.lr=1:0.1"])
    with pytest.raises(ValueError, match="dotted.key=low:high:log"):
        parse_ranges(["train.lr=1:2:ln"])
    with pytest.raises(KeyError, match="eval.json has no 'rsun'; it has i2t.r1, rsum"):
        metric_of({"rsum": 1.0, "i2t": {"r1": 2.0}}, "rsun")


def test_a_killed_grid_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    search = Search(grid=parse_grid(["loss.gamma=0.5,1", "train.lr=0.1,0.2"]))
    first = FakeTrials(die_after=2)
    with pytest.raises(Interrupted):
        Sweep(tmp_path, QUICKSTART, search, overrides=["train.max_steps=50"], runner=first).run()
    assert len(first.calls) == 2
    again = FakeTrials()
    rows = Sweep(tmp_path, QUICKSTART, search, overrides=["train.max_steps=50"], runner=again).run()
    assert again.calls == [{"loss.gamma": 1.0, "train.lr": 0.1}, {"loss.gamma": 1.0, "train.lr": 0.2}]
    assert sorted(r["rsum"] for r in rows) == pytest.approx([50.1, 50.2, 100.1, 100.2])
    table = (tmp_path / "sweep.md").read_text().splitlines()
    assert table[0] == "| trial | loss.gamma | train.lr | rsum | step | samples_per_s |"
    assert table[2].startswith("| 3 | 1 | 0.2 | 100.2")
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 5 and (tmp_path / "sweep.png").stat().st_size > 0


def test_a_sweep_folder_refuses_another_sweep(tmp_path):
    Sweep(tmp_path, QUICKSTART, Search(grid={"loss.gamma": [1]}), runner=FakeTrials()).run()
    with pytest.raises(ValueError, match="holds another sweep"):
        Sweep(tmp_path, QUICKSTART, Search(grid={"loss.gamma": [2]}), runner=FakeTrials())


def test_a_killed_optuna_sweep_finishes_its_trials_and_asks_the_interrupted_values_again(tmp_path):
    pytest.importorskip("optuna")
    search = Search(ranges=parse_ranges(["loss.gamma=0.5:1.5", "train.lr=0.01:1:log"]), trials=4)
    first = FakeTrials(die_after=2)
    with pytest.raises(Interrupted):
        Sweep(tmp_path, QUICKSTART, search, runner=first).run()
    again = FakeTrials()
    rows = Sweep(tmp_path, QUICKSTART, search, runner=again).run()
    finished = [r for r in rows if r["rsum"] is not None]
    assert len(first.calls) == 2 and len(again.calls) == 2 and len(finished) == 4
    assert all(0.5 <= r["loss.gamma"] <= 1.5 and 0.01 <= r["train.lr"] <= 1 for r in finished)
    assert (tmp_path / "sweep.png").exists() and (tmp_path / "optuna.db").exists()


def test_sweep_command_runs_real_trials_and_a_failing_trial_is_named(tmp_path, capsys):
    """Two real 4-step quickstart runs through the command line; then a grid value the config refuses."""
    args = ["sweep", str(QUICKSTART), "train.max_steps=4", "train.batch_size=32", "eval.protocol=1k",
            "--grid", "loss.gamma=0.5,1", "--out", str(tmp_path / "s")]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| trial | loss.gamma | rsum | step | samples_per_s |" in table and table.count("| 4 |") == 2
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir()) == ["trial_000", "trial_001"]
    bad = ["sweep", str(QUICKSTART), "train.max_steps=4", "--grid", "loss.gama=1", "--out", str(tmp_path / "b")]
    assert main(bad) == 2
    assert "trial 0 ({'loss.gama': 1}) failed (exit 2); see" in capsys.readouterr().err


def test_tied_keys_take_one_value_in_each_trial(tmp_path):
    seen = []

    def runner(cmd, log):
        seen.append([a for a in cmd if a.startswith("branches.")])
        (Path(dict(a.split("=", 1) for a in cmd if "=" in a)["output_dir"]) / "eval.json").write_text('{"rsum": 1}')
        return 0

    grid = parse_grid(["branches.image.expander+branches.caption.expander=64-64,128"])
    Sweep(tmp_path, QUICKSTART, Search(grid=grid), runner=runner).run()
    assert seen == [["branches.image.expander=64-64", "branches.caption.expander=64-64"],
                    ["branches.image.expander=128", "branches.caption.expander=128"]]
