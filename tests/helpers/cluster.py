"""Runs of ``mmvicreg train`` in subprocesses — one process, torchrun, two "nodes" on localhost — to be signalled,
killed and compared weight for weight. Used by tests/train/test_preemption.py, test_remote.py, test_cluster.py and
benchmarks/cluster.py (CPU, one thread per process, gloo)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from tests.helpers.configs import tiny_config

# TORCH_DISABLE_SHARE_RDZV_TCP_STORE: a restarted torchrun group gets a fresh store (README, "On a cluster").
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
ENV.pop("MMVICREG_DEBUG", None)


def write_config(path: Path, run: Path, **train: Any) -> Path:
    """The tiny towers (tests/helpers/configs.py) without the held-out evaluation, as a YAML file."""
    cfg = tiny_config(run, **train)
    cfg["data"]["eval"] = None
    path.write_text(yaml.safe_dump(cfg))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *, port: int | None = None, max_restarts: int = 0, nnodes: int = 1,
             node_rank: int = 0, rdzv_id: str = "mmvicreg-test") -> list[str]:
    """A torchrun command line: one node (``--standalone`` rendezvous on a free port) or ``nnodes`` nodes meeting
    through the c10d rendezvous at ``localhost:port``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           f"--max-restarts={max_restarts}", "--monitor-interval=0.2"]
    if nnodes == 1:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port or free_port()}", "--nnodes=1"]
    else:
        cmd += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint=localhost:{port}", f"--rdzv-id={rdzv_id}"]
    return cmd


def launch(config: Path, overrides: Sequence[str] = (), launcher: Sequence[str] = (), log: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    """``[launcher] python -m mmvicreg train CONFIG OVERRIDES`` in the background (output to ``log``)."""
    cmd = [*launcher] if launcher else [sys.executable]
    cmd += ["-m", "mmvicreg", "train", str(config), *overrides]
    out = open(log or config.with_suffix(".log"), "ab")
    return subprocess.Popen(cmd, env={**ENV, **(env or {})}, cwd=config.parent, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            pass
    return out


def wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 300.0) -> int:
    """Block until metrics.jsonl shows ``step`` (returns the last step logged); fails when the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = records(run)
        if got and got[-1]["step"] >= step:
            return got[-1]["step"]
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before step {step}")
        time.sleep(0.005)
    stop(proc)
    raise AssertionError(f"no step {step} within {timeout}s")


def finish(proc: subprocess.Popen, timeout: float = 600.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL the process group this helper started (the launcher and its workers), by its own id."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def workers(launcher_pid: int) -> dict[int, int]:
    """``{RANK: pid}`` of the Python processes under a torchrun agent (read from /proc)."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent != launcher_pid:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        env = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)
        if "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "model" / "model.safetensors")


def max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest |a - b| over every tensor (0.0: bit for bit the same values)."""
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------- scenarios
# Each returns a dict of what it measured; ``root`` is a fresh folder; the runs are the tiny towers on gloo.


def two_processes(root: Path, steps: int, every: int) -> dict[str, Any]:
    """The reference: 2 processes on one node (torchrun), never interrupted."""
    cfg = write_config(root / "two.yaml", root / "two", max_steps=steps, checkpoint_every=every)
    code = finish(launch(cfg, launcher=torchrun(2)))
    assert code == 0, (root / "two.log").read_text()[-3000:]
    return {"run": root / "two", "weights": weights(root / "two")}


def lost_rank(root: Path, steps: int, every: int, kill_at: int) -> dict[str, Any]:
    """2 processes under ``torchrun --max-restarts 1``; rank 1 SIGKILLed once step ``kill_at`` is logged."""
    run = root / "elastic"
    cfg = write_config(root / "elastic.yaml", run, max_steps=steps, checkpoint_every=every)
    proc = launch(cfg, ["resume=true"], launcher=torchrun(2, max_restarts=1))
    seen = wait_for_step(proc, run, kill_at)
    ranks = workers(proc.pid)
    assert set(ranks) == {0, 1}, ranks
    os.kill(ranks[1], signal.SIGKILL)
    code = finish(proc)
    log = (root / "elastic.log").read_text()
    assert code == 0, log[-4000:]
    resumed = [line for line in log.splitlines() if line.startswith("resumed from")]
    return {"run": run, "weights": weights(run), "killed_after_step": seen, "resumed": resumed, "log": log}


def two_nodes(root: Path, steps: int, every: int) -> dict[str, Any]:
    """2 nodes x 1 process: two torchrun invocations meeting at a c10d rendezvous on localhost."""
    run, port = root / "nodes", free_port()
    cfg = write_config(root / "nodes.yaml", run, max_steps=steps, checkpoint_every=every)
    procs = [launch(cfg, launcher=torchrun(1, nnodes=2, node_rank=rank, port=port), log=root / f"node{rank}.log")
             for rank in (0, 1)]
    codes = [finish(p) for p in procs]
    assert codes == [0, 0], [(root / f"node{r}.log").read_text()[-3000:] for r in (0, 1)]
    return {"run": run, "weights": weights(run)}


def preempted_group(root: Path, steps: int, every: int, stop_at: int) -> dict[str, Any]:
    """2 processes under torchrun (``--signals-to-handle`` with SIGUSR1); the agent gets SIGUSR1 once step
    ``stop_at`` is logged and forwards it; then the run is launched again with resume=true."""
    run = root / "preempted"
    cfg = write_config(root / "preempted.yaml", run, max_steps=steps, checkpoint_every=1000)
    launcher = [*torchrun(2), "--signals-to-handle=SIGTERM,SIGINT,SIGUSR1", "--shutdown-timeout=120"]
    proc = launch(cfg, ["resume=true"], launcher=launcher)
    wait_for_step(proc, run, stop_at)
    proc.send_signal(signal.SIGUSR1)
    first = finish(proc)
    stopped = records(run)[-1]["step"]
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    log = (root / "preempted.log").read_text()
    second = finish(launch(cfg, ["resume=true"], launcher=torchrun(2)))
    assert second == 0, (root / "preempted.log").read_text()[-4000:]
    return {"run": run, "weights": weights(run), "stopped_after_step": stopped, "checkpoints": checkpoints,
            "launcher_exit": first, "log": log}
