"""The training loop: any set of branches, any objective, on Accelerate. Read top to bottom.

    mmvicreg train examples/quickstart.yaml train.max_steps=100
    accelerate launch -m mmvicreg train CONFIG.yaml            # several GPUs or nodes

``train.batch_size`` is the *global* batch, split evenly over processes (as published); variance and covariance
use the global batch through the objective's gather, so two processes follow one process's trajectory.
The parts are built in ``setup.py``, one step is ``step.py``, checkpoints ``checkpoint.py``, files ``rundir.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate.utils import gather_object

from mmvicreg.config import RunConfig
from mmvicreg.train.callbacks import Callback
from mmvicreg.train.cluster import elastic_note
from mmvicreg.train.checkpoint import checkpoint_step, latest_checkpoint, save_checkpoint
from mmvicreg.train.preempt import Preempted, StopRequest, requeue
from mmvicreg.train.remote import mirror_of
from mmvicreg.train.rundir import RunDir, flat, log_record
from mmvicreg.train.setup import Run, setup, tracker_init
from mmvicreg.train.speed import report_graph_breaks
from mmvicreg.train.step import NonFiniteGuard, nonfinite_error, optimisation_step, weights_finite


def train(
    config: RunConfig, *, objective: torch.nn.Module | None = None, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    """Train, checkpoint, export and evaluate as ``config`` says. Returns the final evaluation (may be empty).

    ``objective`` replaces the one ``config.loss`` names; ``callbacks`` are told of checkpoints (see Callback).
    SIGTERM, SIGINT or SIGUSR1 during the loop stop the run after the step in progress and its checkpoint:
    :class:`~mmvicreg.train.preempt.Preempted` is raised (the command line exits with 75).
    """
    # ---- the parts: accelerator, data, model, objective, optimiser, loader; resumed when asked
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        run = setup(config, objective)  # holds the run folder's lock until the run ends
        try:
            with StopRequest() as stop:  # a stop signal ends the run after its step's checkpoint (preempt.py)
                return train_run(run, callbacks, stop)
        finally:
            if run.lock is not None:
                run.lock.release()
    finally:  # train.deterministic is the run's setting, not the caller's process's
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def train_run(run: Run, callbacks: Sequence[Callback], stop: StopRequest | None = None) -> dict[str, Any]:
    """The loop of :func:`train` over parts already built; ``stop`` is asked after every step."""
    config = run.config
    accelerator, state, t = run.accelerator, run.state, config.train
    rundir = RunDir(run.output_dir, accelerator.is_main_process,
                    gather_object if accelerator.num_processes > 1 else None)
    sources = {"train": run.train_source, "eval": run.eval_source}
    if elastic_note() is not None:
        accelerator.print(elastic_note())
    rundir.start(config, state.step, sources, accelerator.print)
    if t.trackers:
        accelerator.init_trackers(t.project, config=flat(config.to_dict()), init_kwargs=tracker_init(config))
    guard = NonFiniteGuard(t.on_nonfinite, t.max_consecutive_skips, run.output_dir, accelerator.print)

    from tqdm.auto import tqdm

    show = t.progress and accelerator.is_main_process
    bar = tqdm(total=run.total_steps, initial=state.step, disable=not show, unit="step")
    last_rankme: dict[str, float] = {}
    window_start, window_samples = time.perf_counter(), 0
    last_eval: dict[str, Any] = {}

    # ---- the loop: epochs of global batches; the sampler skips the batches a resumed epoch already consumed
    step = report_graph_breaks(optimisation_step, accelerator.print) if t.compile else optimisation_step
    run.model.train()
    while state.step < run.total_steps:
        run.sampler.set_epoch(state.epoch, start=state.batch)
        for batch in run.loader:
            stepped = step(run, batch, guard)
            state.batch += 1
            if stepped is None:  # a non-finite batch, skipped under train.on_nonfinite=skip
                state.skipped_nonfinite += 1
                continue
            state.step += 1
            window_samples += t.batch_size
            bar.update(1)

            if state.step % t.log_every == 0 or state.step == run.total_steps:
                record = log_record(run, stepped.out, stepped.zs, last_rankme)
                record["samples_per_s"] = window_samples / max(1e-9, time.perf_counter() - window_start)
                window_start, window_samples = time.perf_counter(), 0
                bar.set_postfix(loss=f"{record['loss']:.3f}", samples_s=f"{record['samples_per_s']:.0f}")
                rundir.log(record)
                accelerator.log(record, step=state.step)
            if state.step % t.checkpoint_every == 0:
                if not weights_finite(run.model):  # never let a checkpoint replace good weights with broken ones
                    raise nonfinite_error(state.step, "the weights after the optimiser step", run.output_dir)
                checkpoint(run, callbacks)
            if stop is not None and stop.agreed(accelerator):  # every process, after the same step
                bar.close()
                preempt(run, callbacks, stop.signal_name or "a stop signal on another process")
            if t.eval_every and run.eval_source is not None and state.step % t.eval_every == 0:
                last_eval = evaluate(run, rundir)
                run.model.train()
            if state.step >= run.total_steps:
                break
        else:
            state.epoch, state.batch = state.epoch + 1, 0
    bar.close()

    # ---- the end: a checkpoint of the last step, the exported model, plots, the final evaluation
    latest = latest_checkpoint(run.output_dir)
    if latest is None or checkpoint_step(latest) != state.step:
        checkpoint(run, callbacks)
    final_eval = last_eval if last_eval.get("step") == state.step else None
    rundir.finish(run.unwrapped, sources, config, final_eval)
    if run.eval_source is not None and final_eval is None:
        last_eval = evaluate(run, rundir)
        rundir.write_card(run.unwrapped, config, last_eval)
    mirror = mirror_of(config)
    if mirror is not None and accelerator.is_main_process:  # train.sync_to: the export and the records
        mirror.upload_run(run.output_dir, with_export=True)
    accelerator.end_training()
    return last_eval


def checkpoint(run: Run, callbacks: Sequence[Callback]) -> Path:
    """The checkpoint of the current step (mirrored to ``train.sync_to``, with the run's records)."""
    step = run.state.step
    for cb in callbacks:
        cb.on_checkpoint_start(step)
    mirror = mirror_of(run.config) if run.accelerator.is_main_process else None
    path = save_checkpoint(run.accelerator, run.output_dir, step, run.config.train.keep_checkpoints,
                           config=run.config.to_dict(), mirror=mirror)
    if mirror is not None:
        mirror.upload_run(run.output_dir, with_export=False)
    for cb in callbacks:
        cb.on_checkpoint_end(step, path)
    return path


def preempt(run: Run, callbacks: Sequence[Callback], signal_name: str) -> None:
    """Stop on a signal: the checkpoint of this step (unless written already), ``train.requeue``, then raise
    :class:`Preempted` on every process."""
    step = run.state.step
    latest = latest_checkpoint(run.output_dir)
    if latest is None or checkpoint_step(latest) != step:
        if not weights_finite(run.model):
            raise nonfinite_error(step, "the weights after the optimiser step", run.output_dir)
        latest = checkpoint(run, callbacks)
    run.accelerator.print(f"stopped on {signal_name} after step {step}: checkpoint {latest}")
    if run.config.train.requeue and run.accelerator.is_main_process:
        requeue(run.accelerator.print)
    run.accelerator.end_training()
    raise Preempted(signal_name, step, latest)


def evaluate(run: Run, rundir: RunDir) -> dict[str, Any]:
    """Retrieval on a captioned eval source, k-NN on a labelled one (main process); written to ``eval.json``.

    On ``eval.device`` when it names another device than training's (a copy of the model goes there), with
    ``eval.workers`` decoding (default: ``data.workers``; on the device with ``eval.decode_on``, default
    ``data.decode_on``) under ``eval.precision``.
    """
    import copy
    import dataclasses

    from mmvicreg.devices import resolve_device
    from mmvicreg.evaluation import evaluate as evaluate_model

    result: dict[str, Any] = {}
    settings = run.config.eval
    if settings.workers is None:
        settings = dataclasses.replace(settings, workers=run.config.data.workers)
    if settings.decode_on is None:
        settings = dataclasses.replace(settings, decode_on=run.config.data.decode_on)
    if run.accelerator.is_main_process:
        model = run.unwrapped
        device, current = resolve_device(settings.device or run.accelerator.device), run.accelerator.device
        if (device.type, device.index or 0) != (current.type, current.index or 0):
            model = copy.deepcopy(model).to(device)
        result, text = evaluate_model(model, run.eval_source, reference=run.reference_source, settings=settings)
        run.accelerator.print(text)
        result["step"] = run.state.step
        rundir.write_eval(result)
    run.accelerator.wait_for_everyone()
    return result
