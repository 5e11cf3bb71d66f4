"""Stopping when the cluster asks: SIGTERM, SIGINT or SIGUSR1 end the run after one more checkpoint.

A scheduler that preempts a job (SLURM's ``--signal=USR1@90``, a spot instance's SIGTERM, Ctrl-C) sends a signal
some time before it kills the job. While the training loop runs, :class:`StopRequest` turns each of
:data:`STOP_SIGNALS` into a request: the step in progress finishes, every process agrees on the stop (one
all-reduce per step, Accelerate's ``set_trigger`` / ``check_trigger``, so a signal that reached one process stops
all of them after the same step), one checkpoint of that step is written, and :func:`mmvicreg.train.train` raises
:class:`Preempted`; the command line exits with :data:`PREEMPTED_EXIT_CODE` (75, ``EX_TEMPFAIL``: "try again").
A further signal while the checkpoint is written is reported and otherwise ignored (only SIGKILL stops the save,
and a save cut short never replaces the last complete checkpoint). ``resume=true`` continues at the step after.

DataLoader workers forked while the handlers are installed inherit them and ignore SIGUSR1 and SIGINT (their parent
decides), so SLURM's ``--signal=USR1@N``, sent to every process of the job, does not kill the workers under a
running step. SIGTERM is different: PyTorch installs its own SIGTERM handler in every worker, which kills the worker
unless its parent sent the signal; a SIGTERM sent to a whole process group with ``data.workers > 0`` fails the run
(its last periodic checkpoint intact) instead of stopping it.

With ``train.requeue: true`` the main process then runs ``scontrol requeue $SLURM_JOB_ID`` — only when
``SLURM_JOB_ID`` is set; elsewhere it says that nothing was requeued.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

PREEMPTED_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, the job may be run again
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preempted(Exception):
    """The run stopped on a signal after writing the checkpoint of ``step`` at ``checkpoint``; resume=true
    continues it. ``exit_code`` is what the command line exits with."""

    exit_code = PREEMPTED_EXIT_CODE

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(
            f"stopped on {signal_name} after step {step}; its checkpoint is {checkpoint}: rerun with resume=true to "
            f"continue at step {step + 1} (exit code {PREEMPTED_EXIT_CODE})"
        )


class StopRequest:
    """The stop signals' handlers, installed while the loop runs (``with StopRequest():``) and restored after,
    except after a stop: then they stay (a further signal prints a line and is otherwise ignored), so that a
    repeated signal cannot cut the exit short; :func:`ignore_stop_signals` makes that last to the process's end.

    ``signal_name`` is the first signal received by this process (None: none). Installed only from the main
    thread (Python delivers signals there); elsewhere it is inert.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.signal_name is not None:  # stopping: a repeated signal must not turn exit code 75 into a kill
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: its parent decides
            return
        name = signal.Signals(signum).name
        if self.signal_name is None:
            self.signal_name = name
            line = f"mmvicreg: {name} received: stopping after this step, once its checkpoint is written\n"
        else:
            line = f"mmvicreg: {name} received again: already stopping; the checkpoint is being written\n"
        os.write(2, line.encode())

    def agreed(self, accelerator: Any) -> bool:
        """Whether any process was asked to stop (collective: every process calls it after every step; one
        all-reduce of a flag, nothing on one process)."""
        if accelerator.num_processes == 1:
            return self.signal_name is not None
        if self.signal_name is not None:
            accelerator.set_trigger()
        return bool(accelerator.check_trigger())


def ignore_stop_signals() -> None:
    """Ignore :data:`STOP_SIGNALS` from now on (the command line's exit after a stop: Python's own shutdown would
    otherwise restore the default action, and a late signal would turn exit code 75 into a kill)."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def requeue(say: Callable[[str], None]) -> bool:
    """``scontrol requeue $SLURM_JOB_ID`` when ``SLURM_JOB_ID`` is set; True when scontrol accepted it.

    Outside SLURM, or when ``scontrol`` is missing or fails, one line says so (the run has stopped cleanly
    either way: resubmit it with resume=true).
    """
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        say("train.requeue: SLURM_JOB_ID is not set (not a SLURM job); nothing was requeued")
        return False
    if shutil.which("scontrol") is None:
        say(f"train.requeue: scontrol is not on PATH; job {job} was not requeued: resubmit it with resume=true")
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        say(f"train.requeue: scontrol requeue {job} failed ({type(e).__name__}: {e}); resubmit with resume=true")
        return False
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        say(f"train.requeue: scontrol requeue {job} failed (exit {done.returncode}: {why[0] if why else ''}); "
            f"resubmit it with resume=true")
        return False
    say(f"train.requeue: job {job} requeued (scontrol requeue {job})")
    return True
