"""Several processes and nodes: a rank lost under torchrun's restarts, two nodes on localhost, a preempted group,
an unreachable rendezvous. The torchrun runs take a minute or more on two cores: marked ``slow``; they are also
what ``python benchmarks/cluster.py`` runs and records in benchmarks/RESULTS.md."""

import os
import random
import subprocess
import sys

import pytest

from tests.helpers import cluster
from tests.helpers.cluster import ENV, identical, max_gap, write_config

STEPS, EVERY = 16, 4


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return cluster.two_processes(tmp_path_factory.mktemp("two"), STEPS, EVERY)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_rank_killed_under_torchrun_restarts_resumes_and_ends_bit_identical(tmp_path, two):
    seed = int(os.environ.get("MMVICREG_FAULT_SEED", random.randrange(10**6)))
    got = cluster.lost_rank(tmp_path, STEPS, EVERY, kill_at=random.Random(seed).randint(EVERY + 1, STEPS - 3))
    assert len(got["resumed"]) == 1, (seed, got["resumed"])  # one restart, from the last checkpoint
    assert identical(got["weights"], two["weights"]), f"seed {seed}: killed after step {got['killed_after_step']}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_nodes_of_one_process_equal_two_processes_on_one_node(tmp_path, two):
    got = cluster.two_nodes(tmp_path, STEPS, EVERY)
    assert max_gap(got["weights"], two["weights"]) <= 1e-6


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_preempted_torchrun_group_stops_together_and_resumes_bit_identical(tmp_path, two):
    got = cluster.preempted_group(tmp_path, STEPS, EVERY, stop_at=5)
    assert got["checkpoints"] == [f"step_{got['stopped_after_step']:08d}"]
    assert got["log"].count("(exit code 75)") == 2  # both processes
    assert identical(got["weights"], two["weights"])


@pytest.mark.timeout(120)
def test_an_unreachable_rendezvous_is_one_line(tmp_path):
    cfg = write_config(tmp_path / "run.yaml", tmp_path / "run", max_steps=2)
    env = {**ENV, "RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(cluster.free_port())}
    proc = subprocess.run([sys.executable, "-m", "mmvicreg", "train", str(cfg), "train.dist_timeout=1"], env=env,
                          capture_output=True, text=True, timeout=110)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]  # torch's C++ logger prints its retries above it
    assert last.startswith(f"mmvicreg: error: could not reach the rendezvous at 127.0.0.1:{env['MASTER_PORT']} as "
                           f"rank 1 of 2 (DistNetworkError: ")
    assert last.endswith("(train.dist_timeout sets how long to wait)")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_run_names_the_fix_when_torchrun_may_restart_over_a_shared_store(monkeypatch):
    from mmvicreg.config import TrainConfig
    from mmvicreg.train.cluster import elastic_note, process_group_kwargs

    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    assert "launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in elastic_note()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # what that variable makes torchrun set
    assert elastic_note() is None
    assert process_group_kwargs(TrainConfig()) == []
    (handler,) = process_group_kwargs(TrainConfig(dist_timeout=90))
    assert handler.to_kwargs() == {"timeout": __import__("datetime").timedelta(seconds=90)}
